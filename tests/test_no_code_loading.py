"""Issue 29, point 1: nothing read from a run directory runs code.

A checkpoint (``resume=``) and a ServerApp's outcome are read with torch's restricted
unpickler and an allow-list of this project's plain classes (:mod:`federation.safe_files`). A
planted pickle is refused, naming the file, and its payload never runs: a marker file it would
create is never there. Real checkpoints and outcomes still come back whole.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from credit_data.errors import (
    BudgetRefusal,
    ConfigError,
    CreditFLError,
    DeployError,
    FederationError,
    ReportedError,
)
from credit_data.federated_scaling import Schema
from deployment.run_config import OUTCOME
from experiments.deploy import federation as deploy
from experiments.deploy import scoring_service as served
from federation.safe_files import load_objects, save_objects
from fl_server.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from fl_server.horizontal_rounds import FederationOutcome
from fl_server.outcome_file import read_outcome, write_outcome
from fl_server.scoring_rounds import ScoringOutcome
from fl_server.screening import Exclusion
from fl_server.settings import vertical_server_settings
from fl_server.vertical_rounds import VerticalOutcome, _checkpoint, _resume
from models.metrics import ScoreSummary
from privacy.ledger import PartySpend, PrivacyLedger

pytestmark = pytest.mark.unit


class _Payload:
    """Unpickling this creates ``path``: code that runs when a pickle is read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _planted(kind: str, marker: Path) -> bytes:
    if kind == "pickle":
        return pickle.dumps({"round": 1, "state": _Payload(marker)})
    buffer = io.BytesIO()  # a torch file is a zip around a pickle: the same payload inside
    torch.save({"round": 1, "state": _Payload(marker)}, buffer)
    return buffer.getvalue()


def test_the_payload_runs_when_unpickled(tmp_path):
    # the planted files below are live: reading one the old way creates the marker
    marker = tmp_path / "ran"
    pickle.loads(_planted("pickle", marker))
    assert marker.exists()
    marker.unlink()
    (tmp_path / "planted.pt").write_bytes(_planted("torch", marker))
    torch.load(tmp_path / "planted.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch"])
def test_a_planted_checkpoint_is_refused_and_nothing_runs(tmp_path, kind):
    marker = tmp_path / "ran"
    earlier = tmp_path / "run-1"
    earlier.mkdir()
    (earlier / CHECKPOINT).write_bytes(_planted(kind, marker))
    with pytest.raises(ConfigError, match=f"resume={earlier}: {CHECKPOINT}") as refused:
        load_checkpoint(earlier)
    assert str(earlier / CHECKPOINT) in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch"])
def test_a_planted_outcome_is_refused_by_the_command_line_and_nothing_runs(
        tmp_path, monkeypatch, kind):
    marker = tmp_path / "ran"
    run_dir = tmp_path / "run"
    (run_dir / OUTCOME).parent.mkdir(parents=True)
    (run_dir / OUTCOME).write_bytes(_planted(kind, marker))
    # what deploy run and deploy score read, without a federation: flwr run does nothing
    monkeypatch.setattr(deploy, "flwr_bin", lambda: "flwr")
    monkeypatch.setattr(deploy.subprocess, "run", lambda *a, **k: None)
    fed = types.SimpleNamespace(env=lambda: {})
    with pytest.raises(DeployError, match="outcome.pt") as refused:
        deploy._flwr_run(fed, run_dir, {}, timeout=10)  # type: ignore[arg-type]
    assert "refused" in str(refused.value)
    with pytest.raises(DeployError, match="outcome.pt"):  # what deploy serve/score poll
        served._outcome(run_dir)
    with pytest.raises(DeployError, match=str(run_dir / OUTCOME)):
        read_outcome(run_dir / OUTCOME)
    assert not marker.exists()
    assert deploy.subprocess is subprocess  # the patch was on the module's own import


def _summary(seed: int) -> ScoreSummary:
    rng = np.random.default_rng(seed)
    return ScoreSummary.of(rng.integers(0, 2, 200), rng.random(200))


def _ledger(*mechanisms: str) -> PrivacyLedger:
    ledger = PrivacyLedger(*mechanisms)
    ledger.record(1, "lender-0", PartySpend(0.8, 1e-5, mechanisms[0], 1.1, 0.01, 100, "rdp",
                                            history=[[1.1, 0.01, 100.0]]))
    ledger.refuse(2, "lender-1", "lender-1 refuses round 2: it would spend epsilon 3.101")
    return ledger


def _same_summary(a: ScoreSummary, b: ScoreSummary) -> None:
    assert type(b) is ScoreSummary
    for f in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
    assert a.metrics() == b.metrics()


def test_a_horizontal_outcome_comes_back_whole(tmp_path):
    schema = Schema(("income",), ("region",), (1.5,), (0.5,), ("income",),
                    {"region": ("north", "south")}, {"income": [0.1, 0.9]})
    state = {"net.0.weight": torch.arange(6.0).reshape(2, 3), "net.0.bias": torch.zeros(2)}
    outcome = FederationOutcome(
        state=state, schema=schema,
        history=[{"round": 1, "clients": 2, "val_auc": np.float64(0.71), "epsilon": 0.8}],
        ledger=_ledger("dpsgd"), exclusions=[Exclusion(2, "lender-1", "refused", True)],
        lender_evaluation={"lender-0": {"auc": 0.7}},
        reports={"lender-0": ({"test": _summary(0)}, {"rows": 200})},
        completed_rounds=2, stopped_after=2, model_id="m-1")
    write_outcome(tmp_path / OUTCOME, {"outcome": outcome})
    back = read_outcome(tmp_path / OUTCOME)["outcome"]
    assert type(back) is FederationOutcome
    assert back.schema == schema and back.exclusions == outcome.exclusions
    assert back.state.keys() == state.keys()
    assert all(torch.equal(back.state[k], v) for k, v in state.items())
    assert back.history == outcome.history and back.ledger.summary() == outcome.ledger.summary()
    _same_summary(outcome.reports["lender-0"][0]["test"], back.reports["lender-0"][0]["test"])
    assert back.reports["lender-0"][1] == {"rows": 200}
    assert (back.completed_rounds, back.stopped_after, back.model_id) == (2, 2, "m-1")


def test_a_vertical_and_a_scoring_outcome_come_back_whole(tmp_path):
    vertical = VerticalOutcome(
        communication={"bureau": {"messages_in": 3, "bytes_in": 10, "messages_out": 3,
                                  "bytes_out": 12}},
        parties={"lender": 1, "bureau": 2}, history=[{"epoch": 1, "val_auc": 0.7}],
        ledger=_ledger("label_dp", "dpsgd"), final={"test_auc": 0.72},
        report={"test": _summary(1)}, epochs=3, resumed_after=1, model_id="m-2")
    write_outcome(tmp_path / "v.pt", {"outcome": vertical})
    back = read_outcome(tmp_path / "v.pt")["outcome"]
    assert type(back) is VerticalOutcome
    assert back.communication == vertical.communication and back.final == vertical.final
    assert back.ledger.summary() == vertical.ledger.summary()
    assert (back.epochs, back.resumed_after, back.history) == (3, 1, vertical.history)
    _same_summary(vertical.report["test"], back.report["test"])
    scoring = ScoringOutcome(model_id="m-2", parties=["lender", "bureau"], applicants=40,
                             lender={"grades": {"A": 10, "B": 30}}, seconds={"score": 0.5})
    write_outcome(tmp_path / "s.pt", {"outcome": scoring})
    assert read_outcome(tmp_path / "s.pt")["outcome"] == scoring


def test_a_foreign_error_comes_back_as_a_project_error_naming_it(tmp_path, monkeypatch):
    write_outcome(tmp_path / "e.pt", {"error": ValueError("column 'income' is all missing")})
    found = read_outcome(tmp_path / "e.pt")
    error = found["error"]
    assert type(error) is ReportedError and isinstance(error, CreditFLError)
    assert str(error) == "ValueError: column 'income' is all missing"
    assert error.original == "ValueError"
    # as deploy run raises it: a project error, which the command line reports with exit 2
    run_dir = tmp_path / "run"
    write_outcome(run_dir / OUTCOME, found)
    monkeypatch.setattr(deploy, "flwr_bin", lambda: "flwr")
    monkeypatch.setattr(deploy.subprocess, "run", lambda *a, **k: None)
    with pytest.raises(ReportedError, match="ValueError: column 'income' is all missing"):
        deploy._flwr_run(types.SimpleNamespace(env=lambda: {}), run_dir, {}, 10)  # type: ignore[arg-type]


class _OwnError(FederationError):
    """A project error class the allow-list does not name (defined in a test)."""


@pytest.mark.parametrize(("error", "kind", "text"), [
    (FederationError("round 2: 1 usable replies"), FederationError, "round 2: 1 usable replies"),
    (BudgetRefusal("bureau: past this node's max_epsilon 3.0"), BudgetRefusal,
     "bureau: past this node's max_epsilon 3.0"),
    (_OwnError("lender-1 left"), FederationError, "lender-1 left"),  # the nearest allowed
    (KeyboardInterrupt(), ReportedError, "KeyboardInterrupt"),
    (RuntimeError("boom", 3), ReportedError, "RuntimeError: ('boom', 3)"),
])
def test_errors_keep_a_project_class_and_their_message(tmp_path, error, kind, text):
    save_objects(tmp_path / "e.pt", {"error": error})
    back = load_objects(tmp_path / "e.pt", "an outcome")["error"]
    assert type(back) is kind and str(back) == text


@dataclasses.dataclass
class _Unlisted:
    rows: int


def test_a_class_outside_the_allow_list_is_never_written(tmp_path):
    with pytest.raises(TypeError, match="_Unlisted"):
        save_objects(tmp_path / "x.pt", {"state": _Unlisted(3)})
    assert not any(tmp_path.iterdir())
    save_objects(tmp_path / "x.pt", {"state": _Unlisted(3)}, allowed=[_Unlisted])  # named
    assert load_objects(tmp_path / "x.pt", "a test", allowed=[_Unlisted]) == {
        "state": _Unlisted(3)}
    with pytest.raises(ConfigError, match="a test: .*x.pt .*refused"):  # but only where named
        load_objects(tmp_path / "x.pt", "a test")


def test_a_horizontal_checkpoint_round_trips(tmp_path):
    state = {"w": torch.ones(2, 2)}
    content = {"round": 2, "state": state,
               "strategy": {"current_arrays": {"w": np.ones((2, 2), np.float32)},
                            "m_t": {"w": np.zeros((2, 2), np.float32)},
                            "accountant": {"history": [(1.1, 0.01, 100)], "mechanism": "rdp"}},
               "ledger": _ledger("dpsgd").state_dict(),
               "history": [{"round": 1, "train_loss": np.float64(0.5)}],
               "exclusions": [dataclasses.asdict(Exclusion(1, "lender-1", "timeout"))],
               "schema": "{}", "settings": "ServerSettings(...)", "central": None}
    save_checkpoint(tmp_path, content)
    back = load_checkpoint(tmp_path)
    assert torch.equal(back["state"]["w"], state["w"])
    np.testing.assert_array_equal(back["strategy"]["current_arrays"]["w"], np.ones((2, 2)))
    assert back["strategy"]["accountant"] == content["strategy"]["accountant"]
    ledger = PrivacyLedger("dpsgd")
    ledger.load_state_dict(back["ledger"])
    assert ledger.summary() == _ledger("dpsgd").summary()
    assert {k: v for k, v in back.items() if k not in ("state", "strategy")} == {
        k: v for k, v in content.items() if k not in ("state", "strategy")}


def test_a_vertical_checkpoint_resumes_with_its_outcome_and_nothing_per_record(tmp_path):
    settings, _ = deploy.compose_settings(["federation=vertical",
                                           "federation.parties=[lender,bureau]"])
    s = vertical_server_settings(settings, ("lender", "bureau"), tmp_path / "run-1")
    out = VerticalOutcome(parties={"lender": 1, "bureau": 2}, history=[{"epoch": 1}],
                          ledger=PrivacyLedger(*s.privacy.vertical_mechanisms()),
                          report={"val": _summary(2)}, warnings=["few rows"], epochs=1)
    _checkpoint(out, s, 1, [3, 5])
    # issue 30: the last gradients stay with the lender (it seals them again on resume)
    assert "grads" not in load_checkpoint(tmp_path / "run-1")
    resumed = dataclasses.replace(s, resume_dir=str(tmp_path / "run-1"))
    again = VerticalOutcome(ledger=PrivacyLedger(*s.privacy.vertical_mechanisms()))
    epoch, prev = _resume(again, resumed)
    assert (epoch, prev, again.resumed_after) == (1, [3, 5], 1)
    assert again.history == out.history and again.warnings == ["few rows"]
    _same_summary(out.report["val"], again.report["val"])


PACKAGES = ("credit_data", "models", "privacy", "federation", "fl_server", "fl_client",
            "experiments", "deployment")


def test_no_source_reads_a_file_or_message_in_a_format_that_runs_code():
    # torch.load only with weights_only=True, no unpickling, no numpy object arrays
    root = Path(__file__).resolve().parents[1]
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if (("torch.load(" in code and "weights_only=True" not in code)
                        or "allow_pickle=True" in code or "weights_only=False" in code
                        or any(f"{m}.load" in code for m in ("pickle", "joblib", "dill", "marshal",
                                                             "shelve", "cloudpickle"))
                        or "Unpickler" in code):
                    found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert found == []


def test_the_central_dp_wrappers_arrays_are_kept_as_tensors(tmp_path):
    # the DP wrapper keeps the last global model as a Flower ArrayRecord: not a class a
    # checkpoint may hold, so it is kept as its tensors and rebuilt on resume
    from flwr.app import ArrayRecord

    from fl_server.strategies import load_strategy_state, strategy_state

    arrays = ArrayRecord({"w": torch.arange(4.0).reshape(2, 2), "b": torch.ones(2)})
    save_checkpoint(tmp_path, {"strategy": strategy_state(
        types.SimpleNamespace(current_arrays=arrays))})  # type: ignore[arg-type]
    resumed = types.SimpleNamespace(current_arrays=ArrayRecord())
    load_strategy_state(resumed, load_checkpoint(tmp_path)["strategy"])  # type: ignore[arg-type]
    back = resumed.current_arrays
    assert isinstance(back, ArrayRecord) and list(back) == ["w", "b"]
    assert all(torch.equal(back.to_torch_state_dict()[k], v)
               for k, v in arrays.to_torch_state_dict().items())
