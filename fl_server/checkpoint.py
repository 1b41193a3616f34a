"""Checkpoints that describe themselves: round, model, strategy state, ledger, history."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from credit_data.errors import ConfigError

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, content: dict[str, Any]) -> Path:
    """Write ``run_dir/checkpoint.pt`` atomically (never a half-written checkpoint)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CHECKPOINT
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".checkpoint.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(content, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read the checkpoint of an earlier run directory."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"resume={run_dir}: no {CHECKPOINT} there to resume from")
    return torch.load(path, weights_only=False)
