"""What the lender and the parties agree on to explain a score: settings, sealed kinds, codes.

The exchange (:mod:`fl_client.explanation`) has three sealed messages per passive party, all on
the lender<->party channel of the scoring request (:mod:`federation.sealed`) and logged in each
node's audit log with the purpose :data:`PURPOSE`:

1. party -> lender: its reference embedding and its embeddings along the path from its
   reference row to each applicant's row (:data:`PATH`, :data:`REFERENCE`);
2. lender -> party: the head's Shapley-weighted gradients at those points, in points
   (:data:`GRADIENTS`), one batched message;
3. party -> lender: each applicant's attribution per column of the party, in points
   (:data:`COLUMNS`), and its reason codes.

A vertical scorecard (:mod:`fl_client.scorecard_explanation`) needs no extra round: with its
partial scores each party seals its top codes, the points each cost (in log-odds), the sum of its
columns' reference points and its codes' names (:data:`CARD_CODES`, :data:`CARD_LOST`,
:data:`CARD_TOTAL`, :data:`CARD_NAMES`); the lender ranks them in the ``score`` round.

No feature value leaves a party; what an attribution reveals: ``docs/explanations.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CARD_CODES", "CARD_LOST", "CARD_NAMES", "CARD_TOTAL", "COLUMNS",
           "GLOBAL_MIN_APPLICANTS", "GRADIENTS", "METHODS", "PATH", "PURPOSE", "REFERENCE",
           "ExplainSettings", "exact_path", "reason_code"]

GLOBAL_MIN_APPLICANTS = 50
"""The fewest explained applicants a global figure describes (a party's table, the mean
|share| of each party): below it a node sends none, since over one applicant it would be that
applicant's points per column, which reach the server (``scoring.json``)."""

PURPOSE = "explanation"
"""The audit-log purpose of every explanation message."""
PATH = "explanation path"
REFERENCE = "explanation reference"
GRADIENTS = "explanation gradients"
COLUMNS = "explanation columns"
METHODS = ("exact", "gauss_legendre")
CARD_CODES = "scorecard reason codes"
"""A scorecard party's top codes per applicant (indices into its sealed names; -1: none)."""
CARD_LOST = "scorecard points lost"
CARD_TOTAL = "scorecard reference"
CARD_NAMES = "scorecard code names"
UNKNOWN = "unknown"
"""The code of the factor "the party holds no record of the applicant"."""


@dataclass(frozen=True)
class ExplainSettings:
    """``explain.*``: reason codes for every scored applicant (docs/explanations.md).

    ``reasons``: how many adverse factors each applicant gets (Regulation B: at most four);
    ``method``: ``exact`` integrates the path in closed form where every encoder and the head
    have one hidden layer (the default ``split_mlp``; else it falls back to quadrature),
    ``gauss_legendre`` by quadrature on ``steps`` points (captum's method; the party's message
    grows with them); ``descriptions``: a party's reason-code table, ``<column>: text`` in that
    party's own config (in a simulation ``<party>.<column>``); a column without one is described
    by its name. ``enabled``: explain at all. A scorecard (``model=scorecard``,
    :mod:`models.scorecard_reasons`) counts each column's points below a reference:
    ``scorecard_reference`` ``maximum`` (its best bin) or ``average`` (the average applicant's,
    or with ``cutoff``, in points, the applicants just above the cut-off's).
    """

    enabled: bool = True
    reasons: int = 4
    method: str = "exact"
    steps: int = 128
    descriptions: dict[str, str] = field(default_factory=dict)
    scorecard_reference: str = "maximum"
    cutoff: float | None = None

    def __post_init__(self) -> None:
        """Refuse a count or a path that cannot work, naming the key."""
        if self.reasons < 1:
            raise ValueError(f"explain.reasons must be at least 1, got {self.reasons}")
        if self.method not in METHODS:
            raise ValueError(f"explain.method must be one of {METHODS}, got '{self.method}'")
        if self.steps < 1:
            raise ValueError(f"explain.steps must be at least 1, got {self.steps}")
        if self.scorecard_reference not in ("maximum", "average"):
            raise ValueError("explain.scorecard_reference must be maximum or average, got "
                             f"'{self.scorecard_reference}'")


def exact_path(settings: ExplainSettings, encoder_hidden: tuple[int, ...],
               hidden: tuple[int, ...]) -> bool:
    """Say whether both ends integrate the path exactly (else by quadrature).

    Both decide alike from the bundle's architecture: every encoder and the head one hidden
    layer.

    >>> exact_path(ExplainSettings(), (32,), (32,)), exact_path(ExplainSettings(), (32, 16), (32,))
    (True, False)
    """
    return settings.method == "exact" and len(encoder_hidden) == 1 and len(hidden) == 1


def reason_code(settings: ExplainSettings, party: str, column: str) -> tuple[str, str]:
    """Return a column's reason code and description, from the party's table.

    >>> s = ExplainSettings(descriptions={"bureau.delinq_90d": "Serious delinquency"})
    >>> reason_code(s, "bureau", "delinq_90d"), reason_code(s, "bureau", "inquiries")
    (('bureau.delinq_90d', 'Serious delinquency'), ('bureau.inquiries', 'inquiries'))
    """
    code = f"{party}.{column}"
    text = settings.descriptions.get(code, settings.descriptions.get(column))
    if text is None and column == UNKNOWN:
        text = f"no record of the applicant at {party}"
    return code, text if text is not None else column
