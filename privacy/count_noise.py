"""Noisy histograms: the Laplace mechanism on a party's bin counts (monitoring under DP).

A party that watches its columns under a DP budget releases, per column, counts of its rows in
bins frozen from its training rows. One row added or removed moves one count of each
histogram by one, so ``histograms`` histograms released together have L1 sensitivity
``histograms``; Laplace noise of scale ``histograms / epsilon`` on every count makes the
release epsilon-DP (add/remove). Counts are rounded and floored at zero afterwards
(post-processing). The noise is drawn anew from the operating system's cryptographic source at
every call (:meth:`privacy.randomness.NoiseSource.fresh`), never from the config seed.

>>> counts = np.array([500, 300, 200])
>>> noisy = laplace_counts(counts, epsilon=1.0, histograms=1)
>>> noisy.shape, bool((noisy >= 0).all())
((3,), True)
>>> laplace_counts(counts, epsilon=0.0, histograms=1)
Traceback (most recent call last):
...
ValueError: epsilon must be positive, got 0.0
"""

from __future__ import annotations

import numpy as np

from privacy.randomness import NoiseSource

__all__ = ["laplace_counts"]


def laplace_counts(counts: np.ndarray, *, epsilon: float, histograms: int) -> np.ndarray:
    """Return ``counts`` with Laplace noise of scale ``histograms / epsilon``, rounded, >= 0.

    Every call draws a fresh key from the OS (two calls never share noise).
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if histograms < 1:
        raise ValueError(f"histograms must be at least 1, got {histograms}")
    rng = NoiseSource.fresh().numpy("monitoring counts")
    values = np.asarray(counts, dtype=np.float64)
    noisy = values + rng.laplace(0.0, histograms / epsilon, size=values.shape)
    return np.maximum(np.rint(noisy), 0).astype(np.int64)
