"""The one way from Hydra-style overrides to validated, frozen settings.

``conf/`` is the single source of every default: the settings dataclasses are the schema's
base, and each config group (a federation mode picks its model and privacy) sets the rest.
:func:`settings` composes it with Hydra's compose API, as ``credit-fl run`` does, so a
settings object built in Python equals the command line's. :func:`settings_of` starts from a
finished run's own config (its ``results.json``) for scoring.

Hydra cannot override fields of frozen dataclasses, so the schema registered here is a mutable
twin of :class:`~federation.run_settings.RunSettings` (tuples become lists, ``X | None`` becomes
``Optional[X]``). The composed config is type-checked by OmegaConf against the twin, turned
into the frozen settings by :func:`to_settings`, and checked by
:func:`credit_fl.checks.check_settings` (:func:`from_config`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from credit_data.errors import ConfigError
from credit_fl.checks import check_settings
from federation.run_settings import RunSettings, build_settings

SCHEMA_NAME = "run_schema"
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CHANGEABLE = ("data", "scoring", "federation.parties", "federation.psi_cache", "verbose",
              "federation.round_timeout", "federation.connect_timeout", "blacklists.on_hit",
              "blacklists.max_queries", "engine", "explain")
"""What may differ from a run's own config when scoring with its model."""


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


def register() -> None:
    """Store the schema in Hydra's ConfigStore; ``conf/config.yaml`` names it first."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=mutable_twin(RunSettings))


def to_settings(cfg: DictConfig) -> RunSettings:
    """Turn a composed Hydra config into frozen :class:`RunSettings` (types checked only).

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


def from_config(cfg: DictConfig) -> RunSettings:
    """Turn a composed config into settings and run every check of its mode.

    ``credit-fl run`` calls this on the config Hydra composed; :func:`settings` on its own.
    """
    settings = to_settings(cfg)
    check_settings(settings)
    return settings


def _failure(exc: Exception) -> ConfigError:
    cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
    return ConfigError(f"config: {exc}{cause}".replace("\n", " "))


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra-style overrides, as ``credit-fl run`` does.

    Raises
    ------
    ConfigError
        An unknown key, group option or a value of the wrong type; the message names it.
    """
    register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise _failure(exc) from exc


def settings(*overrides: str) -> RunSettings:
    """Return the validated settings of ``credit-fl run <overrides>``.

    >>> s = settings("federation=horizontal", "federation.rounds=3")
    >>> s.federation.mode.value, s.federation.rounds, s.model.kind.value
    ('horizontal', 3, 'mlp')
    >>> settings().model.kind.value, settings().privacy.max_grad_norm  # the vertical default
    ('split_mlp', 10.0)
    >>> settings("federation=vertical", "model=mlp")
    Traceback (most recent call last):
    ...
    credit_data.errors.ConfigError: model=mlp: vertical federation trains a split model ...
    """
    return from_config(compose_config(overrides))


def run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Return a finished run's config (its results.json) with scoring overrides applied.

    Only the keys of :data:`CHANGEABLE` may change: the model was trained with the rest. A
    config group (``data=csv``) is composed as a run would compose it.

    Raises
    ------
    ConfigError
        No run there, or an override that is malformed, unknown or not changeable, named.
    """
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no results.json there; give the directory of a finished "
                          "training run")
    try:
        base = json.loads(path.read_text())["config"]
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: not a run's results ({exc})") from exc
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"'{override}': expected key=value")
        key = override.split("=", 1)[0].lstrip("+~")
        if not any(key == c or key.startswith(c + ".") for c in CHANGEABLE):
            raise ConfigError(f"'{key}' cannot change at scoring: the model was trained with it; "
                              f"only {', '.join(CHANGEABLE)} may")
    groups = [o for o in overrides if "." not in o.split("=", 1)[0]
              and o.split("=", 1)[0].lstrip("+~") not in ("verbose", "engine")]
    dotted = [o for o in overrides if o not in groups]
    base["resume"] = None  # a scoring request continues nothing
    if groups:  # data=csv and the like: compose the group as a run would
        composed = compose_config(groups + [o for o in dotted if o.startswith("data.")])
        base["data"] = OmegaConf.to_container(composed.data, resolve=True)
    schema = OmegaConf.structured(mutable_twin(RunSettings))
    try:
        cfg = OmegaConf.merge(schema, base, OmegaConf.from_dotlist(dotted))
    except Exception as exc:  # omegaconf names the key and the expected type
        raise ConfigError(f"config: {exc}".replace("\n", " ")) from exc
    return typing.cast(DictConfig, cfg)


def settings_of(run_dir: str | Path, *overrides: str) -> RunSettings:
    """Return the settings a finished run was trained with, scoring overrides applied.

    ``settings_of(run, "data=csv", "data.parties.lender.path=new.csv")`` scores new applicants
    with the model of ``run`` (``credit-fl score`` reads its settings this way).
    """
    return to_settings(run_config(Path(run_dir), overrides))


def config_of(run: RunSettings) -> dict[str, Any]:
    """Return the settings as the plain config ``results.json`` keeps (lists, enum values).

    >>> config_of(settings("federation=local"))["federation"]["parties"]
    ['lender']
    """
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return typing.cast(dict[str, Any], plain(run))
