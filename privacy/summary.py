"""The noisy column summary: the one data-dependent release a party makes before training.

A party counts its training rows on a public grid (:func:`credit_data.summary.column_counts`):
every record adds 1 to exactly one cell of each column (a grid bin or "missing"; a category)
and, at a label holder, to the positive count when it is a default. Adding or removing one
record therefore moves the vector of all cells by at most ``sqrt(cells_per_record)`` in L2
norm: the sensitivity under :data:`~privacy.accounting.NEIGHBOURING` (add/remove; replacing a
record by another would move it by up to ``sqrt(2 * cells_per_record)``).
:func:`noisy_summary` adds Gaussian noise of ``noise_multiplier * sqrt(cells)`` to every
cell (a Gaussian mechanism, released once: ``(noise_multiplier, 1.0, 1)`` in RDP terms, composed
with the party's DP-SGD history), and keeps a category only when its noisy count passes a
threshold that a category held by a single record passes with probability at most
``selection_delta`` per column (Gaussian partition selection): so rare categories, exact
minima and maxima, and exact counts never leave and never shape the model.

The noise comes from the party's :class:`~privacy.randomness.NoiseSource`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy.special import ndtri

from credit_data.summary import ColumnCounts
from privacy.accounting import epsilon_of, noise_multiplier_for
from privacy.randomness import NoiseSource, gaussian


@dataclass(frozen=True, kw_only=True)
class SummaryPlan:
    """How a party noises its summary: fixed before any count is looked at.

    ``noise_multiplier`` is relative to the L2 sensitivity; ``delta`` the conversion delta of
    the party's whole budget; ``selection_delta`` the summed chance that some category of one
    record alone is kept.
    """

    noise_multiplier: float
    delta: float
    selection_delta: float

    @property
    def history(self) -> tuple[tuple[float, float, int], ...]:
        """The release in RDP terms, to compose with DP-SGD."""
        return ((self.noise_multiplier, 1.0, 1),)

    def epsilon(self) -> float:
        """Return the summary's own epsilon (at ``delta``)."""
        return epsilon_of(list(self.history), delta=self.delta)


def summary_sensitivity(*, cells_per_record: int) -> float:
    """L2 sensitivity of the counts when one record is added or removed (add/remove).

    The record adds 1 to ``cells_per_record`` cells (one per column, and the positive count).

    >>> summary_sensitivity(cells_per_record=4)
    2.0
    """
    return math.sqrt(max(cells_per_record, 1))


def summary_plan(*, target_epsilon: float, share: float, delta: float) -> SummaryPlan:
    """Spend ``share`` of a party's ``target_epsilon`` on its summary.

    The selection delta is a tenth of ``delta``: the party's delta becomes ``1.1 * delta``.

    >>> plan = summary_plan(target_epsilon=3.0, share=0.1, delta=1e-6)
    >>> round(plan.epsilon(), 2) <= 0.3, plan.selection_delta
    (True, 1e-07)
    """
    z = noise_multiplier_for(target_epsilon=share * target_epsilon, delta=delta, sample_rate=1.0,
                             steps=1)
    return SummaryPlan(noise_multiplier=z, delta=delta, selection_delta=delta / 10)


def noisy_summary(counts: ColumnCounts, *, plan: SummaryPlan, noise: NoiseSource,
                  purpose: str = "summary") -> dict[str, Any]:
    """Noise every cell; keep the categories whose noisy count passes the threshold.

    Returns a JSON-ready dict: ``rows`` (the set size, outside every guarantee),
    ``noise_std``, ``numeric`` (noisy cells per column, the last one "missing"),
    ``categorical`` (kept categories and their noisy counts), ``positives`` (or null).

    >>> from credit_data.summary import column_counts
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"c": ["a"] * 500 + ["rare"]})
    >>> s = noisy_summary(column_counts(frame, (), ("c",)),
    ...                   plan=summary_plan(target_epsilon=3.0, share=0.5, delta=1e-5),
    ...                   noise=NoiseSource.fresh())
    >>> sorted(s["categorical"]["c"])
    ['a']
    """
    rng = noise.numpy(purpose)
    std = plan.noise_multiplier * summary_sensitivity(cells_per_record=counts.cells_per_record)
    n_categorical = max(len(counts.categorical), 1)
    threshold = 1.0 + std * float(ndtri(1.0 - plan.selection_delta / n_categorical))
    numeric = {c: (v + gaussian(v.shape, std, rng)).tolist()
               for c, v in counts.numeric.items()}
    categorical: dict[str, dict[str, float]] = {}
    for column, seen in counts.categorical.items():
        names = sorted(seen)
        noisy = [seen[n] + float(x) for n, x in zip(names, gaussian((len(names),), std, rng),
                                                       strict=True)]
        categorical[column] = {n: v for n, v in zip(names, noisy, strict=True)
                               if v >= threshold}
    positives = None
    if counts.positives is not None:
        positives = float(counts.positives + gaussian((1,), std, rng)[0])
    return {"rows": counts.rows, "noise_std": std, "numeric": numeric,
            "categorical": categorical, "positives": positives,
            "selection_threshold": threshold}
