import dataclasses
import enum
from pathlib import Path, PurePath

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from credit_data.errors import ConfigError
from credit_data.settings import Source
from experiments.config import to_settings
from federation.run_settings import RunSettings
from federation.settings import Mode
from models.settings import ModelKind
from privacy.settings import PrivacyMechanism
from tests.conftest import CONF_DIR, compose_config

pytestmark = pytest.mark.unit

GROUPS = {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
          for group in ("data", "federation", "model", "privacy", "experiment")}


def test_the_groups_the_issue_names_exist():
    assert {"synthetic", "uci_credit_card", "fate_default_credit", "csv"} <= set(GROUPS["data"])
    assert {"centralized", "local"} <= set(GROUPS["federation"])
    assert {"logreg", "mlp", "split_mlp"} <= set(GROUPS["model"])
    assert "off" in GROUPS["privacy"]


def _keys_set_by(path: Path, group: str) -> list[str]:
    """The full key of every value an option file sets (``defaults`` and ``hydra`` aside); a
    ``# @package _global_`` file sets keys of the whole config."""
    prefix = "" if path.read_text().startswith("# @package _global_") else f"{group}."
    keys, todo = [], [(prefix.rstrip("."), OmegaConf.load(path))]
    while todo:
        key, node = todo.pop()
        if not OmegaConf.is_dict(node):
            keys.append(key)
            continue
        todo += [(f"{key}.{k}" if key else str(k), node._get_node(k)) for k in node
                 if key or k not in ("defaults", "hydra")]
    return sorted(keys)


def _at(tree: object, key: str) -> object:
    for part in key.split("."):
        tree = tree[part] if isinstance(tree, dict) else getattr(tree, part)
    return tree


def _plain(value: object) -> object:
    """A settings value as the config spells it: an enum's value, a list, a path's text."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize(("group", "option"),
                         [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_group_option_composes_into_frozen_settings(group, option, tmp_path, monkeypatch):
    monkeypatch.setenv("CREDIT_FL_DATA_DIR", str(tmp_path))
    overrides = [f"{group}={option}"]
    if option == "csv":
        overrides += [f"data.parties.{p}.path={tmp_path}/{p}.csv"
                      for p in ("lender", "bureau", "social")]
    cfg = compose_config(overrides)
    settings = to_settings(cfg)
    assert isinstance(settings, RunSettings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 1  # type: ignore[misc]
    # every value the option's file sets reaches the settings, interpolations resolved
    resolved = OmegaConf.to_container(cfg, resolve=True)
    keys = _keys_set_by(CONF_DIR / group / f"{option}.yaml", group)
    assert keys, f"{group}/{option}.yaml sets nothing"
    for key in keys:
        assert _plain(_at(settings, key)) == _at(resolved, key), key
    if group == "data":
        assert settings.data.name == option
    if group == "experiment":
        expected = Mode.vertical if option.endswith("vertical") else Mode.horizontal
        assert settings.federation.mode is expected
    if option.startswith("privacy_sweep"):
        assert settings.references and settings.data.n_customers == 20_000
    if group == "model":
        assert settings.model.kind is ModelKind(option)
    if group == "federation":
        assert settings.federation.mode is Mode(option)


def test_defaults_and_the_keys_later_work_relies_on():
    s = to_settings(compose_config(["seed=5", "data.n_customers=1234", "federation.rounds=7",
                                    "privacy.target_epsilon=2.5", "privacy.delta=1e-6"]))
    assert (s.seed, s.data.n_customers, s.federation.rounds) == (5, 1234, 7)
    assert (s.privacy.target_epsilon, s.privacy.delta) == (2.5, 1e-6)
    # the default run is vertical federation with label DP and DP-SGD, embedding noise off;
    # privacy.target_epsilon is the one budget knob (label DP follows it)
    assert s.data.source is Source.synthetic and s.federation.mode is Mode.vertical
    assert s.privacy.mechanism is PrivacyMechanism.dpsgd and s.privacy.label_epsilon == 2.5
    assert s.privacy.embedding_epsilon is None
    assert to_settings(compose_config([])).privacy.label_epsilon == 3.0
    own = to_settings(compose_config(["privacy.target_epsilon=2", "privacy.label_epsilon=5"]))
    assert (own.privacy.target_epsilon, own.privacy.label_epsilon) == (2.0, 5.0)
    assert s.model.kind is ModelKind.split_mlp and isinstance(s.model.hidden, tuple)
    # every other mode starts without privacy, on the plain MLP
    c = to_settings(compose_config(["federation=centralized"]))
    assert c.privacy.mechanism is PrivacyMechanism.off and c.privacy.label_epsilon is None
    assert c.model.kind is ModelKind.mlp and c.model.hidden == (64, 32)


def test_file_paths_come_from_the_data_dir_variable(monkeypatch):
    monkeypatch.setenv("CREDIT_FL_DATA_DIR", "/some/where")
    s = to_settings(compose_config(["data=uci_credit_card"]))
    assert Path(s.data.parties["bureau"].path) == Path("/some/where/uci_credit_card.csv")
    assert s.data.parties["lender"].categorical == ("SEX", "EDUCATION", "MARRIAGE")


@pytest.mark.parametrize(("override", "key"), [
    ("foo=1", "foo"),
    ("data.n_custmers=10", "n_custmers"),
    ("model.layers=3", "layers"),
    ("seed=abc", "seed"),
    ("data.n_customers=many", "data.n_customers"),
    ("model.kind=forest", "model.kind"),
    ("train.lr=fast", "train.lr"),
    ("verbose=maybe", "verbose"),
], ids=["unknown-top", "unknown-data", "unknown-model",
        "type-seed", "type-n_customers", "type-kind", "type-lr", "type-verbose"])
def test_an_unknown_key_or_a_value_of_the_wrong_type_is_refused_by_name(override, key):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config([override])
    assert key in str(err.value) + str(err.value.__cause__)


def test_an_unset_mandatory_path_names_its_key():
    with pytest.raises(ConfigError, match=r"data\.parties\.lender\.path"):
        to_settings(compose_config(["data=csv"]))


def test_vertical_dpsgd_clips_at_10_whichever_privacy_option_and_horizontal_at_1():
    """The split model's per-record gradients are heavy-tailed; clipping at 1 made training
    drift (docs/vertical.md). The command line still sets it."""
    def clip(overrides):
        return to_settings(compose_config(overrides)).privacy.max_grad_norm
    assert clip([]) == clip(["privacy=dpsgd"]) == 10.0
    assert clip(["privacy.max_grad_norm=2"]) == 2.0
    assert clip(["federation=horizontal", "privacy=dpsgd"]) == 1.0
