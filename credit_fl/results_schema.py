"""The schema of ``results.json``, in code: it checks every run's file and writes its docs page.

``python -m credit_fl.results_schema > docs/results-schema.md`` regenerates the page; a test
checks the page is up to date and that runs write files that follow the schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 3
"""1: until the privacy model (issue 16). 2: ``privacy.guarantee``, ``party_totals``, ledger
entries' ``history``, ``selection_delta``, ``unit`` and ``noise``; ``metrics.test.psi_reference``;
the training split's default rate null under DP; the membership audit's interval and strata.
3: ``privacy.neighbouring`` and each ledger entry's ``neighbouring`` (one relation, add/remove;
embedding noise's sensitivity is the clip, no longer twice it); ``privacy.epsilon`` is the largest
party total (``privacy.largest_party``; ``party_totals`` in horizontal runs too), no longer the
largest ledger entry. Issue 30 added ``outside_epsilon`` (what left outside any epsilon, by
party) and ``federation.alignment.<party>.asked``, keys a reader of version 3 may ignore."""


@dataclass(frozen=True)
class Key:
    """One key of results.json: its path, the JSON types it may take, what it means.

    ``types`` are JSON type names (``object``, ``array``, ``string``, ``number``, ``integer``,
    ``boolean``, ``null``); ``when`` says in which runs it is present (empty: every run).
    """

    path: str
    types: tuple[str, ...]
    meaning: str
    when: str = ""


KEYS: tuple[Key, ...] = (
    Key("schema_version", ("integer",), f"{SCHEMA_VERSION}"),
    Key("mode", ("string",), "`vertical`, `centralized`, `local` or `horizontal`"),
    Key("role", ("string",), "what the mode stands for (`upper bound: ...`, `baseline: ...`)"),
    Key("seed", ("integer",), "the run's seed: data, partitions and initialisation (never "
        "the split, which the deciding node's own key fixes unless "
        "`privacy.reproducible_noise`; never a privacy mechanism's noise)"),
    Key("dataset", ("object",), "`name`, `source` (`synthetic` or `files`), `label`; "
        "`rows.{train,val,test}` (applicants per split); `positive_rate.{train,val,test}` "
        "(default rate per split; `train` is null under DP); `parties.<party>` (`rows`: the "
        "rows it used, after its consent gate; `applicants_known`, `source_columns`, "
        "`model_columns`, `used`; horizontal: "
        "`train_rows`, `default_rate`, null under DP); `oracle_test_auc` (synthetic data in "
        "simulation: AUC of the true probabilities on the test rows; else null); vertical: "
        "`consent` (null without `data.consent`: all rows used; else `purpose`, `dpv` and "
        "`parties.<party>.{records, rows_held, rows_used, consented, withdrawn, no_record, "
        "purpose, dpv, recipient, file_sha256}`, `records: false` for a party without a "
        "consent file; in a deployment as the nodes sent them, `rows_held`, `withdrawn`, "
        "`no_record` and `file_sha256` null unless a node opted in with "
        "`--release-consent-counts`; "
        "docs/consent.md)"),
    Key("model", ("object",), "`kind`, `parameters` (count), `inputs` (columns per party), "
        "`model_id` (carried by every bundle of the trained model), `bundles` (party: bundle "
        "directory, relative to the run directory; each on its party's disk in a deployment)"),
    Key("metrics", ("object",), "computed from score summaries per split (the lenders' reports; "
        "the same in every mode and engine); `test` and `val`: `auc`, `ks`, `gini`, `brier`, "
        "`log_loss`, `ece`; test also `psi` (score stability against `psi_reference`: `train`, "
        "or `val` under DP); `best_epoch` (centralized, local, vertical); `history[]` (one row "
        "per epoch: `epoch`, `train_loss` (not under DP), `val_auc`, `val_log_loss` "
        "(centralized, local); or per round: `round`, "
        "`clients`, "
        "`train_loss` (not under DP), `pooled_auc`, `val_auc`, `epsilon`, `seconds`); "
        "`pooled_lender_auc` (horizontal: from the lenders' test score summaries); "
        "`party_lift.<party>` (vertical: test AUC minus the AUC with that party's embeddings "
        "replaced by the \"unknown applicant\" vector); `test.rare_label` where the test "
        "positive rate is under 5% (fraud): `average_precision`, `recall_at_fpr.{0.01,0.05}`, "
        "`caught_in_riskiest.{0.01,0.05}` (share of positives in the riskiest 1% and 5%), "
        "`positive_rate`"),
    Key("privacy", ("object", "null"), "null without differential privacy; else `mechanism`, "
        "`neighbouring` (the one relation every epsilon is accounted under: `add_remove`, one "
        "customer's record added or removed; see docs/privacy.md), "
        "`guarantee` (false with `privacy.reproducible_noise=true`: no guarantee), `epsilon` "
        "(the headline: the largest party total, `party_totals.<largest_party>.epsilon`, never "
        "one entry of a party that spends on several nor a mean; central DP: the larger entry, "
        "`server/record`) and `delta` (the largest of the party totals' deltas), "
        "`largest_party` (the party whose total is the headline; not with central DP), "
        "`parties.<entry>.{epsilon, "
        "delta, mechanism, noise_multiplier, sample_rate, steps, accountant, flip_probability, "
        "sensitivity, history, selection_delta, unit, noise, neighbouring}` (`sensitivity` is "
        "the relation's: C for embedding noise, C and 2C for central DP's client and record; "
        "vertical entries are "
        "`<party>/<mechanism>`; central DP has `server/client` and `server/record`; `history` "
        "is every `[noise_multiplier, sample_rate, steps]` stretch the epsilon composes, the "
        "noisy summary first, at `delta - selection_delta`; `unit` is `record`, `client` or "
        "`label`; `noise` is `os` or `reproducible`), `by_mechanism` (vertical: the maximum per "
        "mechanism), `party_totals.<party>.{epsilon, delta, mechanisms}` (every mode but central "
        "DP: all of a party's mechanisms composed, RDP over its Gaussian ones and label DP "
        "added; a party with one entry totals that entry), `history[]` (`round`, `party`, "
        "`epsilon`, `steps`; epsilon never decreases), `refusals[]`"),
    Key("outside_epsilon", ("array",), "every per-record release (and opted-in count) the run "
        "made outside any "
        "epsilon, one entry per party and release: `party`, `release` (`exact_embeddings`: a "
        "passive party's embeddings without noise, to the lender; `record_gradients`: the "
        "lender's per-record gradients, to each party; `membership`: which of the lender's IDs "
        "a node knows, charged to its query ledger; `intersection`: which of a party's "
        "customers the lender aligned, to that party; `rows_without_dp` and "
        "`update_before_central_dp`: what a capped node refuses; `consent_counts`: a party's "
        "held rows, withdrawals and customers without a consent record, when `dataset.consent` "
        "states them), `receiver`, `opt_in` (the "
        "node flag that lets it leave, or null). In a deployment a node sends an `opt_in` "
        "release only under its own flag (it refuses the run otherwise, and records the "
        "opt-in in its lifetime ledger); a simulation is not a node and opts into nothing "
        "(docs/privacy.md, docs/partner-guide.md)", when="vertical and horizontal runs"),
    Key("audit", ("object", "null"), "null with `audit.enabled=false` and in a deployment (the "
        "scores stay at the lender); else "
        "`membership.{attack, attack_auc, attack_auc_interval, attack_auc_by_label, "
        "stratified_by_label, target_fpr, confidence, members, non_members, calibration_rows, "
        "threshold, tpr_at_fpr.{0.001, 0.01}.{tpr, tpr_interval, fpr, false_positives, "
        "threshold} (the attack's TPR at 0.1% and 1% FPR, thresholds read from the measured "
        "non-members), tpr, fpr, tpr_lower, fpr_upper, epsilon_lower_bound, theoretical_epsilon "
        "(null: unbounded), theoretical_delta, theory, bound_holds}` and, vertical in "
        "simulation, `label_leakage.{label_protection, parties.<party>.{rows, norm_auc, "
        "direction_auc, attack_auc}}` and (`audit.inversion=true`) `inversion.<party>.{r2 "
        "(numeric column: held-out R^2 of a decoder from the final embeddings the lender "
        "received to the party's column; null for a column with one held-out value), mean_r2, "
        "known_share (the rows the attacker is assumed to know, which train the decoder), "
        "decoder, rows (held-out rows scored), known_rows}`; with `audit.canaries=m` "
        "`one_run.{epsilon_lower_bound, canaries, confidence, guesses, correct, tests, "
        "significance, delta, by_guesses[], accounted_epsilon (null: unbounded), bound_holds, "
        "party, mechanism, threat_model, ships_canaries (false: a twin of the lender's training "
        "held them), twin, label (under label DP: the same for the canaries' labels)}` (the "
        "one-run canary audit, docs/privacy-research.md); with `audit.reference_models=k` "
        "`rmia.{attack, target, attack_auc, attack_auc_interval (bootstrap), "
        "auc_interval_method, members, non_members, confidence, tpr_at_fpr.{0.001, 0.01} (as "
        "membership's, Clopper-Pearson), reference_models, reference_rows, reference_epochs, "
        "offline_a, gamma, population, threat_model, seconds}` (RMIA on the final model with "
        "reference models trained on a fresh sample from the synthetic generator). Computed "
        "from the training rows' scores and, for the inversion, the parties' columns: an "
        "evaluation tool, outside every guarantee"),
    Key("federation", ("object",), "vertical: `parties`, `epochs`, `exchanges_per_epoch`, "
        "`local_epochs`, `local_steps`, `message_rounds`, `stopped_after`, `resumed_from`, "
        "`alignment.<party>.{lender_rows, party_rows, intersection, setup_cached, asked}` "
        "(whether the party's blinded ID set came from its cache; `asked`: the lender's IDs "
        "it answered, charged to its query ledger), "
        "`communication.<party>.{messages_in, bytes_in, messages_out, bytes_out}`, "
        "`alignment_seconds`, `seconds_by_message`, `compute_seconds`, `warnings[]` "
        "(a party that knows under 5% of the applicants, with the shapes of the IDs), "
        "`blacklists` (null without `blacklists.holders`; else `mode`, `max_queries`, `on_hit`, "
        "`holders.<holder>.{list_size, asked, listed, max_queries, mode}`: counts the server "
        "routed, and each holder's own cap and mode as it reported them); "
        "horizontal: "
        "`strategy`, `clients`, `rounds`, `completed_rounds`, `stopped_after`, `local_epochs`, "
        "`partition`, `excluded[]` (`round`, `party`, `reason`, `refused`), "
        "`lender_evaluation.<lender>.{auc, test_rows}`, `resumed_from`; both: `engine` "
        "(`simulation` or `in_process`: the engine of a simulated run, `engine=...`; or "
        "`deployment` with `superlink`, `tls`, `node_auth`, "
        "`node_audit_logs.<party>`, `server_audit_log` and `refused_nodes[]`: a node that "
        "claimed a party pinned to another node, with `node_id`, `claimed`, `pinned_node`, "
        "`pinned_to`, `reason`)", when="vertical and horizontal runs"),
    Key("audit_logs", ("object", "null"), "where the audit logs stood when the run ended (their "
        "anchors, from the server's log): `server.{seq, head, key}` and `nodes.<party>.{seq, "
        "head, key}` (`head`: the last line's hash; `key`: the writer's Ed25519 public key, hex), "
        "`problems[]` (anchors that do not hang together: a party named by two nodes, a key "
        "that changed, a `seq` that went back); "
        "null for centralized and local runs. `credit-fl audit verify <log> --head H --key K` "
        "checks a log against its anchor"),
    Key("scorecard", ("object",), "score points and grades (`scorecard.*` in the config): "
        "`base_points`, `base_odds` (good:bad), `pdo`, `factor` (pdo / ln 2), `offset` "
        "(points = offset - factor * ln(odds of bad)), `test_grades[]` (`grade`, `min_points` "
        "(null: the last grade, below the others), `rows`, `share`, `defaulters`, "
        "`default_rate`), from the lender's test score summary"),
    Key("timing", ("object",), "`wall_s`, `data_s`, `train_s` (seconds), `train_rows_per_s`"),
    Key("versions", ("object",), "python, torch, flwr, opacus, numpy, pandas, scikit-learn, "
        "hydra-core"),
    Key("references", ("object",), "every simulated run: `logistic_regression` (scikit-learn, "
        "every column of the run's parties, pooled for the reference only: `role` says so) and "
        "`logistic_regression_lender` (the lender's columns), each `{auc, ks, brier, val_auc, C "
        "(picked on the validation rows), columns, inputs, seconds}` on the same rows and seed, "
        "trained without privacy (outside every guarantee); "
        "with `references=true` also `centralized`, `lender_only`, `non_private` (federated "
        "modes), each `{mode, auc, ks, brier}`", when="a simulation (a deployment has no rows)"),
    Key("config", ("object",), "the resolved config"),
)

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "number": (int, float),
    "integer": (int,), "boolean": (bool,), "null": (type(None),)}


def check_results(results: dict[str, Any]) -> list[str]:
    """Return what in ``results`` breaks the schema (empty when it follows it).

    >>> check_results({"schema_version": 1})[:2]
    ['schema_version is 1, not 3', 'mode is missing']
    """
    problems = []
    if results.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version is {results.get('schema_version')}, not "
                        f"{SCHEMA_VERSION}")
    known = {k.path for k in KEYS}
    for key in KEYS:
        if key.path not in results:
            if not key.when:
                problems.append(f"{key.path} is missing")
            continue
        value = results[key.path]
        allowed = tuple(t for name in key.types for t in _JSON_TYPES[name])
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            problems.append(f"{key.path} is {type(value).__name__}, not {' or '.join(key.types)}")
    problems += [f"{k} is not in the schema" for k in results if k not in known]
    return problems


def markdown() -> str:
    """Return the docs page of the schema."""
    lines = ["# results.json", "",
             "Generated from `credit_fl/results_schema.py` "
             "(`python -m credit_fl.results_schema > docs/results-schema.md`); "
             f"`schema_version` {SCHEMA_VERSION}. Every run's file is checked against it.", "",
             "| key | type | present | meaning |", "|---|---|---|---|"]
    for key in KEYS:
        lines.append(f"| `{key.path}` | {' or '.join(key.types)} | {key.when or 'always'} | "
                     f"{key.meaning} |")
    lines += ["", "Metrics come from each split's score summary (`models.metrics.ScoreSummary`: "
              "label counts and score sums in bins of at least 20 rows on a public grid of 200 "
              "log-odds cells, exact sums for the Brier score and log-loss, and the AUC, KS and "
              "ECE (10 equal-width bins) that the node computed on its own rows). A summary "
              "pooled from several lenders (horizontal) has no node figures: its AUC counts "
              "pairs within one bin as half (within 0.005 of the row-level AUC at 1,000 rows, "
              "0.001 at 100,000; docs/privacy.md, \"Score summaries\"), KS is taken at the bin "
              "edges and ECE groups bins by their mean score. PSI uses deciles of the reference "
              "scores, cut at cell edges.", ""]
    from credit_fl.monitor_schema import monitor_markdown

    lines += monitor_markdown()
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
