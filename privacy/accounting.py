"""Pure accounting math for DP-SGD, on Opacus' RDP accountant.

The accountant is named explicitly everywhere: Opacus' ``PrivacyEngine`` defaults to PRV while
``get_noise_multiplier`` defaults to RDP, and mixing them makes the noise you calibrate and the
epsilon you report disagree.

Opacus is imported where it is used: importing it takes about 2.5 s here (it pulls in
torch.distributed and scipy.stats), and a run without DP never needs it.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

from credit_data.errors import ConfigError

# Opacus warns "Optimal order is the largest alpha" whenever the best RDP order is its largest:
# the epsilon is still a valid (if not the tightest) bound, and the one Opacus itself reports;
# nothing a run's user can act on, printed by every node at every step of its accounting
warnings.filterwarnings("ignore", message="Optimal order is the largest alpha",
                        category=UserWarning)

ACCOUNTANT = "rdp"

NEIGHBOURING = "add_remove"
"""The one neighbouring relation every epsilon of this project is accounted under.

Two datasets are neighbours when one has a customer's record and the other does not (Opacus'
and the RDP accountant's relation; ``ADD_OR_REMOVE_ONE`` in Google's dp-accounting). A vertical
customer's record spans parties: at each party "one record" is that customer's row there (the
lender's columns and label; a passive party's columns). Which customers the parties share is
the alignment's release, outside every epsilon; given it, a record that is not there
contributes nothing (no count, a zero gradient, a zero embedding: dp-accounting's
``REPLACE_SPECIAL``, whose Gaussian accounting is add/remove's). Each mechanism's sensitivity
is the one this relation gives:

- noisy summary: ``sqrt(cells_per_record)`` (a record adds 1 to one cell per column);
- DP-SGD: the clipping norm C (a record's clipped gradient joins a Poisson-sampled sum or not);
- embedding noise: C, the embedding clip (:func:`embedding_sensitivity`);
- central DP: C for a client, 2C for a record (:func:`update_sensitivity`);
- randomized response: ``log((1 - p) / p)`` bounds any change of one label, so it bounds the
  label's release when its record comes or goes too (:func:`randomized_response_epsilon`).
"""

ORDERS: tuple[float, ...] = (*[1 + x / 10.0 for x in range(1, 100)], *range(12, 64),
                             80, 96, 128, 192, 256, 384, 512, 768, 1024)
"""The RDP orders every epsilon here is converted at: Opacus' default orders (1.1 to 63) and
larger ones. With orders up to 63 a one-off release (a noisy summary, a single embedding
release) cannot go below about ``log(1/delta) / 62`` (0.15 at delta 1e-4), so small budgets
failed with Opacus' "The privacy budget is too low"; the larger orders reach them. More
orders only ever lower a converted epsilon (the minimum is over more candidates)."""

History = list[tuple[float, float, int]]
"""An accountant's history: ``(noise_multiplier, sample_rate, steps)`` per stretch of training."""


def default_delta(n_rows: int) -> float:
    """Return a delta below 1/n for a party with ``n_rows`` rows.

    >>> default_delta(1000)
    0.0001
    """
    return 0.1 / max(n_rows, 1)


def check_delta(*, delta: float | None, rows: int, where: str) -> None:
    """Refuse a configured delta of 1/n or more for ``rows`` records (named by ``where``).

    A delta of 1/n or more allows a mechanism that publishes a record outright. The runners
    check the largest table a mechanism protects before anything trains; every node checks its
    own rows again, whatever the run asks.

    >>> check_delta(delta=0.5, rows=3000, where="x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    credit_data.errors.ConfigError: privacy.delta=0.5 is not below 1/n for x (3,000 rows; ...
    """
    if delta is not None and not delta < 1 / max(rows, 1):
        raise ConfigError(f"privacy.delta={delta:g} is not below 1/n for {where} "
                          f"({rows:,} rows; 1/n = {1 / max(rows, 1):.3g}): a mechanism with "
                          "such a delta may publish a record outright; leave privacy.delta "
                          "unset (0.1/n) or lower it")


def party_delta(*, delta: float | None, n_rows: int) -> float:
    """Return the delta a party uses: the configured one (checked) or :func:`default_delta`.

    >>> party_delta(delta=None, n_rows=1000)
    0.0001
    """
    check_delta(delta=delta, rows=n_rows, where="this party's rows")
    return default_delta(n_rows) if delta is None else delta


@functools.lru_cache(maxsize=256)
def noise_multiplier_for(*, target_epsilon: float, delta: float, sample_rate: float,
                         steps: int) -> float:
    """Find the noise multiplier that spends ``target_epsilon`` over ``steps`` sampled steps.

    A pure function of its arguments, cached: the search takes seconds at large sample rates,
    and a vertical node plans each exchange with the same figures.

    >>> sigma = noise_multiplier_for(target_epsilon=3.0, delta=1e-5, sample_rate=0.01,
    ...                              steps=1000)
    >>> 2.9 < epsilon_of([(sigma, 0.01, 1000)], delta=1e-5) <= 3.0
    True
    """
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                      sample_rate=sample_rate, steps=steps,
                                      accountant=ACCOUNTANT, alphas=list(ORDERS),
                                      epsilon_tolerance=min(0.01, target_epsilon / 100)))


@functools.lru_cache(maxsize=256)
def noise_multiplier_after(*, target_epsilon: float, delta: float, sample_rate: float,
                           steps: int, prior: tuple[tuple[float, float, int], ...] = ()
                           ) -> float:
    """Find the noise for ``steps`` sampled steps that, after ``prior``, spends the target.

    ``target_epsilon`` covers everything composed (RDP composition: the stretches' RDP adds).

    With no prior this is :func:`noise_multiplier_for`. A bisection to 0.1% of the noise,
    never over the target.

    >>> prior = ((3.0, 1.0, 1),)
    >>> sigma = noise_multiplier_after(target_epsilon=3.0, delta=1e-5, sample_rate=0.01,
    ...                                steps=1000, prior=prior)
    >>> sigma > noise_multiplier_for(target_epsilon=3.0, delta=1e-5, sample_rate=0.01,
    ...                              steps=1000)
    True
    >>> 2.95 < epsilon_of([*prior, (sigma, 0.01, 1000)], delta=1e-5) <= 3.0
    True
    """
    if not prior:
        return noise_multiplier_for(target_epsilon=target_epsilon, delta=delta,
                                    sample_rate=sample_rate, steps=steps)
    if epsilon_of(list(prior), delta=delta) >= target_epsilon:
        raise ValueError(f"the prior releases alone spend epsilon "
                         f"{epsilon_of(list(prior), delta=delta):.3f} of {target_epsilon}")
    low, high = 0.05, 1.0
    while epsilon_of([*prior, (high, sample_rate, steps)], delta=delta) > target_epsilon:
        low, high = high, high * 2
        if high > 1e6:
            raise ValueError(f"no noise reaches epsilon {target_epsilon} after {prior}")
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        if epsilon_of([*prior, (mid, sample_rate, steps)], delta=delta) > target_epsilon:
            low = mid
        else:
            high = mid
    return high


def epsilon_of(history: History, *, delta: float) -> float:
    """Epsilon spent by a whole history of DP-SGD training.

    Stretches with the same noise and rate are merged first (the same accounting), and the
    result is cached: a party asks for the same figure before a round (its budget guard) and
    after it (its report).

    >>> epsilon_of([], delta=1e-5)
    0.0
    >>> epsilon_of([(1.0, 0.1, 5), (1.0, 0.1, 7)], delta=1e-5) == epsilon_of(
    ...     [(1.0, 0.1, 12)], delta=1e-5)
    True
    """
    if not history:
        return 0.0
    merged = merge_history([(float(s), float(q), int(n)) for s, q, n in history])
    return _epsilon(tuple(merged), float(delta))


@functools.lru_cache(maxsize=1024)
def _epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """Opacus' ``RDPAccountant.get_epsilon`` at :data:`ORDERS`, each stretch's RDP cached.

    Opacus computes a stretch's RDP as one step's RDP at every order times its steps
    (``compute_rdp``); the one-step RDP is the costly part (about 40 ms), and it is the same
    for every round of a party: only the steps grow. The figures are Opacus' own, bit for bit.
    """
    from opacus.accountants.analysis.rdp import get_privacy_spent

    rdp = sum([_rdp_of_one_step(sigma, q) * steps for sigma, q, steps in history])
    epsilon, _ = get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=delta)
    return float(epsilon)


@functools.lru_cache(maxsize=256)
def _rdp_of_one_step(sigma: float, q: float) -> Any:
    from opacus.accountants.analysis.rdp import compute_rdp

    return compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=list(ORDERS))


def merge_history(history: History) -> History:
    """Combine consecutive stretches with the same noise and sample rate (same accounting).

    >>> merge_history([(1.0, 0.1, 5), (1.0, 0.1, 7), (2.0, 0.1, 1)])
    [(1.0, 0.1, 12), (2.0, 0.1, 1)]
    """
    out: History = []
    for sigma, q, steps in history:
        if out and out[-1][0] == sigma and out[-1][1] == q:
            out[-1] = (sigma, q, out[-1][2] + steps)
        else:
            out.append((sigma, q, steps))
    return out


def flip_probability(*, epsilon: float) -> float:
    """Randomized response on a 0/1 label: flip with this probability for ``epsilon``-label-DP.

    >>> round(flip_probability(epsilon=3.0), 4)
    0.0474
    """
    return 1.0 / (1.0 + math.exp(epsilon))


def randomized_response_epsilon(*, flip: float) -> float:
    """Return the label-DP epsilon of randomized response flipping with probability ``flip``.

    The pure epsilon between any two values of one label (dp-accounting's ``REPLACE_ONE``
    figure for two buckets); it bounds the zero-out (``REPLACE_SPECIAL``) figure, so it holds
    under :data:`NEIGHBOURING` too.

    >>> round(randomized_response_epsilon(flip=flip_probability(epsilon=1.5)), 6)
    1.5
    """
    return math.log((1.0 - flip) / flip)


def embedding_sensitivity(*, clip: float) -> float:
    """L2 sensitivity of one record's clipped embedding under :data:`NEIGHBOURING`.

    Every row is scaled to norm at most ``clip``; adding or removing the record makes its row
    that value or the zero row, a move of at most ``clip`` (replacing the record by another
    would move it by up to ``2 * clip``: not the relation here).

    >>> embedding_sensitivity(clip=1.5)
    1.5
    """
    return float(clip)


def update_sensitivity(*, clip: float, unit: str) -> float:
    """L2 sensitivity of central DP's sum of clipped updates under :data:`NEIGHBOURING`.

    ``unit="client"``: adding or removing a client adds or removes one update of norm at most
    ``clip``. ``unit="record"``: adding or removing one record may move its lender's clipped
    update anywhere within the ball of radius ``clip`` (the update is any function of the
    lender's rows), so by up to ``2 * clip``: the ball's diameter, under add/remove as well.

    >>> update_sensitivity(clip=1.0, unit="client"), update_sensitivity(clip=1.0, unit="record")
    (1.0, 2.0)
    """
    if unit not in ("client", "record"):
        raise ValueError(f"unit must be 'client' or 'record', got {unit!r}")
    return float(clip) if unit == "client" else 2.0 * float(clip)


def release_noise_multiplier(*, target_epsilon: float, delta: float, releases: int) -> float:
    """Gaussian noise (as a multiple of the sensitivity) for ``releases`` releases of one record.

    No amplification by sampling: every release of a record's value is seen by the receiver.

    >>> z = release_noise_multiplier(target_epsilon=3.0, delta=1e-5, releases=4)
    >>> 2.9 < epsilon_of([(z, 1.0, 4)], delta=1e-5) <= 3.0
    True
    """
    return noise_multiplier_for(target_epsilon=target_epsilon, delta=delta, sample_rate=1.0,
                                steps=releases)
