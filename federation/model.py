"""The one model a horizontal federation shares: built the same way at the server and lenders."""

from __future__ import annotations

import torch
from torch import nn

from credit_data.federated_scaling import Schema
from models.factory import build_model
from models.settings import ModelSettings


def shared_model(settings: ModelSettings, schema: Schema,
                 state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Build the model over the shared schema's columns; load ``state`` by name if given."""
    model = build_model(settings, {"lender": len(schema.feature_names)},
                        {"lender": tuple(schema.feature_names)})
    if state is not None:
        model.load_state_dict(state)
    return model
