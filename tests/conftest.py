"""Shared helpers: composing the real Hydra config, running experiments, finding shared data."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from experiments.config import register
from privacy.sealed_key import MASTER_KEY_FILE

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED_DATA = Path(os.environ.get("CREDIT_FL_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
_ABSENT = [name for name in ("uci_credit_card.csv", "default_credit_hetero_guest.csv",
                             "default_credit_hetero_host.csv")
           if not (SHARED_DATA / name).is_file()]
NEEDS_SHARED_DATA = pytest.mark.skipif(
    bool(_ABSENT), reason=f"real data absent: {_ABSENT} not in {SHARED_DATA} (set "
                          "CREDIT_FL_DATA_DIR to the folder that holds them)")
"""Every test that uses the real data (the ``shared_data`` fixtures) skips when it is absent."""

register()


@pytest.fixture(scope="session", autouse=True)
def psi_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parties' PSI cache of every test run, apart from the repository's ``outputs/``."""
    path = tmp_path_factory.mktemp("psi-cache")
    os.environ["CREDIT_FL_PSI_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated parties' master keys of every test run, apart from ``outputs/``.

    Fixed per party (a node draws its own from the OS): the parties' split keys come from their
    master keys, so a test's splits are the same in every session, as its seed's were.
    """
    path = tmp_path_factory.mktemp("node-keys")
    for party in ("lender", "bureau", "social", *(f"lender-{k}" for k in range(10))):
        (path / party).mkdir(mode=0o700)
        master = path / party / MASTER_KEY_FILE
        master.write_bytes(hashlib.sha256(f"test master key:{party}".encode()).digest())
        master.chmod(0o600)
    os.environ["CREDIT_FL_KEY_DIR"] = str(path)
    return path


TIERS = ("unit", "engine", "slow")
"""The three tiers, each chosen by name (``pytest -m unit``; ``make test-unit``, ``test-engine``,
``test-slow``): ``unit`` (no Ray, no run on an engine), ``engine`` (small runs on Ray's
simulation or a loopback deployment), ``slow`` (full-size runs)."""


def tier_of(item: pytest.Item) -> str:
    """The tier a collected test belongs to: its one tier marker (``engine`` when it has none)."""
    marked = [tier for tier in TIERS if item.get_closest_marker(tier) is not None]
    if len(marked) > 1:
        raise pytest.UsageError(f"{item.nodeid} is marked {' and '.join(marked)}: one tier only")
    return marked[0] if marked else "engine"


LONGEST_FIRST = ("test_deploy.py", "test_vertical.py", "test_horizontal_faults.py",
                 "test_horizontal_privacy.py", "test_horizontal.py", "test_sweep.py",
                 "test_blacklists.py", "test_front_door_runs.py", "test_cli.py")
"""The test files that take longest, longest first: ``make test``'s two workers take whole files
in collection order (``--no-loadscope-reorder``), so these start first and no long file starts
when the other worker is nearly done (from ``--durations`` of the CI runs)."""


def _longest_first(items: list[pytest.Item]) -> None:
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each test its tier; put the longest files first; leave the full-size runs out under
    CI (``CI=true``) unless ``RUN_SLOW=1`` asks for them.

    Doctests are ``unit``; a test marked neither ``unit`` nor ``slow`` is ``engine`` (marked here,
    so that ``pytest -m engine`` selects it). Each ``slow`` test has a smaller version that always
    runs; ``make test-slow`` runs the full-size ones.
    """
    _longest_first(items)
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            item.add_marker(pytest.mark.unit)
        elif tier_of(item) == "engine":
            item.add_marker(pytest.mark.engine)
        if {"shared_data", "shared_data_for_module"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(NEEDS_SHARED_DATA)
    if os.environ.get("CI", "").lower() not in ("1", "true") or os.environ.get("RUN_SLOW"):
        return
    skip = pytest.mark.skip(reason="full-size run left out under CI=true (RUN_SLOW=1 runs it); "
                                   "its smaller version runs")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


_RAY_SEEN: dict[str, bool] = {}
"""Whether Ray was imported when collection ended, whether an engine or slow test has run, and
whether a unit test was failed for importing it (the first one only: the import stays)."""


def pytest_collection_finish(session: pytest.Session) -> None:
    _RAY_SEEN.update(at_collection="ray" in sys.modules, by_engine=False, blamed=False)


@pytest.fixture(autouse=True)
def _tier_rules(request: pytest.FixtureRequest):
    """Engine and slow tests share the session's Ray (:func:`shared_ray_instance`); a unit test
    that imports Ray (itself, or by a fixture) fails at its teardown.

    The check holds while no engine test has run, as under ``pytest -m unit``; an import of Ray
    at collection (a module's top level) is ``tests/test_tiers.py``'s to find.
    """
    if tier_of(request.node) != "unit":
        _RAY_SEEN["by_engine"] = True
        request.getfixturevalue("shared_ray_instance")
    yield
    if tier_of(request.node) == "unit" and "ray" in sys.modules and not any(_RAY_SEEN.values()):
        _RAY_SEEN["blamed"] = True
        pytest.fail(f"{request.node.nodeid} is a unit test and imported Ray: mark it engine, or "
                    "import Ray only where the engine runs", pytrace=False)


@pytest.fixture(scope="session")
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
    set, the second takes it from the cache (``"plain-cache"``: that cache and each party's files
    in it right after the pair, since later tests that score a plain run add theirs). Tests read
    these runs and never change them.
    """
    runs: dict[str, list[tuple[Path, dict]]] = {}
    cache = tmp_path_factory.mktemp("plain-psi-cache")
    for name, overrides in {"private": ["privacy=label_dp_dpsgd"],
                            "plain": ["privacy=off", f"federation.psi_cache={cache}"]}.items():
        pair = []
        for k in range(2):
            run_dir = tmp_path_factory.mktemp(f"{name}{k}")
            # the in-process engine: these runs are read, not the engine (Ray is tested elsewhere)
            pair.append((run_dir, run_experiment(VERTICAL_SMALL + overrides + ["engine=in_process"],
                                                 run_dir)))
        runs[name] = pair
    # what the plain pair left in its cache, listed before any later test scores from that cache
    runs["plain-cache"] = [(cache, {party: sorted(p.name for p in (cache / party / "psi").iterdir())
                                    for party in ("bureau", "social")})]
    return runs


@pytest.fixture
def shared_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder of real credit data; tests that need it skip when it is absent
    (:data:`NEEDS_SHARED_DATA`, given by :func:`pytest_collection_modifyitems`)."""
    monkeypatch.setenv("CREDIT_FL_DATA_DIR", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture(scope="module")
def shared_data_for_module():
    """:func:`shared_data` for module-scoped fixtures."""
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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: small trainings run 5-10x slower on two on a shared
    machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
