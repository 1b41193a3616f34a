"""Command options ``<prefix>.<key>=<value>`` of a command's own settings dataclass.

``credit-fl monitor`` and ``credit-fl rerate`` take their own options (``monitor.act=0.3``,
``rerate.grade_fall=3``) among the run's overrides; :func:`take_options` takes them out, each
value converted to its field's default's type (a number, a flag, or text for a field whose
default is ``None``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from credit_data.errors import ConfigError

T = TypeVar("T")
TRUE = ("1", "true", "yes")


def _value(key: str, text: str, default: Any) -> Any:
    if default is None or isinstance(default, str):
        return text
    if isinstance(default, bool):
        return text.lower() in TRUE
    try:
        return int(text) if isinstance(default, int) else float(text)
    except ValueError as exc:
        raise ConfigError(f"{key}={text}: not a number") from exc


def take_options(args: list[str], prefix: str, settings: type[T]) -> tuple[T, list[str]]:
    """Return the settings the ``<prefix>.*`` arguments give, and the other arguments.

    >>> @dataclasses.dataclass(frozen=True)
    ... class S:
    ...     act: float = 0.25
    ...     bins: int = 10
    ...     out: str | None = None
    >>> take_options(["monitor.bins=5", "seed=1", "monitor.out=x"], "monitor", S)
    (S(act=0.25, bins=5, out='x'), ['seed=1'])
    """
    defaults = {f.name: f.default for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    rest = []
    for arg in args:
        if not arg.startswith(f"{prefix}."):
            rest.append(arg)
            continue
        key, _, text = arg.removeprefix(f"{prefix}.").partition("=")
        if key not in defaults:
            raise ConfigError(f"{prefix}.{key}: not an option (options: "
                              f"{', '.join(f'{prefix}.{k}' for k in sorted(defaults))})")
        values[key] = _value(f"{prefix}.{key}", text, defaults[key])
    return settings(**values), rest
