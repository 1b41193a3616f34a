"""Message types, record keys and metric names shared by the ServerApp and the ClientApp."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from models.metrics import ScoreSummary, histogram_auc, rank_auc

if TYPE_CHECKING:
    from flwr.app import RecordDict

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
STATUS = "status"
WEIGHT = "weight"
"""Aggregation weight a client reports: its training rows, or 1 under central DP."""

EVALUATE_FIRST = "evaluate-first"
"""Config key of a training message: score the model it carries before training from it."""
TRAIN_ROWS = "train-rows"
"""Config key of a training message: the union's training rows, pooled from the lenders'
statistics (noisy under DP), over which a scorecard spreads its penalty (``model.l2``)."""
SCORED = "scored-"
"""Prefix of the metrics of that evaluation in the training reply."""
REPORT = "report"
"""Record of the final model's score summaries per split (:func:`report_record`): what a
lender sends instead of row-level scores, and all the run's metrics are computed from."""
RUN_ENDS = "run_ends"
"""In the final model's message: true when the run ends there (not stopped to be resumed): the
node then removes its noise key (:func:`fl_client.node_noise.forget_key_mod`)."""

class VerticalMessage(StrEnum):
    """Vertical federation's messages, as Flower's message types ``<kind>.<action>``.

    The ServerApp sends the member itself (a ``str``); the ClientApp registers each handler
    under its :attr:`action`.

    >>> str(VerticalMessage.EMBED), VerticalMessage.EMBED.action
    ('train.embed', 'embed')
    """

    HELLO = "query.hello"
    PSI_REQUEST = "query.psi_request"
    PSI_SETUP = "query.psi_setup"
    PSI_ANSWER = "query.psi_answer"
    PSI_INTERSECT = "query.psi_intersect"
    PSI_RECEIVE = "query.psi_receive"
    LIST_ANSWER = "query.list_answer"
    EMBED = "train.embed"
    HEAD = "train.head"
    RESEND = "query.resend"  # lender: an epoch's last gradients, sealed again (a resume)
    FINAL = "evaluate.final"

    @property
    def action(self) -> str:
        """The handler's name within its kind (``embed`` of ``train.embed``)."""
        return self.value.split(".", 1)[1]


@dataclass(frozen=True)
class Fields:
    """The config fields one message type carries, declared once for both ends.

    ``required`` and ``optional`` are plain keys; ``per_party`` maps a key naming parties (a
    list such as ``passive``) to the fields sent once per party named there, as
    ``<party>.<field>``.
    """

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    per_party: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def problem(self, kind: str, config: Mapping[str, Any]) -> str | None:
        """Say what is wrong with ``config`` for a ``kind`` message (None: nothing).

        >>> Fields(("epoch",)).problem("train.embed", {"epoch": 1, "x": 2})
        "train.embed: unexpected field 'x' (it carries epoch)"
        >>> Fields(("epoch",)).problem("train.embed", {})
        "train.embed: missing field 'epoch'"
        """
        expected = set(self.required) | set(self.optional)
        for names, fields in self.per_party:
            parties = config.get(names, [])
            expected |= {f"{party}.{field}" for party in cast(list, parties) for field in fields}
        missing = [key for key in self.required if key not in config]
        missing += [f"{party}.{field}" for names, fields in self.per_party
                    for party in cast(list, config.get(names, [])) for field in fields
                    if f"{party}.{field}" not in config]
        if missing:
            return f"{kind}: missing field {missing[0]!r}"
        extra = sorted(set(config) - expected)
        if extra:
            return (f"{kind}: unexpected field {extra[0]!r} (it carries "
                    f"{', '.join(sorted(set(self.required) | set(self.optional))) or 'none'})")
        return None


VERTICAL_FIELDS: dict[VerticalMessage, Fields] = {
    VerticalMessage.HELLO: Fields(),
    VerticalMessage.PSI_REQUEST: Fields(("passive", "list_mode"), ("holders",)),
    VerticalMessage.PSI_SETUP: Fields(("lender_rows",)),
    VerticalMessage.PSI_ANSWER: Fields(("request", "key")),
    VerticalMessage.LIST_ANSWER: Fields(("request", "key", "asked"), ("purpose",)),
    VerticalMessage.PSI_INTERSECT: Fields(("passive", "list_mode"), ("holders",), (
        ("passive", ("setup", "response", "key")),
        ("holders", ("setup", "response", "signature")))),
    VerticalMessage.PSI_RECEIVE: Fields(("sealed",)),
    VerticalMessage.EMBED: Fields(("epoch", "chunk", "val_epoch"), ("prev",)),
    VerticalMessage.HEAD: Fields(("epoch", "chunk", "val_epoch", "passive")),
    VerticalMessage.RESEND: Fields(("epoch", "chunk", "passive")),
    VerticalMessage.FINAL: Fields(("best_epoch", "model_id", RUN_ENDS), ("passive",)),
}
"""The config each vertical message carries: the server builds it, the node checks it first
(:func:`fl_client.vertical_app.make_vertical_client_app` refuses a message that differs,
naming the field)."""


class ScoringMessage(StrEnum):
    """Scoring new applicants with a vertical model's bundles (:mod:`fl_server.scoring_rounds`).

    >>> str(ScoringMessage.EMBED), ScoringMessage.EMBED.action
    ('query.score_embed', 'score_embed')
    """

    HELLO = "query.score_hello"  # every node: its bundle; the lender also blinds its applicants
    ANSWER = "query.score_answer"  # passive: the PSI answer, from its cached set
    LIST_ANSWER = "query.score_list_answer"  # blacklist holder: its answer to the lookup
    INTERSECT = "query.score_intersect"  # lender: which applicants each party knows
    EMBED = "query.score_embed"  # passive: the embeddings of the applicants it knows
    SCORE = "query.score"  # lender: the scores, kept at the lender; counts to the server
    EXPLAIN = "query.explain_columns"  # passive: its columns' points, from the head's gradients
    REASONS = "query.explain_reasons"  # lender: every applicant's reason codes, kept there
    OWN = "query.score_own"  # horizontal: each lender scores its own applicants; counts back
    SERVE_TABLE = "query.serve_table"  # passive: its sealed tag set, once per service
    SERVE_OPEN = "query.serve_open"  # lender: opens and keeps the parties' tag sets
    SERVE_NEXT = "query.serve_next"  # lender: the next request from its inbox, blinded
    SERVE_EVAL = "query.serve_eval"  # passive: the request's points times its key (charged)
    SERVE_MATCH = "query.serve_match"  # lender: which applicants each party knows, sealed
    SERVE_EMBED = "query.serve_embed"  # passive: the embeddings of those applicants only
    SERVE_SCORE = "query.serve_score"  # lender: opens the embeddings, scores; counts back

    @property
    def action(self) -> str:
        """The handler's name within its kind."""
        return self.value.split(".", 1)[1]


_HOLDER_ANSWER = ("holders", ("setup", "response", "signature"))
"""Each blacklist holder's answer to the lookup, forwarded to the lender."""

SCORING_FIELDS: dict[ScoringMessage, Fields] = {
    ScoringMessage.HELLO: Fields((), ("serve",)),
    ScoringMessage.ANSWER: Fields(("request", "key", "lender_rows")),
    ScoringMessage.LIST_ANSWER: Fields(("request", "key", "asked", "purpose"), ("served",)),
    ScoringMessage.INTERSECT: Fields((), ("passive", "holders"), (
        ("passive", ("setup", "response", "key")), _HOLDER_ANSWER)),
    ScoringMessage.EMBED: Fields(("sealed",), ("explain",)),
    ScoringMessage.SCORE: Fields((), ("passive", "explain")),
    ScoringMessage.EXPLAIN: Fields((), ("served", "gradients")),
    ScoringMessage.REASONS: Fields((), ("passive", "served", "explaining"), (
        ("passive", ("names",)), ("explaining", ("columns",)))),
    ScoringMessage.OWN: Fields(),
    ScoringMessage.SERVE_TABLE: Fields(("key",)),
    ScoringMessage.SERVE_OPEN: Fields(("passive",), (), (("passive", ("key",)),)),
    ScoringMessage.SERVE_NEXT: Fields(("wait",)),
    ScoringMessage.SERVE_EVAL: Fields(("sealed",)),
    ScoringMessage.SERVE_MATCH: Fields(("passive",), (), (("passive", ("evaluated",)),)),
    ScoringMessage.SERVE_EMBED: Fields(("known",), ("explain",)),
    ScoringMessage.SERVE_SCORE: Fields((), ("passive", "holders", "explain", "explaining"), (
        ("passive", ("embedded",)), ("explaining", ("explained",)), _HOLDER_ANSWER)),
}
"""The config each scoring message carries (batch, service and explanation alike): the server
builds it (:mod:`fl_server.scoring_rounds`, :mod:`fl_server.scoring_service`), the node checks it
first (:func:`fl_client.scoring_app.make_scoring_client_app` refuses a message that differs,
naming the field). Arrays (embeddings, gradients, tag sets) travel beside, in ``arrays``; a
scoring service's explanation arrays (sealed bytes, small per request) travel in the config, as
its embeddings do: an array record adds objects that every hop (SuperLink, SuperNode, party
worker) stores and pulls one by one, each message's latency (``explaining``: the parties whose
sealed codes or path, :func:`pack_blobs`, or columns the message carries)."""


def pack_blobs(blobs: Mapping[str, bytes]) -> bytes:
    """Pack named byte strings into one (a party's sealed explanation arrays, forwarded whole).

    >>> unpack_blobs(pack_blobs({"explain.path": b"ab", "explain.reference": b""}))
    {'explain.path': b'ab', 'explain.reference': b''}
    """
    out = bytearray()
    for name, blob in blobs.items():
        key = name.encode()
        out += len(key).to_bytes(2, "big") + key + len(blob).to_bytes(8, "big") + bytes(blob)
    return bytes(out)


def unpack_blobs(packed: bytes) -> dict[str, bytes]:
    """Read :func:`pack_blobs`'s output; a truncated one is refused."""
    out, at = {}, 0
    while at < len(packed):
        size = int.from_bytes(packed[at:at + 2], "big")
        name = packed[at + 2:at + 2 + size]
        length = int.from_bytes(packed[at + 2 + size:at + 10 + size], "big")
        start = at + 10 + size
        if len(name) != size or start + length > len(packed):
            raise ValueError(f"packed blobs of {len(packed)} bytes are truncated at byte {at}")
        out[name.decode()] = packed[start:start + length]
        at = start + length
    return out


class MonitoringMessage(StrEnum):
    """Monitoring's messages (:mod:`fl_server.monitoring_rounds`).

    >>> str(MonitoringMessage.MODEL), MonitoringMessage.MODEL.action
    ('query.monitor_model', 'monitor_model')
    """

    INDICES = "query.monitor"  # every party: its stability indices and counts
    MODEL = "query.monitor_model"  # a deployed lender: the figures of the period's scores

    @property
    def action(self) -> str:
        """The handler's name within its kind."""
        return self.value.split(".", 1)[1]


MONITORING_FIELDS: dict[MonitoringMessage, Fields] = {
    MonitoringMessage.INDICES: Fields(("min_count",)),
    MonitoringMessage.MODEL: Fields(),
}
"""The config each monitoring message carries: the server builds it, the node checks it first
(:func:`fl_client.monitoring_app.make_monitoring_client_app`)."""


EVALUATION = "evaluation"
"""Record of a lender's test score summary beside its evaluation metrics (:func:`evaluation`):
a ConfigRecord, because the strategies average every MetricRecord of a round's replies."""


def evaluation(scores: np.ndarray, labels: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a lender's evaluation of a model on its test rows: its AUC, and their summary.

    The metrics go in the reply's MetricRecord; the summary (:class:`ScoreSummary`, bins of 20
    rows or more, as a record) in its :data:`EVALUATION` record, for the server to pool across
    lenders. No row leaves.

    >>> metrics, summary = evaluation(np.linspace(0.01, 0.99, 50),
    ...                               np.r_[np.zeros(25), np.ones(25)])
    >>> metrics, summary["positives"], summary["negatives"]
    ({'num-examples': 50, 'auc': 1.0}, [0, 25], [20, 5])
    """
    auc = auc_of_scores(scores, labels) if 0 < labels.sum() < len(labels) else -1.0
    return ({"num-examples": int(len(labels)), "auc": auc},
            ScoreSummary.of(labels, scores).to_record(""))


def pooled_auc(summaries: list[ScoreSummary]) -> float:
    """Return the AUC of the lenders' test summaries pooled (NaN for none).

    Pairs within one bin count half: below, each lender's own AUC is 1.0, but one bin holds 25
    defaulters and 5 others.

    >>> s = ScoreSummary.of(np.r_[np.zeros(25), np.ones(25)], np.linspace(0.01, 0.99, 50))
    >>> pooled_auc([s, s]), pooled_auc([])
    (0.9, nan)
    """
    if not summaries:
        return float("nan")
    pooled = summaries[0]
    for summary in summaries[1:]:
        pooled = pooled + summary
    return histogram_auc(pooled.positives, pooled.negatives)


def auc_of_scores(scores: np.ndarray, labels: np.ndarray) -> float:
    """Return a node's AUC on its own rows: the histogram AUC with a bin per distinct score.

    That is the Mann-Whitney statistic, the same number as scikit-learn's ``roc_auc_score``
    (``tests/test_metrics.py`` checks it). Lender nodes use it because it is all they would
    use scikit-learn for, and importing scikit-learn costs each simulation worker about 1.5 s
    of CPU before its first message.

    >>> auc_of_scores(np.array([0.1, 0.4, 0.4, 0.8]), np.array([0, 0, 1, 1]))
    0.875
    """
    return rank_auc(scores, labels)


def evaluation_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Name a lender's evaluation metrics for a training reply, apart from its training metrics.

    >>> evaluation_metrics({"auc": 0.7, "num-examples": 10})
    {'scored-auc': 0.7, 'scored-num-examples': 10}
    """
    return {SCORED + k: v for k, v in metrics.items()}


def content_summary(content: RecordDict) -> dict[str, Any]:
    """Describe a message's content: array shapes and bytes, byte-string sizes; no values."""
    out: dict[str, Any] = {}
    for record in content.array_records.values():
        for name, array in record.items():
            out[name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                         "bytes": len(array.data)}
    for config in content.config_records.values():
        for name, value in config.items():
            if isinstance(value, bytes):  # blinded IDs, keys, ciphertext (alignment)
                out[name] = {"bytes": len(value)}
    return out


def reported_epsilon(content: RecordDict) -> dict[str, float]:
    """Return the epsilon figures a reply reports (names containing ``epsilon``)."""
    return {k: float(v) for record in content.metric_records.values()
            for k, v in record.items() if "epsilon" in k and isinstance(v, int | float)}


def report_record(summaries: dict[str, ScoreSummary], rows: dict[str, int]) -> dict[str, Any]:
    """Flatten a lender's report: its score summary per split and its rows per split.

    Under DP there is no training summary, but the number of training rows is still given
    (sizes are public).

    >>> s = ScoreSummary.of(np.array([0, 1]), np.array([0.2, 0.7]))
    >>> report = report_record({"val": s, "test": s}, {"train": 5, "val": 2, "test": 2})
    >>> summaries, rows = read_report(report, private=True)
    >>> sorted(summaries), rows
    (['test', 'val'], {'train': 5, 'val': 2, 'test': 2})
    """
    out: dict[str, Any] = {"splits": list(summaries), "row_splits": list(rows),
                           "rows": [int(n) for n in rows.values()]}
    for name, summary in summaries.items():
        out |= summary.to_record(f"{name}.")
    return out


SPLIT_NAMES = ("train", "val", "test")


def read_report(record: Any, private: bool) -> tuple[dict[str, ScoreSummary], dict[str, int]]:
    """Read back :func:`report_record`'s summaries and rows, refusing a malformed report.

    The report must give the rows of every split and a summary of each split but the training
    one under DP (``private``), each summary counting exactly the rows reported.
    """
    try:
        rows = {str(k): int(v) for k, v in zip(record["row_splits"], record["rows"],
                                                strict=True)}
        summaries = {str(name): ScoreSummary.from_record(record, f"{name}.")
                     for name in record["splits"]}
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"malformed report: {exc}") from exc
    expected = [s for s in SPLIT_NAMES if not (private and s == "train")]
    if sorted(rows) != sorted(SPLIT_NAMES) or sorted(summaries) != sorted(expected):
        raise ValueError(f"the report gives rows of {sorted(rows)} and summaries of "
                         f"{sorted(summaries)}; expected rows of {list(SPLIT_NAMES)} and "
                         f"summaries of {expected}")
    for name, summary in summaries.items():
        if summary.rows != rows[name] or rows[name] < 0:
            raise ValueError(f"the {name} summary counts {summary.rows} rows, the report "
                             f"{rows[name]}")
    return summaries, rows
