"""One test per class of bad input: each asserts that the error names the file and the culprit."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from credit_data.errors import ConfigError, DataError
from credit_data.files import load_files
from credit_data.settings import DataSettings, PartySource, Source


def _write(path: Path, frame: pd.DataFrame) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def _lender_frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"id": [f"A{i}" for i in range(n)], "income": rng.normal(size=n),
                         "purpose": rng.choice(["car", "home"], n),
                         "default": (np.arange(n) % 3 == 0).astype(int)})


def _settings(**parties: PartySource) -> DataSettings:
    return DataSettings(name="csv", source=Source.files, id_column="id", label="default",
                        parties=parties)


def _lender(tmp_path: Path, frame: pd.DataFrame | None = None, **kw) -> PartySource:
    path = _write(tmp_path / "lender.csv", _lender_frame() if frame is None else frame)
    kw.setdefault("categorical", ("purpose",))
    return PartySource(path=path, **kw)


def test_good_files_load_with_features_numeric_and_categorical(tmp_path):
    bureau = pd.DataFrame({"id": [f"A{i}" for i in range(0, 60, 2)], "util": np.linspace(0, 1, 30)})
    pop = load_files(_settings(lender=_lender(tmp_path),
                               bureau=PartySource(path=_write(tmp_path / "b.csv", bureau))))
    lender = pop.tables["lender"]
    assert lender.numeric == ("income",) and lender.categorical == ("purpose",)
    assert lender.labels["default"].tolist()[:4] == [1, 0, 0, 1]
    assert pop.tables["bureau"].n_rows == 30 and pop.tables["bureau"].labels is None


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found.*data\.parties\.lender\.path"):
        load_files(_settings(lender=PartySource(path=str(tmp_path / "nope.csv"))))


@pytest.mark.parametrize(("text", "message"), [
    ("", "file is empty"),
    ("id,income,default\n", "file has a header but no rows"),
    ('id,income,default\n1,2,0\n2,"3,1\n3,4,5,6,7\n', "not a readable CSV"),
], ids=["empty", "header-only", "malformed"])
def test_unreadable_file_content(tmp_path, text, message):
    (tmp_path / "raw.csv").write_text(text)
    with pytest.raises(DataError, match=rf"raw\.csv: {message}"):
        load_files(_settings(lender=PartySource(path=str(tmp_path / "raw.csv"))))


def test_missing_id_column(tmp_path):
    frame = _lender_frame().rename(columns={"id": "customer"})
    with pytest.raises(DataError, match=r"lender\.csv: ID column 'id' is missing"):
        load_files(_settings(lender=_lender(tmp_path, frame)))


def test_duplicate_ids(tmp_path):
    frame = _lender_frame()
    frame.loc[5, "id"] = "A4"
    with pytest.raises(DataError, match=r"lender\.csv: column 'id' has 1 duplicate IDs.*A4"):
        load_files(_settings(lender=_lender(tmp_path, frame)))


def test_empty_id(tmp_path):
    frame = _lender_frame()
    frame.loc[3, "id"] = None
    with pytest.raises(DataError, match=r"lender\.csv: column 'id' has 1 empty IDs"):
        load_files(_settings(lender=_lender(tmp_path, frame)))


def test_undeclared_non_numeric_column(tmp_path):
    with pytest.raises(DataError, match=r"lender\.csv: column 'purpose' holds non-numeric values"
                                        r".*data\.parties\.lender\.categorical"):
        load_files(_settings(lender=_lender(tmp_path, categorical=())))


def test_stray_text_in_a_numeric_column(tmp_path):
    frame = _lender_frame().astype({"income": object})
    frame.loc[7, "income"] = "n/a?"
    with pytest.raises(DataError, match=r"column 'income' holds non-numeric values \['n/a\?'\]"):
        load_files(_settings(lender=_lender(tmp_path, frame)))


@pytest.mark.parametrize("bad", [2, 0.5, -1, None])
def test_label_not_zero_one(tmp_path, bad):
    frame = _lender_frame().astype({"default": object})
    frame.loc[2, "default"] = bad
    with pytest.raises(DataError, match=r"lender\.csv: label column 'default' must hold only 0 "
                                        r"and 1"):
        load_files(_settings(lender=_lender(tmp_path, frame)))


def test_missing_label_column(tmp_path):
    frame = _lender_frame().drop(columns="default")
    with pytest.raises(DataError, match=r"lender\.csv: label column 'default' \(data\.label\)"):
        load_files(_settings(lender=_lender(tmp_path, frame)))


def test_all_missing_column(tmp_path):
    frame = _lender_frame()
    frame["empty"] = np.nan
    with pytest.raises(DataError, match=r"lender\.csv: column 'empty' is entirely missing"):
        load_files(_settings(lender=_lender(tmp_path, frame)))


def test_infinite_values(tmp_path):
    frame = _lender_frame()
    frame.loc[1, "income"] = np.inf
    with pytest.raises(DataError, match=r"column 'income' holds infinite values"):
        load_files(_settings(lender=_lender(tmp_path, frame)))


def test_feature_declared_by_two_parties(tmp_path):
    frame = _lender_frame()
    path = _write(tmp_path / "all.csv", frame)
    with pytest.raises(DataError, match=r"feature 'income' of .*all\.csv is declared by two "
                                        r"parties, 'lender' and 'bureau'"):
        load_files(_settings(
            lender=PartySource(path=path, features=("income", "purpose"),
                               categorical=("purpose",)),
            bureau=PartySource(path=path, features=("income",))))


def test_same_column_name_in_different_files_is_allowed(tmp_path):
    other = pd.DataFrame({"id": ["A1", "A2"], "income": [1.0, 2.0]})
    pop = load_files(_settings(lender=_lender(tmp_path),
                               bureau=PartySource(path=_write(tmp_path / "b.csv", other))))
    assert pop.tables["bureau"].features == ("income",)


def test_declared_feature_missing_from_file(tmp_path):
    with pytest.raises(DataError, match=r"lender\.csv: declared feature column\(s\) \['salary'\]"):
        load_files(_settings(lender=_lender(tmp_path, features=("income", "salary"),
                                            categorical=())))


def test_unknown_party_and_missing_lender_name_the_key(tmp_path):
    path = _write(tmp_path / "x.csv", _lender_frame())
    with pytest.raises(ConfigError, match=r"data\.parties\.insurer: unknown party"):
        load_files(_settings(lender=PartySource(path=path), insurer=PartySource(path=path)))
    with pytest.raises(ConfigError, match=r"data\.parties\.lender is required"):
        load_files(_settings(bureau=PartySource(path=path)))
