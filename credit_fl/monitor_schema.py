"""The keys of ``monitor.json`` (``credit-fl monitor``), for docs/results-schema.md.

>>> [k for k, _, _ in MONITOR_KEYS][:3]
['run', 'model_id', 'period']
"""

from __future__ import annotations

__all__ = ["MONITOR_KEYS", "monitor_markdown"]

MONITOR_KEYS: tuple[tuple[str, str, str], ...] = (
    ("run", "string", "the run directory whose bundles were watched"),
    ("model_id", "string", "the model's id (every bundle carries it)"),
    ("period", "object", "`data`, `source`, `period` (`data.period`; null with data=csv, whose "
     "period is its files), `shift` (`data.shift`), "
     "`applicants` (the lender's rows scored); on a deployment (`deploy monitor`) `source` is "
     "`deployment`, `period` the file each node read (null: its `--data`), `shift` null and "
     "`applicants` null when the period was not scored (the model section withheld)"),
    ("thresholds", "object", "`watch`, `act` (index thresholds: below `watch` stable, below "
     "`act` watch, else act), `min_count` (rows per released bin, both sides), `out` (null)"),
    ("parties", "object", "`<party>.status` (the worst of its columns) and "
     "`<party>.columns.<column>.{index, rows, counts, status}`: the characteristic stability "
     "index the party computed on its own rows against the bins frozen from its training rows "
     "(its bundle), the rows counted and the merged bins' counts (each >= `min_count`); the "
     "column `embedding_norm` is the norm of the party's embedding of each row"),
    ("model", "object or null", "the lender's: `rows`, `score_psi` (deciles of the run's test "
     "predictions), `grade_psi`, `grade_mix.{training, period}.<grade>` (shares), `status`, "
     "`training.{auc, default_rate, default_rate_by_grade}` (the run's test split), "
     "`estimate.{auc, default_rate, assumption, trusted, why}` (label-free, from the calibrated "
     "probabilities; `trusted` false when outcomes contradict the calibration, or without "
     "outcomes when the inputs reached `act`), `outcomes` (null without outcomes; else `auc`, "
     "`ks`, `ece`, `brier`, `default_rate`, `default_rate_by_grade`, `calibration_z`); on a "
     "deployment the same figures, computed at the lender's node from the scores it kept "
     "(outcomes where its period file has the label column), judged by the coordinator; null "
     "when the lender's node withholds them (no `--release-monitoring`, a DP budget, a model "
     "with blacklist holders: `report.md` says why)"),
    ("status", "string", "the worst of every party's and the model's, over every period: "
     "`stable`, `watch` or `act` (the command exits 1 on `act`)"),
    ("released", "object", "`<party>.{indices, counts, epsilon}`: how many indices and bin "
     "counts left each party (nothing else did), summed over the periods, and the epsilon it "
     "spent on them (a party under DP: noised counts, charged to its ledger; null: exact "
     "counts, outside any epsilon)"),
    ("consent", "object or null", "the last period's consent counts for the purpose "
     "`monitoring`, as `results.json`'s `dataset.consent` (`purpose`, `dpv`, `parties.<party>`: "
     "`records`, rows held and used, consented, withdrawn, no record); null without consent "
     "records"),
    ("series", "array", "one entry per period watched (`data.period=2,3,4`; on a deployment "
     "`monitor.period=<file>,<file>`), in order, each "
     "`{period, parties, model, status, released, consent}` as above for that period alone; "
     "`period`, `parties`, `model` and `consent` above are the last entry's"),
    ("wall_seconds", "number", "the monitoring's wall time"),
)


def monitor_markdown() -> list[str]:
    """Return the lines of the ``monitor.json`` section of docs/results-schema.md."""
    lines = ["## monitor.json", "",
             "Written by `credit-fl monitor` and `deploy monitor` (docs/monitoring.md), from "
             "`credit_fl/monitor_schema.py`.", "",
             "| key | type | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | {kind} | {meaning} |" for key, kind, meaning in MONITOR_KEYS]
    return [*lines, ""]
