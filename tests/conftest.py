"""Shared helpers: composing the real Hydra config, running experiments, finding shared data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from experiments.config import register

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED_DATA = Path(os.environ.get("CREDIT_FL_DATA_DIR", REPO.parent / "shared" / "data")).resolve()

register()


@pytest.fixture(scope="session", autouse=True)
def psi_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parties' PSI cache of every test run, apart from the repository's ``outputs/``."""
    path = tmp_path_factory.mktemp("psi-cache")
    os.environ["CREDIT_FL_PSI_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated parties' master keys of every test run, apart from ``outputs/``."""
    path = tmp_path_factory.mktemp("node-keys")
    os.environ["CREDIT_FL_KEY_DIR"] = str(path)
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark doctests as unit tests; leave the full-size runs out under CI (``CI=true``) unless
    ``RUN_SLOW=1`` asks for them.

    Each ``slow`` test has a smaller version that always runs; ``make test-slow`` runs the
    full-size ones.
    """
    for item in items:  # doctests are unit tests (``make test-unit``)
        if isinstance(item, pytest.DoctestItem):
            item.add_marker(pytest.mark.unit)
    if os.environ.get("CI", "").lower() not in ("1", "true") or os.environ.get("RUN_SLOW"):
        return
    skip = pytest.mark.skip(reason="full-size run left out under CI=true (RUN_SLOW=1 runs it); "
                                   "its smaller version runs")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def shared_ray_instance():
    """Keep one Ray instance for the whole session.

    Flower's simulation engine starts Ray when none is running and stops it after every run
    (about 5 s of the ~10 s fixed cost of each simulated run here). The suite lets the first run
    start it and turns ``ray.shutdown`` into a no-op until the session ends; each run still gets
    fresh actors. Yields the real ``ray.shutdown``. Tests of the engine's own lifecycle, and runs
    that leave an actor busy (a client sleeping past the round timeout), use :func:`own_engine`.
    """
    import ray

    real_shutdown = ray.shutdown
    ray.shutdown = lambda *args, **kwargs: None
    try:
        yield real_shutdown
    finally:
        ray.shutdown = real_shutdown
        real_shutdown()


@pytest.fixture
def own_engine(shared_ray_instance, monkeypatch: pytest.MonkeyPatch):
    """Run a test with the engine's real lifecycle: Ray started and stopped by the run itself."""
    import ray

    shared_ray_instance()
    monkeypatch.setattr(ray, "shutdown", shared_ray_instance)
    yield
    shared_ray_instance()


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/config.yaml with overrides, exactly as the runner does."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=list(overrides or []))


def run_experiment(overrides: list[str], run_dir: Path) -> dict:
    """Compose, run and write one experiment; return its results.json as read back from disk."""
    from experiments.execute import execute

    execute(compose_config(overrides + ["verbose=false"]), run_dir)
    return json.loads((run_dir / "results.json").read_text())


VERTICAL_SMALL = ["federation=vertical", "data.n_customers=3000", "train.epochs=2"]


@pytest.fixture(scope="session")
def vertical_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Path, dict]]]:
    """Two small vertical runs with label DP and DP-SGD, and two without DP (session-wide).

    The two without DP share a PSI cache of their own: the first builds each party's blinded
    set, the second takes it from the cache. Tests read these runs and never change them.
    """
    runs: dict[str, list[tuple[Path, dict]]] = {}
    cache = tmp_path_factory.mktemp("plain-psi-cache")
    for name, overrides in {"private": ["privacy=label_dp_dpsgd"],
                            "plain": ["privacy=off", f"federation.psi_cache={cache}"]}.items():
        pair = []
        for k in range(2):
            run_dir = tmp_path_factory.mktemp(f"{name}{k}")
            pair.append((run_dir, run_experiment(VERTICAL_SMALL + overrides, run_dir)))
        runs[name] = pair
    return runs


def _need_shared_data() -> None:
    needed = ["uci_credit_card.csv", "default_credit_hetero_guest.csv",
              "default_credit_hetero_host.csv"]
    missing = [n for n in needed if not (SHARED_DATA / n).is_file()]
    if missing:
        pytest.skip(f"real data absent: {missing} not in {SHARED_DATA} "
                    "(set CREDIT_FL_DATA_DIR to the folder that holds them)")


@pytest.fixture
def shared_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder of real credit data; tests that need it skip when it is absent."""
    _need_shared_data()
    monkeypatch.setenv("CREDIT_FL_DATA_DIR", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture(scope="module")
def shared_data_for_module():
    """:func:`shared_data` for module-scoped fixtures."""
    _need_shared_data()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_FL_DATA_DIR", str(SHARED_DATA))
        yield SHARED_DATA


def independent_epsilon(spend: dict) -> float:
    """Recompute one ledger entry with Google's dp-accounting RDP accountant.

    Every stretch of the entry's ``history`` (a noisy summary, DP-SGD's Poisson-sampled steps,
    embedding releases, central DP's aggregates) is composed; the conversion delta is the
    entry's delta less its category-selection delta.
    """
    from dp_accounting import dp_event
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant()
    history = spend.get("history") or [[spend["noise_multiplier"], spend["sample_rate"],
                                        spend["steps"]]]
    for sigma, rate, steps in history:
        gaussian = dp_event.GaussianDpEvent(sigma)
        event = gaussian if rate >= 1.0 else dp_event.PoissonSampledDpEvent(rate, gaussian)
        accountant.compose(event, int(steps))
    return accountant.get_epsilon(spend["delta"] - (spend.get("selection_delta") or 0.0))
