"""One-run privacy auditing: canary guesses turned into an epsilon lower bound.

Steinke, Nasr and Jagielski (2023), "Privacy Auditing with One (1) Training Run" (arXiv
2305.08846). ``m`` canaries each carry a secret bit ``S_i``, uniform and independent: whether
the canary is in the training set (a membership audit), or its label (a label audit). After
training, the auditor guesses ``r`` of the bits (and abstains on the rest) from the trained
model alone; ``v`` guesses are right. If the training is (epsilon, delta)-DP with respect to each
bit, the theorem (their Theorem 3.3 / Proposition 5.6) bounds the chance of so many right guesses
by

    P[W >= v] <= f(v) + 2 m delta * max_{1 <= i <= v} (f(v - i) - f(v)) / i,

with ``f(x) = P[Binomial(r, e^eps / (1 + e^eps)) >= x]``: with delta = 0 the right guesses are
no better than ``r`` coins each right with probability ``e^eps / (1 + e^eps)``. An epsilon whose
bound falls below ``1 - confidence`` is refuted at that confidence: the lower bound is the
largest such epsilon.

The guesses come from canary scores (higher: the bit is more likely 1): the top ``r/2`` are
guessed 1, the bottom ``r/2`` are guessed 0. The auditor tries a few guess counts fixed in
advance (:func:`guess_counts`) and reports the best; each is tested at ``(1 - confidence) /
tests`` (a Bonferroni correction), so the reported bound keeps its confidence however many
counts were tried. Pure numpy and scipy: no torch, no flwr.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import binom

GUESS_SHARES: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""The guess counts tried, as shares of the canaries (fixed before any score is seen)."""

_EPSILON_CAP = 64.0  # beyond it e^eps / (1 + e^eps) is 1 in double precision


def p_value(*, canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """Return the theorem's bound on the chance of ``correct`` or more right guesses.

    The probability, under an (epsilon, delta)-DP training, that ``guesses`` guesses about
    ``canaries`` independent uniform bits get at least ``correct`` right.

    >>> round(p_value(canaries=100, guesses=10, correct=10, epsilon=0.0, delta=0.0), 6)
    0.000977
    >>> p_value(canaries=100, guesses=10, correct=0, epsilon=1.0, delta=0.0)
    1.0
    """
    if correct <= 0:
        return 1.0
    q = float(expit(epsilon))
    tail = float(binom.sf(correct - 1, guesses, q))  # f(v) = P[W' >= v]
    if delta == 0:
        return min(tail, 1.0)
    steps = np.arange(1, correct + 1)
    gains = (binom.sf(correct - steps - 1, guesses, q) - tail) / steps  # (f(v - i) - f(v)) / i
    return float(min(tail + 2 * canaries * delta * max(float(gains.max()), 0.0), 1.0))


def epsilon_lower_bound(*, canaries: int, guesses: int, correct: int, delta: float,
                        significance: float) -> float:
    """Return the largest epsilon the guesses refute at ``significance`` (0 if none).

    >>> round(epsilon_lower_bound(canaries=1000, guesses=100, correct=100, delta=0.0,
    ...                           significance=0.05), 4)
    3.493
    >>> epsilon_lower_bound(canaries=1000, guesses=100, correct=50, delta=0.0, significance=0.05)
    0.0
    """
    def margin(epsilon: float) -> float:  # positive while the epsilon is refuted
        return significance - p_value(canaries=canaries, guesses=guesses, correct=correct,
                                      epsilon=epsilon, delta=delta)

    if guesses == 0 or margin(0.0) <= 0:
        return 0.0
    high = 1.0
    while margin(high) > 0:
        if high >= _EPSILON_CAP:
            return _EPSILON_CAP
        high *= 2
    return float(brentq(margin, 0.0 if high == 1.0 else high / 2, high, xtol=1e-10, rtol=1e-12))


def guess_counts(canaries: int) -> tuple[int, ...]:
    """Return the guess counts tried for ``canaries`` canaries (even, at least 2, distinct).

    >>> guess_counts(1000)
    (20, 50, 100, 200, 500, 1000)
    >>> guess_counts(10)
    (2, 4, 10)
    """
    counts = {max(2, 2 * int(share * canaries / 2)) for share in GUESS_SHARES}
    return tuple(sorted(c for c in counts if c <= canaries))


def guesses_from_scores(scores: np.ndarray, count: int) -> np.ndarray:
    """Guess 1 for the ``count // 2`` highest scores, 0 for as many lowest, -1 (abstain) else.

    Ties are broken by the canary's position (a stable sort): never by the secret bits.

    >>> guesses_from_scores(np.array([0.3, -2.0, 5.0, 0.1]), 2).tolist()
    [-1, 0, 1, -1]
    """
    order = np.argsort(scores, kind="stable")
    half = count // 2
    out = np.full(len(scores), -1, dtype=np.int64)
    out[order[:half]] = 0
    out[order[len(order) - half:]] = 1
    return out


def max_lower_bound(canaries: int, *, delta: float, confidence: float) -> float:
    """Return the most ``canaries`` canaries can ever prove: every guess right, at every count.

    A mechanism whose epsilon is above this figure cannot be caught with so few canaries,
    however broken (how many a test needs, worked out before it runs).

    >>> round(max_lower_bound(50, delta=0.0, confidence=0.95), 3)
    2.338
    """
    counts = guess_counts(canaries)
    significance = (1 - confidence) / len(counts)
    return max(epsilon_lower_bound(canaries=canaries, guesses=c, correct=c, delta=delta,
                                   significance=significance) for c in counts)


def audit_guesses(scores: np.ndarray, bits: np.ndarray, *, delta: float,
                  confidence: float) -> dict[str, Any]:
    """Guess the bits from the scores at every count of :func:`guess_counts`; keep the best.

    Returns the bound and what recomputes it: ``canaries``, ``guesses`` and ``correct`` of the
    best count, ``tests`` (counts tried) and ``significance`` (each count's), ``delta`` and
    ``confidence``; and ``by_guesses`` (every count's right guesses and bound).
    """
    scores, bits = np.asarray(scores, dtype=np.float64), np.asarray(bits).astype(np.int64)
    if scores.shape != bits.shape or scores.ndim != 1:
        raise ValueError(f"audit_guesses: scores {scores.shape} and bits {bits.shape} must be "
                         "one score per canary")
    if not set(np.unique(bits).tolist()) <= {0, 1}:
        raise ValueError("audit_guesses: every canary's secret bit must be 0 or 1")
    if len(bits) < 2:
        raise ValueError(f"audit_guesses: a one-run audit needs at least 2 canaries, got "
                         f"{len(bits)}")
    if not 0.5 <= confidence < 1:
        raise ValueError(f"audit_guesses: confidence must lie in [0.5, 1), got {confidence}")
    counts = guess_counts(len(bits))
    significance = (1 - confidence) / len(counts)
    rows = []
    for count in counts:
        guess = guesses_from_scores(scores, count)
        right = int(((guess == bits) & (guess >= 0)).sum())
        bound = epsilon_lower_bound(canaries=len(bits), guesses=count, correct=right,
                                    delta=delta, significance=significance)
        rows.append({"guesses": count, "correct": right, "epsilon_lower_bound": bound})
    best = max(rows, key=lambda row: (row["epsilon_lower_bound"], -row["guesses"]))
    return {"epsilon_lower_bound": best["epsilon_lower_bound"], "canaries": len(bits),
            "guesses": best["guesses"], "correct": best["correct"], "tests": len(counts),
            "significance": significance, "delta": float(delta), "confidence": confidence,
            "by_guesses": rows}

