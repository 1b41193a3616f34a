"""Score applicants with a finished run's bundles: ``credit-fl score <run dir> [key=value ...]``.

The run's own config (``results.json``) is the starting point; only the data, the scoring
options, which parties come up and the PSI cache may change (``data=csv
data.parties.lender.path=new.csv``). A vertical model scores through the same Flower apps
as training, each party with its own bundle and rows; a centralized, local or horizontal model
is one bundle, scored where it is. The scoring directory (``scoring.out``, by default
``<run dir>/scoring/<date>_<time>``) gets ``scores.csv``, ``scoring.json`` and ``report.md``;
it is written whole at the end, or not at all.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from flwr.app import Context
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from credit_data.blacklists import holder_lists
from credit_data.errors import ConfigError, DataError
from credit_data.files import load_party
from credit_data.loading import load_population
from credit_data.settings import LABEL_HOLDER, Source
from credit_data.split import TEST, assign_split
from credit_data.tables import PartyTable, Population
from experiments.config import mutable_twin, register, to_settings
from experiments.local_scoring import score_with_bundle
from experiments.simulation import once_per_worker, quiet_worker, simulation_engine
from federation.run_settings import MissingParty, RunSettings, ScoringRows
from federation.settings import Mode
from federation.storage import write_atomic
from fl_client.scoring_app import make_scoring_client_app
from fl_client.scoring_task import SCORES_FILE, ScoringInput
from fl_client.settings import ClientSettings, client_settings
from fl_server.scoring_rounds import ScoringOutcome, absent_parties, scoring_server_settings
from fl_server.server_app import make_scoring_server_app
from models.bundle import load_bundle, read_manifest

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CHANGEABLE = ("data", "scoring", "federation.parties", "federation.psi_cache", "verbose",
              "federation.round_timeout", "federation.connect_timeout", "blacklists.on_hit",
              "blacklists.max_queries")
"""What may differ from the run's own config when scoring."""


def scoring_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """Return the run's config (results.json) with the scoring overrides applied and checked."""
    path = run_dir / "results.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no results.json there; give the directory of a finished "
                          "training run")
    try:
        base = json.loads(path.read_text())["config"]
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: not a run's results ({exc})") from exc
    groups = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0]]
    dotted = [o for o in overrides if o not in groups]
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"'{override}': expected key=value")
        key = override.split("=", 1)[0].lstrip("+~")
        if not any(key == c or key.startswith(c + ".") for c in CHANGEABLE):
            raise ConfigError(f"'{key}' cannot change at scoring: the model was trained with it; "
                              f"only {', '.join(CHANGEABLE)} may")
    base["resume"] = None  # a scoring request continues nothing
    if groups:  # data=csv and the like: compose the group as a run would
        register()
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
                composed = compose(config_name="config", overrides=groups + [
                    o for o in dotted if o.startswith("data.")])
        except HydraException as exc:  # an unknown group option, named by Hydra
            raise ConfigError(f"config: {exc}".replace("\n", " ")) from exc
        base["data"] = OmegaConf.to_container(composed.data, resolve=True)
    schema = OmegaConf.structured(mutable_twin(RunSettings))
    try:
        cfg = OmegaConf.merge(schema, base, OmegaConf.from_dotlist(dotted))
    except Exception as exc:  # omegaconf names the key and the expected type
        raise ConfigError(f"config: {exc}".replace("\n", " ")) from exc
    return typing.cast(DictConfig, cfg)


def _lender_rows(population: Population, settings: RunSettings) -> Population:
    """Return the applicants to score: all of the lender's rows, or the run's test split."""
    lender = population.tables[LABEL_HOLDER]
    if settings.scoring.rows is ScoringRows.all:
        return population
    tables = dict(population.tables)
    tables[LABEL_HOLDER] = lender.rows(
        assign_split(lender.frame.index, settings.seed, settings.data.split) == TEST)
    return Population(population.name, tables, population.truth)


def load_applicants(settings: RunSettings, party: str | None = None) -> Population:
    """Every party's current table (or ``party``'s alone), the lender's cut to the applicants.

    From CSV files a node reads only its own file; synthetic data is generated whole.
    """
    data = settings.data
    if party is not None and data.source is Source.files and party in data.parties:
        table = load_party(party, data.parties[party], data, labels=False)
        population = Population(data.name, {party: table})
        if party != LABEL_HOLDER:
            return population
    else:
        population = load_population(data, settings.seed, labels=False)
    lender = population.tables[LABEL_HOLDER]
    if lender.n_rows == 0:
        raise DataError(f"{lender.source}: no applicants to score")
    duplicated = lender.frame.index[lender.frame.index.duplicated()]
    if len(duplicated):
        raise DataError(f"{lender.source}: {len(duplicated)} duplicate applicant IDs, e.g. "
                        f"{list(duplicated[:3])}")
    return _lender_rows(population, settings)


def list_table(settings: RunSettings, holder: str) -> PartyTable:
    """Return a holder's list as a table of IDs without columns (its node's scoring input)."""
    data = settings.data
    population = (None if holder in data.blacklists
                  else load_population(data, settings.seed))
    the_list = holder_lists(settings.blacklists.holders, data.blacklists, data.id_column,
                            population, settings.seed)[holder]
    return PartyTable(holder, pd.DataFrame(index=pd.Index(the_list.ids, name=data.id_column)),
                      (), (), the_list.source)


class ScoringSimulationSource:
    """Hands each simulated node its settings, its bundle and its own table only."""

    def __init__(self, settings: dict[str, ClientSettings], run: RunSettings,
                 bundles: dict[str, Path]) -> None:
        self.settings, self.run, self.bundles = settings, run, bundles
        self.names = list(settings)
        self.key = f"scoring {run.data!r} {run.seed} {run.scoring!r} {time.time_ns()}"

    def __call__(self, context: Context) -> tuple[ClientSettings, ScoringInput]:
        quiet_worker()
        party = self.names[int(context.node_config["partition-id"])]
        if party in self.run.blacklists.holders:  # a holder's node holds its list only
            table = once_per_worker(f"{self.key}|{party}", lambda: list_table(self.run, party))
            return self.settings[party], ScoringInput(None, table)
        population = once_per_worker(f"{self.key}|{party}",
                                     lambda: load_applicants(self.run, party))
        return self.settings[party], ScoringInput(self.bundles[party], population.tables[party])


def _vertical(settings: RunSettings, run_dir: Path, stage: Path,
              model: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    population = load_applicants(settings)  # checked here first: errors before Ray starts
    parties = [p for p in settings.federation.parties if p in population.tables]
    bundles = {p: run_dir / model["bundles"][p] for p in parties if p in model["bundles"]}
    # what the nodes check again: named here before the engine starts (the simulation's
    # driver can read every party's disk)
    if LABEL_HOLDER not in bundles:
        raise ConfigError(f"federation.parties: scoring needs the lender, got {parties}")
    lender = load_bundle(bundles[LABEL_HOLDER], party=LABEL_HOLDER)
    for party, directory in bundles.items():
        load_bundle(directory, party=party, model_id=lender.model_id)
    holders = [h for h in lender.manifest.get("blacklists", [])
               if h in settings.blacklists.holders]
    absent = [p for p in [*lender.manifest["passive"], *lender.manifest.get("blacklists", [])]
              if p not in bundles and p not in holders]
    if absent and settings.scoring.missing_party is MissingParty.error:
        raise ConfigError(absent_parties(absent))
    for holder in holders:  # a bad list file is named before the engine starts
        list_table(settings, holder)
    clients = {p: client_settings(settings, p, str(stage / "parties"))
               for p in [*bundles, *holders]}
    server = dataclasses.replace(scoring_server_settings(settings), n_nodes=len(clients))
    outcome = ScoringOutcome()
    with simulation_engine(settings.verbose) as engine:
        engine.run(make_scoring_server_app(server, outcome, stage),
                   make_scoring_client_app(ScoringSimulationSource(clients, settings, bundles)),
                   len(clients))
    if outcome.error is not None:
        raise outcome.error
    scores = pd.read_csv(stage / "parties" / LABEL_HOLDER / SCORES_FILE,
                         dtype={"id": str}, keep_default_na=False)
    return scores, {
        "engine": "simulation", "model_id": outcome.model_id, "parties": outcome.parties,
        "absent": outcome.absent, "alignment": outcome.alignment, "lender": outcome.lender,
        "blacklists": outcome.blacklists,
        "privacy": outcome.privacy, "message_rounds": outcome.message_rounds,
        "seconds_by_message": outcome.seconds_by_kind, "seconds": outcome.seconds,
        "communication": outcome.communication}


def score_run(run_dir: Path, overrides: list[str]) -> tuple[Path, dict[str, Any]]:
    """Score with the bundles of ``run_dir``; return the scoring directory and scoring.json."""
    start = time.perf_counter()
    run_dir = run_dir.resolve()
    cfg = scoring_config(run_dir, overrides)
    settings = to_settings(cfg)
    model = json.loads((run_dir / "results.json").read_text())["model"]
    if "bundles" not in model:
        raise ConfigError(f"{run_dir}: this run kept no model bundles (trained before bundles "
                          "existed); train it again")
    out = Path(settings.scoring.out) if settings.scoring.out else (
        run_dir / "scoring" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    if out.exists():
        raise ConfigError(f"scoring.out={out} exists; name a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if settings.federation.mode is Mode.vertical:
            scores, summary = _vertical(settings, run_dir, stage, model)
        else:
            population = load_applicants(settings)
            scores, summary = score_with_bundle(run_dir / model["bundles"]["model"],
                                                population, settings)
        scoring = {
            "run": str(run_dir), "mode": settings.federation.mode.value,
            "rows": settings.scoring.rows.value, "applicants": len(scores),
            "data": {"name": settings.data.name, "source": settings.data.source.value},
            "bundles": _fingerprints(run_dir, model["bundles"]),
            **summary, "wall_seconds": time.perf_counter() - start}
        write_atomic(stage / "scores.csv", scores.to_csv(index=False, float_format="%.10g"))
        write_atomic(stage / "scoring.json", json.dumps(scoring, indent=2, default=str) + "\n")
        write_atomic(stage / "report.md", render_scoring(scoring, scores))
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out, scoring


def _fingerprints(run_dir: Path, bundles: dict[str, str]) -> dict[str, Any]:
    out = {}
    for party, relative in bundles.items():
        manifest = read_manifest(run_dir / relative)
        out[party] = {"directory": relative, "model_id": manifest["model_id"],
                      "files": manifest["files"]}
    return out


def render_scoring(scoring: dict[str, Any], scores: pd.DataFrame | None) -> str:
    """Render report.md of a scoring directory: what was scored, by grade, who knew whom.

    ``scores`` is None at a deployed coordinator, which has the lender's counts only.
    """
    n = scoring["applicants"]
    lines = [f"# Scoring with {scoring['run']}", "",
             f"{n:,} applicants ({scoring['rows']} rows), {scoring['mode']} model "
             f"{scoring['model_id']}, {scoring['engine']}, {scoring['wall_seconds']:.1f} s.",
             "", "## Grades", ""]
    if scores is not None:
        lines += ["| grade | applicants | share | mean probability | points from | points to |",
                  "|---|---:|---:|---:|---:|---:|"]
        for grade, rows in scores.groupby("grade", sort=True):
            lines.append(f"| {grade} | {len(rows):,} | {len(rows) / n:.1%} | "
                         f"{rows['probability'].mean():.4f} | {rows['points'].min():.0f} | "
                         f"{rows['points'].max():.0f} |")
        known = {c.removeprefix("known_"): int(scores[c].sum()) for c in scores.columns
                 if c.startswith("known_")}
    else:  # the scores stay at the lender
        lines += ["| grade | applicants | share |", "|---|---:|---:|"]
        for grade, count in scoring["lender"]["grades"].items():
            lines.append(f"| {grade} | {count:,} | {count / n:.1%} |")
        kept = scoring["lender_scores"]
        if isinstance(kept, dict):  # horizontal: each lender scored its own applicants
            lines += ["", "Each lender scored its own applicants; the scores stay there:", ""]
            lines += [f"- {lender}: {counts['rows']:,} applicants, `{kept[lender]}`"
                      for lender, counts in scoring.get("lenders", {}).items()]
        else:
            lines += ["", f"The scores stay at the lender: {kept}."]
        known = scoring["lender"]["known"]
    if known:
        lines += ["", "## Who knew the applicants", "", "| party | applicants known | share |",
                  "|---|---:|---:|"]
        for party, count in known.items():
            lines.append(f"| {party} | {count:,} | {count / n:.1%} |")
    lists = scoring.get("blacklists") or {}
    if lists:
        lines += ["", "## Shared blacklists", "", "| holder | applicants asked | listed |",
                  "|---|---:|---:|"]
        lines += [f"| {h} | {v['asked']:,} | {v['listed']:,} |" for h, v in lists.items()]
        made = (scores["decision"].value_counts().to_dict() if scores is not None
                and "decision" in scores else scoring.get("lender", {}).get("decisions", {}))
        if made:
            lines += ["", "Decisions (`blacklists.on_hit`; `score`: the score decides): "
                      + ", ".join(f"{d} {n:,}" for d, n in sorted(made.items())) + "."]
    absent = scoring.get("absent") or []
    if absent:
        lines += ["", f"Absent from the scoring federation, scored as unknown to them: "
                  f"{', '.join(absent)}."]
    unknown = {p: a.get("unknown_categories") for p, a in scoring.get("alignment", {}).items()}
    unknown |= {"lender": scoring.get("lender", {}).get("unknown_categories")}
    unknown |= scoring.get("unknown_categories") or {}  # a one-bundle model's, per party
    unseen = {p: u for p, u in unknown.items() if u}
    if unseen:
        lines += ["", "Categories never seen in training (encoded as unknown): "
                  + "; ".join(f"{p}: {u}" for p, u in unseen.items()) + "."]
    if scoring.get("privacy"):
        lines += ["", "## Privacy of this request", ""]
        for party, spent in scoring["privacy"].items():
            lines.append(f"- {party}: a fresh noisy release of {spent['released_rows']:,} "
                         f"embeddings; epsilon {spent['epsilon_per_new_applicant']:.3f} per new "
                         f"applicant, {spent['epsilon_per_training_customer']:.3f} in all for a "
                         "customer whose row was also released in training")
    return "\n".join(lines) + "\n"
