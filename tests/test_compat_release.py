"""The private Flower symbols the compat package uses exist in the supported release.

An ``engine``-tier test: importing Flower's simulation internals imports Ray, which the unit
tier never does (``tests/tier_guard.py``).
"""

from __future__ import annotations

from tests.test_architecture import COMPAT, ROOT, _imports, _internal


def test_the_internals_the_compat_package_patches_exist_in_the_supported_release():
    """Import every private symbol the compat modules use; a release without one fails here."""
    import importlib

    from federation.flower_compat import check_engine_versions

    check_engine_versions(("flwr", "ray"))
    for path in (ROOT / COMPAT).glob("*.py"):
        for name in _imports(path):
            if _internal(name):
                importlib.import_module(name)
    from federation.flower_compat.simulation import quick_simulation_polls

    quick_simulation_polls()  # checks its target, then patches (idempotent)
    import flwr.supernode.start_client_internal as loop

    assert loop.time.__name__ == "time" and hasattr(loop, "pull_objects")
