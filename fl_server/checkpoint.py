"""Checkpoints that describe themselves: round, model, strategy state, ledger, history.

A checkpoint is read back by a later run (``resume=<run dir>``, at the coordinator): it is
written and read with :mod:`federation.safe_files`, so reading one runs no code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from credit_data.errors import ConfigError
from federation.safe_files import load_objects, save_objects

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, content: dict[str, Any]) -> Path:
    """Write ``run_dir/checkpoint.pt`` atomically (never a half-written checkpoint)."""
    return save_objects(run_dir / CHECKPOINT, content)


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read the checkpoint of an earlier run directory; a file of another format is refused."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"resume={run_dir}: no {CHECKPOINT} there to resume from")
    found = load_objects(path, f"resume={run_dir}: {CHECKPOINT}")
    if not isinstance(found, dict):
        raise ConfigError(f"resume={run_dir}: {CHECKPOINT} is not a checkpoint (a "
                          f"{type(found).__name__}, not a dict)")
    return found
