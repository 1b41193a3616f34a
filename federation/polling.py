"""How long a deployed component waits before it asks again: quick while busy, slower when idle.

Flower's deployment is pull-based: the ServerApp asks the SuperLink for replies, each SuperNode
asks it for messages, the ServerApp launcher asks it for runs. Every ask is an HTTPS request that
the one SuperLink process answers with a database query (a node's also with a signature check),
and on two cores those asks took as much CPU as the parties' own training (issue 36: at 100,000
customers, the SuperLink used 88 s of CPU in a run where the three party workers used 115 s).

One rule for all of them: wait a fortieth of the time already waited (since the last message
for a node or the launcher, since the messages went out for the server), never less than the
component's own interval, never more than its cap. An answer that comes after a wait of ``t``
seconds is seen at most ``t / 40`` later (2.5%): a training exchange of a few seconds is polled
as before, while a minute-long blinding step or an idle node asks a few times fewer.
"""

from __future__ import annotations

SHARE = 40
"""The wait is at most this fraction's inverse of the time already waited."""


def next_wait(waited: float, base: float, cap: float) -> float:
    """Return the seconds to wait before the next ask, after ``waited`` seconds of waiting.

    >>> next_wait(0.5, base=0.05, cap=0.5)  # a reply expected soon: the base interval
    0.05
    >>> next_wait(8.0, base=0.05, cap=0.5)  # eight seconds waited: a fifth of a second
    0.2
    >>> next_wait(600.0, base=0.2, cap=2.0)  # idle for ten minutes: the cap
    2.0
    >>> next_wait(600.0, base=3.0, cap=2.0)  # a base above the cap stays the base
    3.0
    """
    return max(base, min(cap, waited / SHARE))
