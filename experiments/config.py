"""Hydra's schema and the way back to settings: they live in :mod:`credit_fl.config`.

Kept so that ``from experiments.config import to_settings`` goes on working; new code imports
:mod:`credit_fl.config` (or calls :func:`credit_fl.settings`).
"""

from __future__ import annotations

from credit_fl.config import SCHEMA_NAME, mutable_twin, register, to_settings

__all__ = ["SCHEMA_NAME", "mutable_twin", "register", "to_settings"]
