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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from credit_data.consent import SCORING
from credit_data.errors import ConfigError
from credit_data.settings import LABEL_HOLDER
from credit_fl.config import run_config
from credit_fl.consent_results import consent_lines, consent_summary
from credit_fl.engines import open_engine
from credit_fl.explanation_report import explanation_lines
from credit_fl.one_bundle_scoring import score_with_bundle
from federation.run_settings import MissingParty, RunSettings
from federation.settings import Mode
from fl_client.scoring_app import make_scoring_client_app
from fl_client.scoring_task import SCORES_FILE
from fl_client.settings import client_settings
from fl_client.simulation_sources import ScoringSimulationSource, list_table
from fl_client.simulation_sources import load_applicants as load_applicants
from fl_server.app_factory import make_scoring_server_app
from fl_server.scoring_rounds import ScoringOutcome, absent_parties, scoring_server_settings
from models.bundle import load_bundle

scoring_config = run_config
"""The run's config with the scoring overrides applied (:func:`credit_fl.config.run_config`)."""


def _vertical(settings: RunSettings, run_dir: Path, stage: Path, model: dict[str, Any],
              frames: Mapping[str, pd.DataFrame] | None = None, purpose: str = SCORING
              ) -> tuple[pd.DataFrame, dict[str, Any]]:
    # checked here first: errors before the engine starts
    population = load_applicants(settings, frames=frames)
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
    consent = consent_summary(settings.data, population, parties, purpose)  # a bad file too
    clients = {p: client_settings(settings, p, str(stage / "parties"))
               for p in [*bundles, *holders]}
    server = dataclasses.replace(scoring_server_settings(settings), n_nodes=len(clients))
    outcome = ScoringOutcome()
    with open_engine(settings.engine, settings.verbose) as engine:
        shared = (engine.share(population) if frames is not None or engine.same_process
                  else None)
        engine.run(make_scoring_server_app(server, outcome, stage),
                   make_scoring_client_app(ScoringSimulationSource(clients, settings, bundles,
                                                                   shared, purpose)),
                   len(clients))
    if outcome.error is not None:
        raise outcome.error
    scores = pd.read_csv(stage / "parties" / LABEL_HOLDER / SCORES_FILE,
                         dtype={"id": str}, keep_default_na=False)
    return scores, {
        "engine": settings.engine.value, "model_id": outcome.model_id,
        "parties": outcome.parties,
        "absent": outcome.absent, "alignment": outcome.alignment, "lender": outcome.lender,
        "blacklists": outcome.blacklists,
        "privacy": outcome.privacy, "explanation": outcome.explanation,
        "message_rounds": outcome.message_rounds,
        "seconds_by_message": outcome.seconds_by_kind, "seconds": outcome.seconds,
        "communication": outcome.communication,
        "consent": consent}


def score_bundles(run_dir: Path, settings: RunSettings, stage: Path,
                  frames: Mapping[str, pd.DataFrame] | None = None, purpose: str = SCORING
                  ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score with the bundles of ``run_dir``: the scores table and what scoring.json says.

    ``stage``: a directory of the scoring's own (the vertical nodes' state); ``frames``: the
    applicants as DataFrames, else the settings' data config; ``purpose``: what each vertical
    party's consent records must grant (``credit_scoring``, or ``monitoring``).
    """
    model = json.loads((run_dir / "results.json").read_text())["model"]
    if "bundles" not in model:
        raise ConfigError(f"{run_dir}: this run kept no model bundles (trained before bundles "
                          "existed); train it again")
    if settings.federation.mode is Mode.vertical:
        return _vertical(settings, run_dir, stage, model, frames, purpose)
    population = load_applicants(settings, frames=frames)
    return score_with_bundle(run_dir / model["bundles"]["model"], population, settings)


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
        lines += _grade_lines(scores, n)
        known = {c.removeprefix("known_"): int(scores[c].sum()) for c in scores.columns
                 if c.startswith("known_")}
    else:  # the scores stay at the lender
        lines += _counted_grade_lines(scoring, n)
        known = scoring["lender"]["known"]
    if known:
        lines += ["", "## Who knew the applicants", "", "| party | applicants known | share |",
                  "|---|---:|---:|"]
        for party, count in known.items():
            lines.append(f"| {party} | {count:,} | {count / n:.1%} |")
    lines += _blacklist_lines(scoring, scores)
    absent = scoring.get("absent") or []
    if absent:
        lines += ["", f"Absent from the scoring federation, scored as unknown to them: "
                  f"{', '.join(absent)}."]
    if scoring["mode"] == Mode.vertical.value and "consent" in scoring:  # scoring.json's counts
        lines += consent_lines(scoring["consent"])  # (credit_scoring; none: all rows used)
    lines += _unseen_lines(scoring)
    lines += _request_privacy_lines(scoring.get("privacy") or {})
    lines += explanation_lines(scoring, scores)  # issue 32: why, at every party
    return "\n".join(lines) + "\n"


def _grade_lines(scores: pd.DataFrame, n: int) -> list[str]:
    """Return the grades table from the row-level scores: counts, mean probability, points."""
    lines = ["| grade | applicants | share | mean probability | points from | points to |",
             "|---|---:|---:|---:|---:|---:|"]
    for grade, rows in scores.groupby("grade", sort=True):
        lines.append(f"| {grade} | {len(rows):,} | {len(rows) / n:.1%} | "
                     f"{rows['probability'].mean():.4f} | {rows['points'].min():.0f} | "
                     f"{rows['points'].max():.0f} |")
    return lines


def _counted_grade_lines(scoring: dict[str, Any], n: int) -> list[str]:
    """Return the grades table from the lender's counts, and where the scores stay."""
    lines = ["| grade | applicants | share |", "|---|---:|---:|"]
    for grade, count in scoring["lender"]["grades"].items():
        lines.append(f"| {grade} | {count:,} | {count / n:.1%} |")
    kept = scoring["lender_scores"]
    if isinstance(kept, dict):  # horizontal: each lender scored its own applicants
        lines += ["", "Each lender scored its own applicants; the scores stay there:", ""]
        lines += [f"- {lender}: {counts['rows']:,} applicants, `{kept[lender]}`"
                  for lender, counts in scoring.get("lenders", {}).items()]
    else:
        lines += ["", f"The scores stay at the lender: {kept}."]
    return lines


def _blacklist_lines(scoring: dict[str, Any], scores: pd.DataFrame | None) -> list[str]:
    """Return the blacklists' lookups and the decisions they led to (none: no lists)."""
    lists = scoring.get("blacklists") or {}
    if not lists:
        return []
    lines = ["", "## Shared blacklists", "", "| holder | applicants asked | listed |",
             "|---|---:|---:|"]
    lines += [f"| {h} | {v['asked']:,} | {v['listed']:,} |" for h, v in lists.items()]
    made = (scores["decision"].value_counts().to_dict() if scores is not None
            and "decision" in scores else scoring.get("lender", {}).get("decisions", {}))
    if made:
        lines += ["", "Decisions (`blacklists.on_hit`; `score`: the score decides): "
                  + ", ".join(f"{d} {n:,}" for d, n in sorted(made.items())) + "."]
    return lines


def _unseen_lines(scoring: dict[str, Any]) -> list[str]:
    """Return the categories each party met that training never saw (none: no line)."""
    unknown = {p: a.get("unknown_categories") for p, a in scoring.get("alignment", {}).items()}
    unknown |= {"lender": scoring.get("lender", {}).get("unknown_categories")}
    unknown |= scoring.get("unknown_categories") or {}  # a one-bundle model's, per party
    unseen = {p: u for p, u in unknown.items() if u}
    if not unseen:
        return []
    return ["", "Categories never seen in training (encoded as unknown): "
            + "; ".join(f"{p}: {u}" for p, u in unseen.items()) + "."]


def _request_privacy_lines(privacy: dict[str, Any]) -> list[str]:
    """Return what each party released for this request: outside any epsilon, or noised."""
    if not privacy:
        return []
    lines = ["", "## Privacy of this request", ""]
    for party, spent in privacy.items():
        if "outside_epsilon" in spent:  # exact embeddings: the node's opt-in
            lines.append(f"- {party}: released outside any epsilon: "
                         f"{', '.join(spent['outside_epsilon'])} (a deployed node only "
                         "with its own opt-in flag; docs/partner-guide.md)")
        if "epsilon_per_new_applicant" in spent:
            lines.append(f"- {party}: a fresh noisy release of {spent['released_rows']:,} "
                         f"embeddings; epsilon {spent['epsilon_per_new_applicant']:.3f} per "
                         f"new applicant, {spent['epsilon_per_training_customer']:.3f} in "
                         "all for a customer whose row was also released in training")
    return lines
