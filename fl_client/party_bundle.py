"""Each vertical party writes its own bundle of the trained model, on its own disk.

A passive party's bundle holds its encoder (the version the lender's best epoch used), its
fitted preprocessing, its column list and types, its table's fingerprint and its privacy spend.
The lender's adds the head, the "unknown applicant" vectors, the calibration and the score
scaling. Neither holds a row, a label or another party's column. Never imports flwr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from credit_data.split import TRAIN
from credit_data.stability import freeze_values
from credit_data.vertical import NodeRows
from fl_client.settings import ClientSettings
from models.binned_scorecard import (
    ScorecardEncoder,
    bin_shares,
    party_table,
    summary_bin_shares,
)
from models.bundle import settings_json, write_bundle
from models.factory import party_encoder
from models.split_training import LenderModel, embed

BUNDLE_DIR = "model"
"""A party's bundle: ``<state dir>/<party>/model`` (``parties/<party>/model`` in a run)."""


def bundle_dir(settings: ClientSettings) -> Path | None:
    """Where this party keeps its bundle (None for a node without a state directory)."""
    if not settings.state_dir:
        return None
    return Path(settings.state_dir) / settings.party / BUNDLE_DIR


def _stability(rows: NodeRows, encoder: torch.nn.Module | None) -> dict[str, Any] | None:
    """Return the bins monitoring compares later periods with, frozen from the training rows.

    Each column's (from :class:`NodeRows`) and the norm of the party's embedding of its own
    training rows (exact: it stays in the bundle, on the party's disk). A party under DP (its
    preprocessing from a noisy summary) watches its columns only: the norms' deciles would be
    bins cut at its exact training rows, which its monitoring noise does not cover.
    """
    if rows.reference is None:
        return None
    out: dict[str, Any] = {"columns": rows.reference}
    under_dp = (rows.preprocessing or {}).get("kind") == "sketch"
    if encoder is not None and not under_dp:
        train = rows.split == TRAIN
        norms = np.linalg.norm(embed(encoder, rows.x[train]), axis=1)
        out["embedding_norm"] = freeze_values(norms)
    return out


AVERAGE_FROM_TRAINING = "training split"
AVERAGE_FROM_SUMMARY = "noisy summary"


def average_reference(encoder: ScorecardEncoder, rows: NodeRows) -> dict[str, Any]:
    """Return the party's ``average`` reference for its bundle: each bin's share, and whence.

    Fixed with the model (Regulation B's "average applicant"), so that neither a request's
    applicants nor the table a scoring service runs on move it: from the party's training
    split, or, where its columns are under DP (preprocessing from its noisy summary), from that
    summary alone (:func:`models.binned_scorecard.summary_bin_shares`: inside its epsilon).
    """
    if rows.summary_shares is not None:
        return {"from": AVERAGE_FROM_SUMMARY,
                "shares": summary_bin_shares(encoder.layout, rows.summary_shares).tolist()}
    return {"from": AVERAGE_FROM_TRAINING,
            "shares": bin_shares(encoder.layout, rows.x[rows.split == TRAIN]).tolist()}


def _loaded(module: torch.nn.Module, weights: dict[str, torch.Tensor]
            ) -> torch.nn.Module | None:
    """Return ``module`` with ``weights`` (an Opacus ``_module.`` prefix dropped), or None."""
    try:
        module.load_state_dict({k.removeprefix("_module."): v for k, v in weights.items()})
    except (RuntimeError, KeyError):
        return None
    return module


def _manifest(settings: ClientSettings, rows: NodeRows, model_id: str, role: str,
              privacy: dict[str, Any], encoder: torch.nn.Module | None = None
              ) -> dict[str, Any]:
    p = settings.privacy
    return {
        "model_id": model_id, "party": settings.party, "role": role, "mode": "vertical",
        "config": {"seed": settings.seed, "model": settings_json(settings.model),
                   "privacy": {"mechanism": p.mechanism.value,
                               "embedding_epsilon": p.embedding_epsilon,
                               "embedding_clip": p.embedding_clip,
                               "label_epsilon": p.label_epsilon,
                               "max_epsilon": p.max_epsilon, "delta": p.delta}},
        "columns": {"numeric": list(rows.numeric), "categorical": list(rows.categorical),
                    "features": list(rows.names)},
        "table": {"fingerprint": rows.fingerprint, "rows": len(rows.ids)},
        "privacy": privacy,
        "stability": _stability(rows, encoder),
    }


def write_passive_bundle(settings: ClientSettings, rows: NodeRows, model_id: str,
                         encoder: dict[str, torch.Tensor], *, encoder_version: int,
                         noise_std: float, privacy: dict[str, Any]) -> Path | None:
    """Write a passive party's bundle; return its directory (None without a state dir)."""
    directory = bundle_dir(settings)
    if directory is None or rows.preprocessing is None:
        return None
    module = _loaded(party_encoder(settings.model, rows.width, rows.names), encoder)
    manifest = _manifest(settings, rows, model_id, "passive", privacy, module)
    if isinstance(module, ScorecardEncoder):  # the party's own points, kept with its model
        manifest["scorecard_table"] = party_table(module, settings.scorecard,
                                                  rows.preprocessing)
        manifest["scorecard_table"]["average"] = average_reference(module, rows)
    manifest["embedding"] = {"encoder_version": encoder_version, "noise_std": noise_std,
                             "clip": settings.privacy.embedding_clip if noise_std > 0 else None}
    return write_bundle(directory, manifest=manifest,
                        weights={f"encoder.{k}": v for k, v in encoder.items()},
                        preprocessing={settings.party: rows.preprocessing})


def write_lender_bundle(settings: ClientSettings, rows: NodeRows, model_id: str,
                        model: dict[str, torch.Tensor], *, passive: tuple[str, ...],
                        calibration: tuple[float, float] | None, metrics: dict[str, float],
                        privacy: dict[str, Any], holders: tuple[str, ...] = ()) -> Path | None:
    """Write the lender's bundle: its encoder, the head, the unknown vectors, the scaling.

    ``holders``: the blacklist holders whose hits are the model's last inputs (in this order,
    then their count); scoring asks them again.
    """
    directory = bundle_dir(settings)
    if directory is None or rows.preprocessing is None:
        return None
    lender = _loaded(LenderModel(rows.width, passive, settings.model, rows.names), model)
    manifest = _manifest(settings, rows, model_id, "lender", privacy,
                         lender.encoder if isinstance(lender, LenderModel) else None)
    if isinstance(lender, LenderModel) and isinstance(lender.encoder, ScorecardEncoder):
        manifest["scorecard_table"] = party_table(lender.encoder, settings.scorecard,
                                                  rows.preprocessing, lender)
        manifest["scorecard_table"]["average"] = average_reference(lender.encoder, rows)
    manifest |= {"passive": list(passive), "calibration": list(calibration)
                 if calibration is not None else None,
                 "scorecard": settings_json(settings.scorecard), "metrics": metrics,
                 "blacklists": list(holders)}
    return write_bundle(directory, manifest=manifest, weights=dict(model),
                        preprocessing={settings.party: rows.preprocessing})
