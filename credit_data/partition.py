"""Which lender holds which applicant, in a horizontal federation.

``dirichlet``: for each class of the label, the shares of the lenders are drawn from a
Dirichlet(alpha) distribution, so a small alpha gives lenders very different default rates (the
usual label-skew benchmark). ``region``: each lender holds whole regions. Both are fixed by the
seed; a draw that leaves a lender too few rows or a single class is drawn again.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from credit_data.errors import ConfigError, DataError
from credit_data.settings import PartitionScheme, PartitionSettings

MAX_DRAWS = 200


def lender_names(n_lenders: int) -> tuple[str, ...]:
    """Stable party ids of the lenders: ``lender-0`` ... ``lender-<K-1>``.

    >>> lender_names(3)
    ('lender-0', 'lender-1', 'lender-2')
    """
    return tuple(f"lender-{k}" for k in range(n_lenders))


def check_partition(settings: PartitionSettings) -> None:
    """Raise a ConfigError naming the key of any out-of-range value."""
    if settings.n_lenders < 2:
        raise ConfigError(f"partition.n_lenders must be at least 2, got {settings.n_lenders}")
    if not settings.alpha > 0:
        raise ConfigError(f"partition.alpha must be positive, got {settings.alpha}")


def dirichlet_partition(labels: np.ndarray, n_lenders: int, alpha: float, seed: int,
                        min_share: float = 0.2) -> np.ndarray:
    """Assign each row to a lender, label-skewed by Dirichlet(alpha).

    Every lender ends with at least ``min_share / n_lenders`` of the rows and both classes.

    >>> y = np.array([0] * 900 + [1] * 100)
    >>> owner = dirichlet_partition(y, 4, alpha=0.5, seed=0)
    >>> sorted(set(owner.tolist()))
    [0, 1, 2, 3]
    >>> bool((owner == dirichlet_partition(y, 4, alpha=0.5, seed=0)).all())
    True
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    min_rows = int(min_share * len(labels) / n_lenders)
    for _ in range(MAX_DRAWS):
        owner = np.empty(len(labels), dtype=np.int64)
        for cls in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(n_lenders, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
            for k, part in enumerate(np.split(rows, cuts)):
                owner[part] = k
        counts = np.bincount(owner, minlength=n_lenders)
        both = all(len(np.unique(labels[owner == k])) == 2 for k in range(n_lenders))
        if counts.min() >= min_rows and both:
            return owner
    raise ConfigError(f"partition.alpha={alpha} with partition.n_lenders={n_lenders}: no draw in "
                      f"{MAX_DRAWS} gave every lender {min_rows} rows and both classes; "
                      "raise alpha or use fewer lenders")


def region_partition(regions: pd.Series, n_lenders: int, column: str, source: str) -> np.ndarray:
    """Give each lender whole regions, round-robin over the sorted region names.

    >>> region_partition(pd.Series(["b", "a", "c", "a"]), 2, "region", "t").tolist()
    [1, 0, 0, 0]
    """
    names = sorted(regions.dropna().astype(str).unique())
    if len(names) < n_lenders:
        raise ConfigError(f"partition.n_lenders={n_lenders} exceeds the {len(names)} regions in "
                          f"column '{column}' of {source}")
    if regions.isna().any():
        raise DataError(f"{source}: column '{column}' has missing regions; partition.scheme="
                        "region needs a region for every applicant")
    lookup = {name: i % n_lenders for i, name in enumerate(names)}
    return regions.astype(str).map(lookup).to_numpy(dtype=np.int64)


def partition_applicants(settings: PartitionSettings, labels: np.ndarray,
                         lender_frame: pd.DataFrame, source: str, seed: int) -> np.ndarray:
    """Return the lender index (0..K-1) of every applicant, in the lender table's row order."""
    check_partition(settings)
    if settings.scheme is PartitionScheme.dirichlet:
        return dirichlet_partition(labels, settings.n_lenders, settings.alpha, seed)
    if settings.region_column not in lender_frame.columns:
        raise ConfigError(f"partition.scheme=region needs column '{settings.region_column}' "
                          f"(partition.region_column) at the lender ({source})")
    return region_partition(lender_frame[settings.region_column], settings.n_lenders,
                            settings.region_column, source)
