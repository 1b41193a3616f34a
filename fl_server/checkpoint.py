"""Checkpoints that describe themselves: round, model, strategy state, ledger, history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from credit_data.errors import ConfigError
from federation.storage import atomic_path

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, content: dict[str, Any]) -> Path:
    """Write ``run_dir/checkpoint.pt`` atomically (never a half-written checkpoint)."""
    path = run_dir / CHECKPOINT
    with atomic_path(path) as tmp:
        torch.save(content, tmp)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read the checkpoint of an earlier run directory."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"resume={run_dir}: no {CHECKPOINT} there to resume from")
    return torch.load(path, weights_only=False)
