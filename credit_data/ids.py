"""The shape of a party's customer IDs: what to compare when two parties' IDs do not match.

Alignment matches IDs exactly, so ``00007`` at one party and ``7`` at another, or ``ab12`` and
``AB12``, never meet. A party describes its IDs coarsely (kind of characters, lengths, leading
zeros, case) without revealing any of them, and the server compares the descriptions when an
alignment finds no or few shared customers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

SAMPLE = 10_000
"""IDs looked at (the first ones): enough for their shape."""


def id_shape(ids: Iterable[str]) -> dict[str, object]:
    """Describe IDs coarsely: kind, shortest and longest length, leading zeros, case.

    >>> id_shape(["00007", "00012", "00300"])
    {'kind': 'digits', 'min_length': 5, 'max_length': 5, 'leading_zeros': True, 'case': 'none'}
    >>> id_shape(["ab12", "AB13"])["case"]
    'mixed'
    """
    sample = [str(i) for _, i in zip(range(SAMPLE), ids, strict=False)]
    if not sample:
        return {"kind": "none", "min_length": 0, "max_length": 0, "leading_zeros": False,
                "case": "none"}
    digits = all(s.isdigit() for s in sample)
    alnum = all(s.isalnum() for s in sample)
    letters = [c for s in sample for c in s if c.isalpha()]
    upper = any(c.isupper() for c in letters)
    lower = any(c.islower() for c in letters)
    return {"kind": "digits" if digits else "letters and digits" if alnum else "other",
            "min_length": min(map(len, sample)), "max_length": max(map(len, sample)),
            "leading_zeros": any(len(s) > 1 and s.startswith("0") for s in sample),
            "case": ("mixed" if upper and lower else "upper" if upper else "lower" if lower
                     else "none")}


def describe(shape: dict[str, object]) -> str:
    """Say an ID shape in words.

    >>> describe(id_shape(["00007", "00012"]))
    'digits, 5 characters, with leading zeros'
    """
    lo, hi = shape["min_length"], shape["max_length"]
    parts = [str(shape["kind"]), f"{lo} characters" if lo == hi else f"{lo} to {hi} characters"]
    if shape["leading_zeros"]:
        parts.append("with leading zeros")
    if shape["case"] not in ("none",):
        parts.append(f"{shape['case']} case")
    return ", ".join(parts)


def to_json(shape: dict[str, object]) -> str:
    """Serialise for a message."""
    return json.dumps(shape, sort_keys=True)
