"""The empirical privacy audit of a finished run: results.json's ``audit`` block.

Membership inference on the final model (training rows against test rows; the validation rows
set the threshold), with the epsilon lower bound it proves next to the epsilon DP promises for
one whole record; in vertical mode also the label-leakage attack on the gradients the passive
parties received, and the inversion attack on the embeddings the lender received. With
``audit.canaries=m`` also the one-run canary audit (:mod:`credit_fl.canary_attack`); with
``audit.reference_models=k`` also RMIA on the final model (:mod:`credit_fl.rmia_attack`).
"""

from __future__ import annotations

import math
from typing import Any

from credit_fl.outcome import RunOutcome
from privacy.attacks import (
    label_leakage_attack,
    membership_attack,
    membership_epsilon,
)
from privacy.inversion import decoder_r2
from privacy.settings import check_audit


def attack_outcome(outcome: RunOutcome) -> dict[str, Any] | None:
    """Return the audit of ``outcome`` (None when ``audit.enabled`` is false).

    An unbounded theoretical epsilon (no record-level DP) is written as null.
    """
    settings = outcome.settings
    check_audit(settings.audit)
    if not settings.audit.enabled or outcome.labels is None or outcome.scores is None:
        return None
    theory = membership_epsilon(settings.federation.mode.value, outcome.privacy)
    calibration = ((outcome.labels["val"], outcome.scores["val"])
                   if "val" in outcome.labels else None)
    membership = membership_attack(outcome.labels["train"], outcome.scores["train"],
                                  outcome.labels["test"], outcome.scores["test"],
                                  delta=theory["delta"], settings=settings.audit,
                                  seed=settings.seed, calibration=calibration)
    unbounded = math.isinf(theory["epsilon"])
    membership |= {"theoretical_epsilon": None if unbounded else theory["epsilon"],
                   "theoretical_delta": theory["delta"], "theory": theory["why"],
                   "bound_holds": membership["epsilon_lower_bound"] <= theory["epsilon"]}
    out: dict[str, Any] = {"membership": membership}
    if outcome.label_leakage:
        label_epsilon = settings.privacy.label_epsilon
        out["label_leakage"] = {
            "label_protection": ("off" if label_epsilon is None
                                 else f"randomized response, epsilon {label_epsilon:g}"),
            "parties": {party: label_leakage_attack(kept["labels"], kept["norm"],
                                                   kept["direction"])
                        for party, kept in outcome.label_leakage.items()}}
    if outcome.inversion and settings.audit.inversion:
        out["inversion"] = inversion_attack(outcome)
    if settings.audit.canaries:
        from credit_fl.canary_attack import one_run_attack  # torch and Opacus: only when on

        out["one_run"] = one_run_attack(outcome)
    if settings.audit.reference_models:
        from credit_fl.rmia_attack import rmia_attack  # reference trainings: only when on

        out["rmia"] = rmia_attack(outcome)
    return out


def inversion_attack(outcome: RunOutcome) -> dict[str, Any]:
    """Per passive party, how well the lender rebuilds its columns from the embeddings it got.

    The attacker's draw of known rows follows the public seed, as the membership audit's does.
    """
    a = outcome.settings.audit
    assert outcome.inversion is not None
    return {party: decoder_r2(kept["embeddings"], kept["columns"], known_share=a.inversion_known,
                              seed=outcome.settings.seed, max_rows=a.inversion_rows)
            for party, kept in outcome.inversion.items()}


def summary_line(audit: dict[str, Any]) -> str:
    """One sentence: theoretical epsilon, empirical lower bound and attack AUC."""
    m = audit["membership"]
    theory = ("unbounded" if m["theoretical_epsilon"] is None
              else f"{m['theoretical_epsilon']:.3f}")
    return (f"theoretical epsilon {theory}, empirical lower bound "
            f"{m['epsilon_lower_bound']:.3f}, membership attack AUC {m['attack_auc']:.4f}")
