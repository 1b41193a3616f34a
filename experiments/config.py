"""Hydra's schema, derived from the frozen settings dataclasses, and the way back to them.

Hydra cannot override fields of frozen dataclasses, so the schema registered here is a mutable
twin of :class:`~federation.run_settings.RunSettings` (tuples become lists, ``X | None`` becomes
``Optional[X]``). The composed config is type-checked by OmegaConf against the twin, then turned
into the frozen settings by :func:`to_settings`.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from credit_data.errors import ConfigError
from federation.run_settings import RunSettings, build_settings

SCHEMA_NAME = "run_schema"


def _mutable_type(tp: Any) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return mutable_twin(tp)
    if origin is tuple:
        return list[_mutable_type(args[0])]  # type: ignore[misc]
    if origin is dict:
        return dict[args[0], _mutable_type(args[1])]  # type: ignore[misc,valid-type]
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return Optional[_mutable_type(inner[0])]  # noqa: UP045 (OmegaConf needs typing.Optional)
    return tp


@functools.cache
def mutable_twin(cls: type) -> type:
    """Return a non-frozen copy of a settings dataclass that OmegaConf can use as a schema."""
    hints = get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        tp = _mutable_type(hints[f.name])
        if dataclasses.is_dataclass(hints[f.name]):
            default = dataclasses.field(default_factory=mutable_twin(hints[f.name]))
        elif f.default_factory is not dataclasses.MISSING:
            default = dataclasses.field(default_factory=f.default_factory)
        elif isinstance(f.default, tuple):
            default = dataclasses.field(default_factory=functools.partial(list, f.default))
        else:
            default = dataclasses.field(default=f.default)
        specs.append((f.name, tp, default))
    return dataclasses.make_dataclass(cls.__name__, specs)


def to_settings(cfg: DictConfig) -> RunSettings:
    """Turn a composed Hydra config into frozen :class:`RunSettings`.

    Raises
    ------
    ConfigError
        A mandatory value (``???``) was left unset; the message names its key.
    """
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True,
                                           enum_to_str=False)
    except Exception as exc:  # omegaconf raises several types, each naming the key
        raise ConfigError(f"config: {exc}".replace("\n", " ")) from exc
    settings = build_settings(RunSettings, container, "")
    return typing.cast(RunSettings, settings)


def register() -> None:
    """Store the schema in Hydra's ConfigStore; ``conf/config.yaml`` names it first."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=mutable_twin(RunSettings))
