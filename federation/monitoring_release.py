"""Whether a deployed node answers a monitoring request, and how: refused, exact or noised.

A monitoring request (``deploy monitor``) asks each node, per column of its own and for its
embedding's norm, for a stability index and the merged bins' counts of its period's rows
against the bins frozen in its bundle (:mod:`fl_client.monitoring_task`). The node decides from
its own config alone, never from the request:

* without its own ``--release-monitoring`` it refuses, naming the flag;
* **under a DP budget** (it caps its epsilon, ``--max-epsilon`` a number, or its lifetime ledger
  holds a spend of the model's run: its rows trained under DP) it noises its counts (Laplace,
  from the OS) with the request's epsilon, charged to its lifetime ledger; a request that
  would take the ledger past the cap is refused, naming it;
* otherwise its exact counts leave, outside any epsilon, and the node's ledger records the
  opt-in it used (as the other opt-ins, :mod:`federation.releases`).

>>> opted = frozenset({Release.monitoring_counts})
>>> print(monitoring_release("bureau", opted=frozenset(), capped=False,
...       trained_under_dp=False, epsilon=1.0, left=None).refused)  # doctest: +ELLIPSIS
bureau: a monitoring request ... only with its own --release-monitoring
>>> monitoring_release("bureau", opted=opted, capped=False, trained_under_dp=False,
...                    epsilon=1.0, left=None)
MonitoringRelease(refused=None, epsilon=None)
>>> monitoring_release("bureau", opted=opted, capped=True, trained_under_dp=False,
...                    epsilon=1.0, left=2.5)
MonitoringRelease(refused=None, epsilon=1.0)

The lender's node also sends the model's section (:func:`model_release`): the figures of its
own scores of the period (score and grade-mix PSI, shares of the grades, AUC, default rates),
exact aggregates of its rows, so under the same opt-in and only outside a DP budget:

>>> model_release("lender", opted=opted, capped=False, trained_under_dp=False) is None
True
>>> print(model_release("lender", opted=opted, capped=True, trained_under_dp=False))
... # doctest: +ELLIPSIS
lender: the model section ... is withheld: this node is under a DP budget ...
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.releases import OPT_IN_FLAGS, Release

__all__ = ["MONITORING_FLAG", "MonitoringRelease", "model_release", "monitoring_release"]

MONITORING_FLAG = OPT_IN_FLAGS[Release.monitoring_counts]
MONITOR_MIN_COUNT = 50
"""A deployed node's own floor (``--monitor-min-count``): the fewest rows any figure it sends
describes. A request's ``monitor.min_count`` may raise it, never lower it: each bin of an index
merged to at least this many rows on both sides, a model section only of a period of at least
this many scored applicants, and a grade's default rate only of a grade holding as many."""
"""The node's opt-in: ``--release-monitoring``."""


@dataclass(frozen=True)
class MonitoringRelease:
    """The node's decision: ``refused`` (why; None: it answers), ``epsilon`` (None: exact)."""

    refused: str | None
    epsilon: float | None


def monitoring_release(party: str, *, opted: frozenset[Release], capped: bool,
                       trained_under_dp: bool, epsilon: float,
                       left: float | None) -> MonitoringRelease:
    """Decide how ``party``'s node answers a monitoring request (see the module doc).

    ``opted``: the releases its own config opts into; ``capped``: it caps its lifetime
    epsilon; ``trained_under_dp``: its ledger holds the model run's spend; ``epsilon``: what
    the request asks a noised release to spend; ``left``: what its lifetime budget has left
    (None: uncapped).
    """
    if Release.monitoring_counts not in opted:
        return MonitoringRelease(
            f"{party}: a monitoring request asks for a stability index and the bins' counts of "
            "your rows per column (purpose monitoring); this node sends them only with its own "
            f"{MONITORING_FLAG}", None)
    if not (capped or trained_under_dp):
        return MonitoringRelease(None, None)
    if not epsilon > 0:
        return MonitoringRelease(f"{party}: monitor.epsilon must be positive to noise this "
                                 f"node's counts, got {epsilon}", None)
    if left is not None and epsilon > left + 1e-9:
        return MonitoringRelease(
            f"{party}: this monitoring request (epsilon {epsilon:g}) would take the node's "
            f"lifetime epsilon past its max-epsilon ({left:.3f} left); refused, nothing "
            "released", None)
    return MonitoringRelease(None, float(epsilon))


def model_release(party: str, *, opted: frozenset[Release], capped: bool,
                  trained_under_dp: bool) -> str | None:
    """Return why the lender's node withholds the model's section (None: it sends it).

    The section is exact aggregates of the lender's scores and outcomes of the period: sent
    under the node's own ``--release-monitoring``, and withheld under a DP budget (it caps its
    epsilon or its rows trained under DP), whose epsilon would not cover them.
    """
    if Release.monitoring_counts not in opted:
        return (f"{party}: the model section of a monitoring request (figures of the lender's "
                f"scores of the period) is sent only with this node's own {MONITORING_FLAG}")
    if capped or trained_under_dp:
        return (f"{party}: the model section (exact figures of the lender's scores and "
                "outcomes of the period) is withheld: this node is under a DP budget (it caps "
                "its epsilon or its rows trained under DP), which no epsilon of these figures "
                "is charged to")
    return None
