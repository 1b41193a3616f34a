"""The Python front door's settings and frames (issue 31): no training, no engine.

``credit_fl.settings`` must give exactly what ``credit-fl run`` composes, mode by mode, and
DataFrames must be refused exactly as the same rows in CSV files are.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

import credit_fl
from credit_data.errors import ConfigError, DataError
from credit_data.files import load_files, load_frames
from credit_data.settings import DataSettings, PartySource, Source
from credit_fl.config import config_of, to_settings
from federation.run_settings import RunSettings
from models.settings import Criterion, ModelKind
from privacy.settings import PrivacyMechanism

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
MODES = ["vertical", "horizontal", "centralized", "local"]


def _cli_settings(overrides: list[str]) -> subprocess.Popen[str]:
    """Start ``credit-fl run <overrides> --cfg job --resolve``: Hydra prints what it composed."""
    return subprocess.Popen([sys.executable, "-m", "experiments.cli", "run", *overrides,
                             "--cfg", "job", "--resolve"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_python_settings_equal_what_the_command_line_composes_for_each_mode():
    # Prepare: the command line composes each mode (and the bare default) in its own process
    cases = [[]] + [[f"federation={mode}", "seed=3"] for mode in MODES]
    started = [_cli_settings(overrides) for overrides in cases]
    for overrides, process in zip(cases, started, strict=True):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        # Execute: the same overrides through the Python front door
        python = credit_fl.settings(*overrides)
        # Assert: the same frozen settings, and the same plain config in results.json
        cli = to_settings(OmegaConf.create(yaml.safe_load(out)))
        assert python == cli, overrides
        assert config_of(python) == yaml.safe_load(out)


def test_the_python_default_is_the_command_lines_vertical_model_not_the_dataclass_base():
    s = credit_fl.settings()
    # what conf/federation/vertical.yaml and conf/privacy/label_dp_dpsgd.yaml say
    assert s.federation.mode.value == "vertical" and s.model.kind is ModelKind.split_mlp
    assert s.privacy.mechanism is PrivacyMechanism.dpsgd and s.privacy.label_epsilon == 3.0
    assert s.privacy.max_grad_norm == 10.0 and s.train.criterion is Criterion.auc
    # the dataclasses alone are the schema's base, which the config groups complete
    assert RunSettings().model.kind is ModelKind.mlp and s != RunSettings()
    h = credit_fl.settings("federation=horizontal")
    assert h.privacy.mechanism is PrivacyMechanism.off and h.model.kind is ModelKind.mlp


@pytest.mark.parametrize(("overrides", "message"), [
    (["federation=vertical", "model=mlp"], r"model=mlp: vertical federation trains a split"),
    (["federation=horizontal", "privacy=dpsgd", "federation.strategy=fedprox"],
     r"federation.strategy=fedprox with privacy=dpsgd"),
    (["federation=centralized", "privacy=dpsgd"], r"privacy=dpsgd needs a federated mode"),
    (["audit.fpr=2"], r"audit.fpr"),
    (["nonsense=1"], r"nonsense"),
    (["data.n_customers=many"], r"data.n_customers"),
], ids=["vertical-model", "horizontal-fedprox", "baseline-privacy", "audit", "unknown-key",
        "wrong-type"])
def test_settings_run_every_check_of_the_runners_and_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        credit_fl.settings(*overrides)


def test_settings_of_a_run_takes_its_config_and_refuses_what_the_model_fixed(tmp_path):
    # Prepare: a run directory as credit-fl run leaves it (results.json's config)
    import json

    trained = credit_fl.settings("federation=local", "seed=7")
    (tmp_path / "results.json").write_text(json.dumps({"config": config_of(trained)}))
    # Execute
    again = credit_fl.settings_of(tmp_path, "scoring.rows=test")
    # Assert: the run's own settings, the scoring override applied; the model's keys refused
    assert dataclasses.replace(again, scoring=trained.scoring) == trained
    assert again.scoring.rows.value == "test"
    with pytest.raises(ConfigError, match=r"'model.hidden' cannot change at scoring"):
        credit_fl.settings_of(tmp_path, "model.hidden=[4]")
    with pytest.raises(ConfigError, match=r"no results.json there"):
        credit_fl.settings_of(tmp_path / "nowhere")


# --- DataFrames are validated as CSV files are ------------------------------------------------
def _lender() -> pd.DataFrame:
    return pd.DataFrame({"id": ["A1", "A2", "A3", "A4", "A5", "A6"],
                         "income": [10.0, 20.0, np.nan, 40.0, 50.0, 60.0],
                         "purpose": ["car", "home", "car", "car", "home", "car"],
                         "default": [0, 1, 0, 0, 1, 0]})


def _bad(edit):
    frame = _lender()
    edit(frame)
    return frame


BAD_FRAMES = {
    "no-id-column": _lender().drop(columns="id"),
    "duplicate-ids": _bad(lambda f: f.__setitem__("id", ["A1", "A2", "A2", "A4", "A5", "A6"])),
    "text-not-declared": _bad(lambda f: f.__setitem__("income", ["x", 20, 30, 40, 50, 60])),
    "label-not-binary": _bad(lambda f: f.__setitem__("default", [0, 1, 2, 0, 1, 0])),
    "label-one-class": _bad(lambda f: f.__setitem__("default", 0)),
    "label-missing": _lender().drop(columns="default"),
    "column-all-missing": _bad(lambda f: f.__setitem__("income", np.nan)),
    "infinite": _bad(lambda f: f.__setitem__("income", [1.0, np.inf, 3, 4, 5, 6])),
}


def _settings(source: PartySource) -> DataSettings:
    return DataSettings(name="csv", source=Source.files, id_column="id", label="default",
                        parties={"lender": source})


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_a_bad_frame_gets_the_message_its_csv_file_gets(case, tmp_path):
    # Prepare: the same rows as a CSV file and as a DataFrame
    path = tmp_path / "lender.csv"
    BAD_FRAMES[case].to_csv(path, index=False)
    declared = PartySource(path=str(path), categorical=("purpose",))
    # Execute
    with pytest.raises(DataError) as from_file:
        load_files(_settings(declared))
    with pytest.raises(DataError) as from_frame:
        load_frames({"lender": BAD_FRAMES[case]}, _settings(declared))
    # Assert: one message, naming the file or the frame
    assert str(from_file.value).startswith(f"{path}: ")
    expected = str(from_file.value).replace(str(path), "frames['lender']")
    assert str(from_frame.value) == expected.replace("the file has", "the frame has")


def test_an_empty_id_is_named_by_its_line_in_a_file_and_its_position_in_a_frame(tmp_path):
    frame = _bad(lambda f: f.__setitem__("id", ["A1", "A2", " ", "A4", "A5", "A6"]))
    path = tmp_path / "lender.csv"
    frame.to_csv(path, index=False)
    settings = _settings(PartySource(path=str(path), categorical=("purpose",)))
    with pytest.raises(DataError, match=r"lender\.csv: column 'id' has 1 empty IDs \(first at "
                                        r"row 4\)"):
        load_files(settings)
    with pytest.raises(DataError, match=r"frames\['lender'\]: column 'id' has 1 empty IDs "
                                        r"\(first at row 2\)"):
        load_frames({"lender": frame}, settings)


def test_good_frames_give_the_tables_their_csv_files_give(tmp_path):
    # Prepare: a lender and a bureau, as files and as frames (the ID as a column, or the index)
    bureau = pd.DataFrame({"id": ["A2", "A3", "B9"], "score": [700.0, 650.0, 600.0]})
    _lender().to_csv(tmp_path / "lender.csv", index=False)
    bureau.to_csv(tmp_path / "bureau.csv", index=False)
    files = DataSettings(name="csv", source=Source.files, id_column="id", label="default",
                         parties={"lender": PartySource(str(tmp_path / "lender.csv"),
                                                        categorical=("purpose",)),
                                  "bureau": PartySource(str(tmp_path / "bureau.csv"))})
    # Execute: the frames declare the text column by its type
    lender = _lender().astype({"purpose": "category"})
    from_frames = load_frames({"lender": lender, "bureau": bureau.set_index("id")}, files)
    from_files = load_files(files)
    # Assert
    for party in ("lender", "bureau"):
        a, b = from_frames.tables[party], from_files.tables[party]
        assert (a.numeric, a.categorical) == (b.numeric, b.categorical)
        assert a.fingerprint() == b.fingerprint()
    assert from_frames.tables["lender"].labels.equals(from_files.tables["lender"].labels)
    assert from_frames.tables["lender"].source == "frames['lender']"


@pytest.mark.parametrize(("frames", "error", "message"), [
    ({}, ConfigError, r"frames is empty"),
    ({"bureau": pd.DataFrame({"id": ["A"], "x": [1.0]})}, ConfigError,
     r"frames\['lender'\] is required"),
    ({"lender": _lender(), "insurer": _lender()}, ConfigError,
     r"frames\['insurer'\]: unknown party"),
    ({"lender": _lender().to_dict()}, ConfigError, r"frames\['lender'\]: expected a pandas "
                                                   r"DataFrame, got dict"),
    ({"lender": _lender().iloc[:0]}, DataError, r"frames\['lender'\]: frame has columns but "
                                                r"no rows"),
], ids=["none", "no-lender", "unknown-party", "not-a-frame", "no-rows"])
def test_what_only_frames_can_get_wrong_is_named(frames, error, message):
    settings = DataSettings(id_column="id", label="default")
    with pytest.raises(error, match=message):
        load_frames(frames, settings)
