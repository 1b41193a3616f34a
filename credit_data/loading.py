"""One entry point that turns data settings into party tables."""

from __future__ import annotations

from credit_data.errors import ConfigError
from credit_data.files import load_files
from credit_data.settings import DataSettings, Source
from credit_data.synthetic import LABELS, generate
from credit_data.tables import Population


def load_population(settings: DataSettings, seed: int) -> Population:
    """Generate (``source=synthetic``) or read (``source=files``) every party's table."""
    if settings.source is Source.synthetic:
        if settings.label not in LABELS:
            raise ConfigError(f"data.label must be one of {LABELS} for synthetic data, "
                              f"got '{settings.label}'")
        return generate(settings.n_customers, seed, settings.synthetic)
    return load_files(settings)
