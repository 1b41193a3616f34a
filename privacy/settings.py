"""Typed, frozen privacy settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum

from credit_data.errors import ConfigError


class PrivacyMechanism(StrEnum):
    """Differential-privacy mechanism.

    ``dpsgd``: Opacus DP-SGD at every client (record-level DP for each party's rows).
    ``central``: client-level DP by the server (Flower's fixed-clipping wrapper).
    """

    off = "off"
    dpsgd = "dpsgd"
    central = "central"


@dataclass(frozen=True)
class PrivacySettings:
    """Budget and mechanism parameters.

    ``target_epsilon`` is the budget for the WHOLE training, every round included.
    ``delta=None`` takes 0.1 / n for a party with n training rows (below 1/n).
    ``max_epsilon`` is each party's own cap (default: ``target_epsilon``); a party refuses a round
    that would spend past it. ``max_grad_norm`` is DP-SGD's per-record clipping norm;
    ``clipping_norm`` the central mechanism's per-client update norm. ``party_max_epsilon``
    gives single parties a cap of their own (in deployment a node sets it in its own config).

    Vertical federation only, each switchable on its own: ``label_epsilon`` turns on label DP by
    randomized response at the lender (paid once); ``embedding_epsilon`` turns on embedding
    noise at each passive party (every record's embedding clipped to ``embedding_clip`` and
    noised, its epsilon composed over ``embedding_releases`` releases). ``mechanism=dpsgd`` runs
    DP-SGD on every encoder and the head.

    ``summary_share``: the share of a party's budget its preprocessing summary takes wherever
    DP protects the party's columns (the noisy counts the preprocessing, the horizontal schema
    and the starting base rate are fitted from; see :mod:`privacy.summary`).
    ``reproducible_noise``: derive every mechanism's noise from the public seed instead of
    each node's secret key. For tests and research only: the epsilon is then NO guarantee, and
    results.json, the report and the ledger say so.
    """

    mechanism: PrivacyMechanism = PrivacyMechanism.off
    target_epsilon: float = 3.0
    delta: float | None = None
    max_epsilon: float | None = None
    max_grad_norm: float = 1.0
    clipping_norm: float = 1.0
    party_max_epsilon: dict[str, float] = field(default_factory=dict)
    label_epsilon: float | None = None
    embedding_epsilon: float | None = None
    embedding_clip: float = 1.0
    embedding_releases: int = 1
    summary_share: float = 0.1
    reproducible_noise: bool = False

    def vertical_mechanisms(self) -> tuple[str, ...]:
        """Return the mechanisms switched on for a vertical federation, in ledger order."""
        on = [("label_dp", self.label_epsilon is not None),
              ("dpsgd", self.mechanism is PrivacyMechanism.dpsgd),
              ("embedding_noise", self.embedding_epsilon is not None)]
        return tuple(name for name, enabled in on if enabled)

    def for_party(self, party: str) -> PrivacySettings:
        """Return one party's settings: its own cap from ``party_max_epsilon`` where it has one.

        >>> PrivacySettings(party_max_epsilon={"bureau": 2.0}).for_party("bureau").max_epsilon
        2.0
        """
        cap = self.party_max_epsilon.get(party)
        return self if cap is None else dataclasses.replace(self, max_epsilon=cap)

    def cap(self) -> float:
        """Return the epsilon a party never passes."""
        return self.target_epsilon if self.max_epsilon is None else self.max_epsilon


def check_privacy(settings: PrivacySettings) -> None:
    """Raise a ConfigError naming the key of any out-of-range value."""
    for key in ("label_epsilon", "embedding_epsilon"):
        value = getattr(settings, key)
        if value is not None and not value > 0:
            raise ConfigError(f"privacy.{key} must be positive (or null for off), got {value}")
    if not settings.embedding_clip > 0:
        raise ConfigError(f"privacy.embedding_clip must be positive, got "
                          f"{settings.embedding_clip}")
    if settings.embedding_releases < 1:
        raise ConfigError(f"privacy.embedding_releases must be at least 1, got "
                          f"{settings.embedding_releases}")
    if not 0 < settings.summary_share < 1:
        raise ConfigError(f"privacy.summary_share must lie in (0, 1), got "
                          f"{settings.summary_share}")
    floor = 2 * settings.summary_share * settings.target_epsilon
    if (settings.embedding_epsilon is not None and settings.mechanism is PrivacyMechanism.dpsgd
            and settings.embedding_epsilon < floor):
        raise ConfigError(
            f"privacy.embedding_epsilon={settings.embedding_epsilon:g} is below "
            f"{floor:g}: a passive party's noisy summary alone takes privacy.summary_share "
            f"({settings.summary_share:g}) of privacy.target_epsilon "
            f"({settings.target_epsilon:g}) before its embedding releases compose after it")
    if (settings.embedding_epsilon is not None and settings.embedding_releases > 1
            and settings.mechanism is not PrivacyMechanism.dpsgd):
        raise ConfigError(
            f"privacy.embedding_releases={settings.embedding_releases} without DP-SGD: only "
            "the first release is bounded by privacy.embedding_epsilon (it comes from the "
            "untrained encoder); later ones come from an encoder trained without DP on the same "
            "rows, so no epsilon bounds them. Set privacy.embedding_releases=1, or "
            "privacy.mechanism=dpsgd to train the encoders with DP-SGD")
    if settings.mechanism is PrivacyMechanism.off:
        return
    if not settings.target_epsilon > 0:
        raise ConfigError(f"privacy.target_epsilon must be positive, got "
                          f"{settings.target_epsilon}")
    if settings.delta is not None and not 0 < settings.delta < 1:
        raise ConfigError(f"privacy.delta must lie in (0, 1), got {settings.delta}")
    if settings.max_epsilon is not None and not settings.max_epsilon > 0:
        raise ConfigError(f"privacy.max_epsilon must be positive, got {settings.max_epsilon}")
    for party, cap in settings.party_max_epsilon.items():
        if not cap > 0:
            raise ConfigError(f"privacy.party_max_epsilon.{party} must be positive, got {cap}")
    for key in ("max_grad_norm", "clipping_norm"):
        if not getattr(settings, key) > 0:
            raise ConfigError(f"privacy.{key} must be positive, got {getattr(settings, key)}")


@dataclass(frozen=True)
class AuditSettings:
    """What the empirical audit does.

    ``fpr``: the false-positive rate the membership threshold is calibrated to.
    ``confidence``: the Clopper-Pearson confidence of the epsilon lower bound.
    ``max_members``: training rows the attack tries (a seeded sample; all when fewer).
    ``label_leakage``: in vertical simulation, passive parties keep the attack scores of the
    gradients they receive (on their own disk) so that the runner can score them.
    ``inversion``: in vertical simulation, passive parties keep the final embeddings they send
    the lender, and the runner measures how well a decoder rebuilds each party's columns from
    them (:mod:`privacy.inversion`). ``inversion_known``: the share of those rows whose columns
    the attacker is assumed to know (it trains the decoder on them; the rest are scored).
    ``inversion_rows``: released rows the audit uses at most (a seeded sample; all when fewer).
    ``canaries``: the one-run canary audit (:mod:`privacy.one_run_canaries`) with this many
    canaries, in a twin of the lender's training (0: off, the default; at least 10 when on).
    ``reference_models``: RMIA against the final model (:mod:`privacy.rmia`) with this many
    reference models trained on the attacker's own synthetic sample (0: off, the default; at
    least 2 when on: one is attacked to tune the offline coefficient). ``reference_epochs``:
    each reference model's epochs (0, the default: as many passes as the run made; a reference
    model trained for fewer epochs than the target is no better than the loss attack, measured
    in docs/privacy-research.md; a smaller number buys a cheaper, weaker attack).
    """

    enabled: bool = True
    fpr: float = 0.05
    confidence: float = 0.95
    max_members: int = 20_000
    label_leakage: bool = True
    inversion: bool = True
    inversion_known: float = 0.5
    inversion_rows: int = 20_000
    canaries: int = 0
    reference_models: int = 0
    reference_epochs: int = 0


def check_audit(settings: AuditSettings, key: str = "audit") -> None:
    """Raise a ConfigError naming the key of any out-of-range value."""
    if not 0 < settings.fpr < 0.5:
        raise ConfigError(f"{key}.fpr must lie in (0, 0.5), got {settings.fpr}")
    if not 0.5 <= settings.confidence < 1:
        raise ConfigError(f"{key}.confidence must lie in [0.5, 1), got {settings.confidence}")
    if settings.max_members < 10:
        raise ConfigError(f"{key}.max_members must be at least 10, got {settings.max_members}")
    if not 0 < settings.inversion_known < 1:
        raise ConfigError(f"{key}.inversion_known must lie in (0, 1), got "
                          f"{settings.inversion_known}")
    if settings.inversion_rows < 20:
        raise ConfigError(f"{key}.inversion_rows must be at least 20, got "
                          f"{settings.inversion_rows}")
    if settings.canaries != 0 and settings.canaries < 10:
        raise ConfigError(f"{key}.canaries must be 0 (off) or at least 10, got "
                          f"{settings.canaries}")
    if settings.reference_models != 0 and settings.reference_models < 2:
        raise ConfigError(f"{key}.reference_models must be 0 (off) or at least 2, got "
                          f"{settings.reference_models}")
    if settings.reference_epochs < 0:
        raise ConfigError(f"{key}.reference_epochs must be 0 (as the run) or more, got "
                          f"{settings.reference_epochs}")

