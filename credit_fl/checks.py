"""Every check that a run's settings alone allow, whatever built them.

:func:`check_settings` runs inside :func:`credit_fl.settings` (so a bad value fails before any
data is read or an engine starts) and again at the start of each runner, for settings built as
dataclasses. What depends on the rows (the parties with data, a delta against the table sizes,
the blacklist files) is checked by the runners once the data is loaded.
"""

from __future__ import annotations

from credit_data.errors import ConfigError
from credit_data.partition import lender_names
from credit_data.settings import Source
from federation.run_settings import RunSettings
from federation.settings import Mode, StrategyName, check_blacklists, check_federation
from models.settings import ModelKind, check_scorecard
from privacy.settings import PrivacyMechanism, check_audit, check_privacy


def check_settings(settings: RunSettings) -> None:
    """Refuse what the settings rule out for their mode; the message names the key.

    Raises
    ------
    ConfigError
        The first setting found that cannot run, named.
    """
    check_audit(settings.audit)
    check_canaries(settings)
    check_reference_models(settings)
    check_scorecard(settings.scorecard)
    check_consent(settings)
    mode = settings.federation.mode
    if mode is Mode.vertical:
        check_vertical(settings)
    elif mode is Mode.horizontal:
        check_horizontal(settings)
    else:
        check_baseline(settings)


def check_canaries(settings: RunSettings) -> None:
    """Refuse a canary audit the twin cannot run: central DP, rows handed as DataFrames."""
    if not settings.audit.canaries:
        return
    if settings.privacy.mechanism is PrivacyMechanism.central:
        raise ConfigError("audit.canaries: the canary audit repeats a lender's own training "
                          "(DP-SGD or none); privacy=central adds its noise at the server, "
                          "which the twin does not run. Set audit.canaries=0")
    if settings.data.source is Source.frames:
        raise ConfigError("audit.canaries: the canary audit loads the lender's rows again, and "
                          "rows handed over as DataFrames cannot be; set audit.canaries=0 or "
                          "train from data=csv or data=synthetic")


def check_reference_models(settings: RunSettings) -> None:
    """Refuse RMIA where the attacker's sample cannot be drawn or the rows rebuilt."""
    if not settings.audit.reference_models:
        return
    if settings.data.source is not Source.synthetic:
        raise ConfigError("audit.reference_models: RMIA's reference models train on a fresh "
                          "sample from the synthetic generator (the attacker's population); "
                          "set data=synthetic or audit.reference_models=0")
    if settings.federation.mode is Mode.horizontal:
        raise ConfigError("audit.reference_models: RMIA rebuilds the run's rows with one "
                          "preprocessing, which horizontal lenders each fit on their own; use "
                          "federation=vertical, centralized or local, or "
                          "audit.reference_models=0")


def check_baseline(settings: RunSettings) -> None:
    """Centralized and local training: one model, no privacy mechanism."""
    if settings.privacy.mechanism is not PrivacyMechanism.off:
        raise ConfigError(f"privacy={settings.privacy.mechanism.value} needs a federated "
                          f"mode; federation={settings.federation.mode.value} trains "
                          "without privacy")


def check_horizontal(settings: RunSettings) -> None:
    """Horizontal federation: the lenders' strategy, privacy and the parties named."""
    f, p = settings.federation, settings.privacy
    names = lender_names(settings.partition.n_lenders)
    check_federation(f, len(names))
    check_privacy(p)
    for key, named in (("federation.faults", f.faults), ("privacy.party_max_epsilon",
                                                          p.party_max_epsilon)):
        unknown = sorted(set(named) - set(names))
        if unknown:
            raise ConfigError(f"{key} names unknown parties {unknown}; the lenders are "
                              f"{list(names)}")
    if f.strategy is StrategyName.fedprox and p.mechanism is PrivacyMechanism.dpsgd:
        raise ConfigError("federation.strategy=fedprox with privacy=dpsgd is not supported: the "
                          "proximal term is not per-record, so DP-SGD cannot clip it")


def check_vertical(settings: RunSettings) -> None:
    """Vertical federation: the split model, its privacy mechanisms and the holders."""
    from models.training import check_train  # torch: loaded once the config is known good

    p = settings.privacy
    check_privacy(p)
    check_blacklists(settings.blacklists, tuple(settings.federation.parties))
    check_train(settings.train)
    if settings.model.kind not in (ModelKind.split_mlp, ModelKind.scorecard):
        raise ConfigError(f"model={settings.model.kind.value}: vertical federation trains a "
                          "split model (an encoder per party, the head at the lender); use "
                          "model=split_mlp or model=scorecard")
    if p.mechanism is PrivacyMechanism.central:
        raise ConfigError("privacy=central is DP by the server for horizontal federation; in "
                          "vertical mode use privacy.mechanism=dpsgd, privacy.label_epsilon or "
                          "privacy.embedding_epsilon")
    if settings.federation.faults:
        raise ConfigError("federation.faults is not supported in vertical mode")
    stop = settings.federation.stop_after
    if stop is not None and not 1 <= stop < settings.train.epochs:
        raise ConfigError(f"federation.stop_after={stop}: a vertical run stops after an epoch "
                          f"before its last (train.epochs={settings.train.epochs})")


def check_consent(settings: RunSettings) -> None:
    """Refuse consent records where no node applies them: another mode, an unknown party.

    Each vertical node (a party or a blacklist holder) applies its own (docs/consent.md).
    """
    named = sorted(settings.data.consent)
    if not named:
        return
    if settings.federation.mode is not Mode.vertical:
        raise ConfigError(f"data.consent: consent records are applied by the nodes of a "
                          f"vertical federation; federation.mode={settings.federation.mode.value} "
                          "has none (train vertical, or cut the table before the run)")
    known = set(settings.federation.parties) | set(settings.blacklists.holders)
    unknown = [p for p in named if p not in known]
    if unknown:
        raise ConfigError(f"data.consent names {unknown}, which takes no part in this run "
                          f"(parties and holders: {sorted(known)})")
