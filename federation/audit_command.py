"""``credit-fl audit``: ``verify`` audit logs, or ``report`` the data-usage record built on them.

``verify`` is :mod:`federation.audit_log`'s, ``report`` :mod:`federation.usage_report`'s; a
dispatcher of its own, so that the log and the report built on it import one way.
"""

from __future__ import annotations

import sys

from federation.audit_log import main as verify
from federation.usage_report import main as report


def main(argv: list[str] | None = None) -> int:
    """``credit-fl audit verify <file> ...`` or ``credit-fl audit report <logs ...>``."""
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["report"]:
        return report(given[1:])
    return verify(given)


if __name__ == "__main__":
    sys.exit(main())
