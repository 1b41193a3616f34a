r"""A synthetic population of credit applicants seen by a lender, a bureau and a social platform.

Every person has these latent traits, the first four drawn independently:

* ``cap``   financial capacity, N(0, 1)
* ``disc``  repayment discipline, N(0, 1)
* ``stab``  life stability, N(0, 1)
* ``net``   risk of the person's social circle, N(0, 1)
* ``age``   18 to 75, rising with stability; every party that knows the person sees it
* ``synth`` a synthetic identity (a made-up person built to borrow and vanish), Bernoulli(1.5%)

Each party observes its own noisy views of those traits (see the ``_lender``, ``_bureau`` and
``_social`` functions): the lender sees capacity through income and debt-to-income; the bureau
sees discipline through utilisation and delinquencies; the social platform sees the social
circle, night-time activity and the device churn of synthetic identities.

The true probability of default within 12 months of a genuine applicant is

.. math::

    \operatorname{logit} p = -2.7 - 0.8\,disc - 0.5\,cap + 0.6\,net - 0.25\,stab
        + 0.5\,\max(-disc, 0)\max(net, 0)
        + 0.6\,\max(lti - 4, 0) / 4 \cdot (1 + \max(-disc, 0))
        + 0.12\,(term - 36) / 12 + r_{region}

where ``lti`` is loan amount over monthly income (application data at the lender). The two
products are interactions across parties: discipline (bureau) with the social circle (social),
and the size of the loan (lender) with discipline (bureau). A synthetic identity defaults with
probability 0.8 whatever its traits, and is confirmed as ``fraud`` with probability 0.8.

A **stolen identity** is a real, established person (known to the bureau and the platform,
stability above -0.5) whose identity a fraudster uses to apply: about 0.8% of applicants. The
person's bureau file and social account stay theirs; what disagrees with them is what the
fraudster does (:func:`_steal`): a larger loan (loan-to-income times ``e^{0.6}``), more often
through the app; on the platform, a recent device or phone change (``device_changes_12m`` up by
1 plus Poisson(0.7)), night-time activity after the password reset (``night_activity_share`` up
by 0.15) and loan-app shopping (``loan_app_inquiries_30d`` up by Poisson(2)); at the bureau, the
same shopping (``inquiries_6m`` up by Poisson(2)). The victim's dispute confirms it as
``fraud`` with probability 0.6. Its loss is booked to fraud, as lenders keep fraud losses apart
from credit losses: ``default_12m`` stays the draw of the person's own risk, so the credit
label, and everything drawn from it (the horizontal partitions), is that of a population
without stolen identities. These draws come from a second stream of the seed: every other
applicant's rows are unchanged too.

``truth["fraud_type"]`` says which scheme an applicant is (``synthetic``, ``stolen`` or empty),
confirmed or not; reports break fraud results down by it.

Coverage is partial: the bureau does not know some applicants (thin files, mostly the young
and all synthetic identities but a few), the social platform does not know others, and both
hold many people who never applied. Some columns have missing values.

Everything is a pure function of ``(n_customers, seed, settings)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from credit_data.errors import ConfigError
from credit_data.settings import SyntheticSettings
from credit_data.tables import PartyTable, Population

LABELS: tuple[str, ...] = ("default_12m", "fraud")
PURPOSES = ("debt_consolidation", "car", "home_improvement", "education", "consumer", "business",
            "medical")
CHANNELS = ("app", "web", "branch", "partner")
REGIONS = ("north", "south", "east", "west", "central", "coast")
REGION_RISK = np.array([-0.15, 0.10, 0.0, 0.15, -0.10, 0.20])
TERMS = np.array([12, 24, 36, 48, 60])

LENDER_NUMERIC = ("loan_amount", "term_months", "income", "years_employed", "debt_to_income",
                  "age")
LENDER_CATEGORICAL = ("purpose", "channel", "region")
BUREAU_NUMERIC = ("history_length_months", "open_accounts", "utilization", "delinq_30d_24m",
                  "delinq_90d_24m", "inquiries_6m", "prior_chargeoffs", "public_records")
SOCIAL_NUMERIC = ("account_age_months", "monthly_active_days", "night_activity_share",
                  "payment_count_90d", "payment_amount_90d", "contact_count",
                  "contacts_default_share", "device_changes_12m", "loan_app_inquiries_30d")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _latents(rng: np.random.Generator, n: int, synth_rate: float) -> dict[str, np.ndarray]:
    return {
        "cap": rng.standard_normal(n),
        "disc": rng.standard_normal(n),
        "stab": rng.standard_normal(n),
        "net": rng.standard_normal(n),
        "synth": rng.random(n) < synth_rate,
    }


def _with_age(rng: np.random.Generator, z: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the person's age, which every party that knows them sees the same."""
    age = 38 + 8 * z["stab"] + 7 * rng.standard_normal(len(z["stab"]))
    return {**z, "age": np.clip(np.round(age), 18, 75)}


def _with_missing(rng: np.random.Generator, values: np.ndarray, rate: float) -> np.ndarray:
    out = values.astype(np.float64)
    out[rng.random(len(out)) < rate] = np.nan
    return out


def _lender(
    rng: np.random.Generator, z: dict[str, np.ndarray], missing: float
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Application data: the frame, and the exact values the risk uses (``lti``, term, region)."""
    n = len(z["cap"])
    age = z["age"]
    income = np.exp(8.2 + 0.55 * z["cap"] + 0.12 * rng.standard_normal(n))
    tenure = np.clip((age - 18) * _sigmoid(0.8 * z["stab"] + 0.5 * rng.standard_normal(n))
                     * 0.6, 0, None)
    purpose_logits = np.column_stack([0.5 - 0.4 * z["cap"]] + [np.zeros(n)] * 5
                                     + [-1.0 - 0.4 * z["cap"]])
    purpose = _categorical_draw(rng, purpose_logits)
    lti = np.exp(1.0 + 0.45 * rng.standard_normal(n) - 0.15 * z["cap"] + 0.8 * z["synth"])
    loan_amount = np.round(income * lti, -1)
    term = TERMS[rng.integers(0, len(TERMS), n)]
    dti = np.clip(0.32 - 0.07 * z["cap"] - 0.05 * z["disc"] + 0.07 * rng.standard_normal(n),
                  0.0, 1.5)
    channel_logits = np.column_stack([np.zeros(n), -0.3 * np.ones(n), -1.0 + 0.3 * z["stab"],
                                      -1.2 + 2.5 * z["synth"]])
    channel = _categorical_draw(rng, channel_logits)
    region = rng.integers(0, len(REGIONS), n)
    frame = pd.DataFrame({
        "loan_amount": loan_amount,
        "term_months": term.astype(np.float64),
        "income": _with_missing(rng, np.round(income, -1), missing / 2),
        "years_employed": _with_missing(rng, np.round(tenure, 1), missing),
        "debt_to_income": np.round(dti, 3),
        "age": age,
        "purpose": np.asarray(PURPOSES, dtype=object)[purpose],
        "channel": np.asarray(CHANNELS, dtype=object)[channel],
        "region": np.asarray(REGIONS, dtype=object)[region],
    })
    return frame, {"lti": lti, "term": term.astype(np.float64), "region": region}


def _categorical_draw(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    return np.minimum((rng.random((len(cum), 1)) > cum).sum(axis=1), logits.shape[1] - 1)


def _bureau(rng: np.random.Generator, z: dict[str, np.ndarray], missing: float) -> pd.DataFrame:
    n = len(z["cap"])
    age = z["age"]
    disc, cap, synth = z["disc"], z["cap"], z["synth"]
    history = (age - 18) * 12 * _sigmoid(0.6 * z["stab"] + 0.6 * rng.standard_normal(n) + 0.5)
    history = np.where(synth, rng.uniform(2, 18, n), history)
    open_accounts = rng.poisson(np.exp(0.9 + 0.3 * cap + 0.2 * z["stab"]))
    utilization = np.clip(_sigmoid(-0.3 - 1.0 * disc - 0.3 * cap + 0.12 * rng.standard_normal(n)),
                          0.0, 1.0)
    utilization = np.where(open_accounts == 0, np.nan, np.round(utilization, 3))
    return pd.DataFrame({
        "history_length_months": np.round(history),
        "open_accounts": open_accounts.astype(np.float64),
        "utilization": _with_missing(rng, utilization, missing),
        "delinq_30d_24m": rng.poisson(np.exp(-1.0 - 1.0 * disc)).astype(np.float64),
        "delinq_90d_24m": rng.poisson(np.exp(-2.3 - 1.2 * disc)).astype(np.float64),
        "inquiries_6m": rng.poisson(np.exp(0.2 - 0.3 * cap - 0.3 * disc + 1.0 * synth)
                                    ).astype(np.float64),
        "prior_chargeoffs": rng.poisson(np.exp(-3.2 - 1.0 * disc)).astype(np.float64),
        "public_records": rng.poisson(np.exp(-3.5 - 0.5 * disc - 0.3 * z["stab"])
                                      ).astype(np.float64),
    })


def _social(rng: np.random.Generator, z: dict[str, np.ndarray], missing: float) -> pd.DataFrame:
    n = len(z["cap"])
    cap, disc, stab, net, synth = z["cap"], z["disc"], z["stab"], z["net"], z["synth"]
    account_age = np.exp(3.3 + 0.4 * stab + 0.2 * rng.standard_normal(n))
    account_age = np.where(synth, rng.uniform(0.5, 6, n), account_age)
    night = _sigmoid(-1.8 - 0.7 * disc + 0.15 * rng.standard_normal(n))
    return pd.DataFrame({
        "account_age_months": np.round(account_age, 1),
        "monthly_active_days": np.clip(np.round(20 + 5 * stab + 2 * rng.standard_normal(n)),
                                       1, 30),
        "night_activity_share": _with_missing(rng, np.round(night, 3), 2 * missing),
        "payment_count_90d": rng.poisson(np.exp(2.5 + 0.3 * cap + 0.2 * stab)
                                         ).astype(np.float64),
        "payment_amount_90d": _with_missing(
            rng, np.round(np.exp(6.0 + 0.6 * cap + 0.3 * rng.standard_normal(n)), 2), missing),
        "contact_count": np.round(np.exp(4.5 + 0.2 * stab + 0.5 * rng.standard_normal(n))),
        "contacts_default_share": np.round(
            _sigmoid(-2.5 + 0.9 * net + 0.1 * rng.standard_normal(n)), 4),
        "device_changes_12m": rng.poisson(np.exp(-1.2 - 0.4 * stab + 1.8 * synth)
                                          ).astype(np.float64),
        "loan_app_inquiries_30d": rng.poisson(
            np.exp(-0.6 - 0.4 * cap - 0.4 * disc + 0.3 * net + 1.8 * synth)).astype(np.float64),
    })


def default_probability(z: dict[str, np.ndarray], lti: np.ndarray, term: np.ndarray,
                        region: np.ndarray) -> np.ndarray:
    """Return the true 12-month default probability (the module docstring's formula)."""
    neg_disc = np.maximum(-z["disc"], 0.0)
    logit = (-2.7 - 0.8 * z["disc"] - 0.5 * z["cap"] + 0.6 * z["net"] - 0.25 * z["stab"]
             + 0.5 * neg_disc * np.maximum(z["net"], 0.0)
             + 0.6 * np.maximum(lti - 4.0, 0.0) / 4.0 * (1.0 + neg_disc)
             + 0.12 * (term - 36.0) / 12.0 + REGION_RISK[region.astype(int)])
    return np.where(z["synth"], 0.8, _sigmoid(logit))


def generate(
    n_customers: int, seed: int, settings: SyntheticSettings | None = None,
) -> Population:
    """Draw the three party tables for ``n_customers`` applicants (period 1).

    A later period's cohort of new applicants and what changed in it is
    :func:`credit_data.periods.period_population`, built on this function.

    Parameters
    ----------
    n_customers:
        Number of loan applicants (rows at the lender). The bureau and the social platform
        also hold people who never applied.
    seed:
        Fixes every draw.
    settings:
        Coverage, non-applicant ratios and the missing-value rate.

    Examples
    --------
    >>> pop = generate(2_000, seed=1)
    >>> sorted(pop.tables)
    ['bureau', 'lender', 'social']
    >>> pop.tables["lender"].n_rows
    2000
    >>> list(pop.tables["lender"].labels.columns)
    ['default_12m', 'fraud']
    >>> bool(pop.tables["lender"].labels.isin([0, 1]).all().all())
    True
    """
    s = settings or SyntheticSettings()
    _check(n_customers, s)
    rng = np.random.default_rng(seed)
    n = n_customers
    n_bureau_extra = int(round(n * s.bureau_non_applicants))
    n_social_extra = int(round(n * s.social_non_applicants))
    ids = _customer_ids(rng, n + n_bureau_extra + n_social_extra)
    applicant_ids = ids[:n]

    z = _with_age(rng, _latents(rng, n, synth_rate=0.015))
    lender, application = _lender(rng, z, s.missing_rate)
    p_default = default_probability(z, **application)
    lender.index = pd.Index(applicant_ids, name="customer_id")
    labels = _labels(rng, z, p_default, lender.index)

    in_bureau, in_social = _coverage(rng, z, lender["age"].to_numpy(), s)

    bureau = _party_rows(rng, z, in_bureau, applicant_ids, ids[n:n + n_bureau_extra], _bureau,
                         s.missing_rate)
    social = _party_rows(rng, z, in_social, applicant_ids, ids[n + n_bureau_extra:], _social,
                         s.missing_rate)

    stolen = _steal(np.random.default_rng([seed, STOLEN_STREAM]), z, in_bureau & in_social,
                    lender, {"bureau": bureau, "social": social}, applicant_ids, labels)
    fraud_type = np.where(z["synth"], "synthetic", np.where(stolen, "stolen", ""))
    truth = pd.DataFrame({"default_12m": p_default,
                          "fraud": np.where(stolen, STOLEN_CONFIRMED, 0.8 * z["synth"]),
                          "fraud_type": fraud_type}, index=lender.index)
    return _population(lender, labels, bureau, social, truth)


def _labels(rng: np.random.Generator, z: dict[str, np.ndarray], p_default: np.ndarray,
            index: pd.Index) -> pd.DataFrame:
    """Draw each applicant's default (at its true probability) and fraud (most synthetic IDs)."""
    n = len(p_default)
    default = (rng.random(n) < p_default).astype(np.int8)
    fraud = (z["synth"] & (rng.random(n) < 0.8)).astype(np.int8)
    return pd.DataFrame({"default_12m": default, "fraud": fraud}, index=index)


def _check(n_customers: int, s: SyntheticSettings) -> None:
    """Refuse a population size or synthetic setting outside its range, naming the key."""
    if n_customers < 100:
        raise ConfigError(f"data.n_customers must be at least 100, got {n_customers}")
    for key in ("bureau_coverage", "social_coverage", "missing_rate"):
        value = getattr(s, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"data.synthetic.{key} must lie in [0, 1], got {value}")
    for key in ("bureau_non_applicants", "social_non_applicants"):
        if getattr(s, key) < 0:
            raise ConfigError(f"data.synthetic.{key} must be >= 0, got {getattr(s, key)}")


def _coverage(rng: np.random.Generator, z: dict[str, np.ndarray], age: np.ndarray,
              s: SyntheticSettings) -> tuple[np.ndarray, np.ndarray]:
    """Draw which applicants the bureau and the platform know (the young less often)."""
    n = len(age)
    p_bureau = np.where(z["synth"], 0.1, np.where(age < 25, s.bureau_coverage * 0.8,
                                                  s.bureau_coverage))
    in_bureau = rng.random(n) < np.clip(p_bureau, 0, 1)
    in_social = z["synth"] | (rng.random(n) < s.social_coverage)
    return in_bureau, in_social


def _population(lender: pd.DataFrame, labels: pd.DataFrame, bureau: pd.DataFrame,
                social: pd.DataFrame, truth: pd.DataFrame) -> Population:
    """Wrap the drawn tables with their column roles."""
    return Population(
        name="synthetic",
        tables={
            "lender": PartyTable("lender", lender, LENDER_NUMERIC, LENDER_CATEGORICAL,
                                 "synthetic", labels=labels),
            "bureau": PartyTable("bureau", bureau, BUREAU_NUMERIC, (), "synthetic"),
            "social": PartyTable("social", social, SOCIAL_NUMERIC, (), "synthetic"),
        },
        truth=truth,
    )


STOLEN_STREAM = 21
STOLEN_RATE = 0.012  # among established applicants: about 0.8% of all applicants
STOLEN_CONFIRMED = 0.6


def _steal(rng: np.random.Generator, z: dict[str, np.ndarray], known_everywhere: np.ndarray,
           lender: pd.DataFrame, parties: dict[str, pd.DataFrame], applicant_ids: np.ndarray,
           labels: pd.DataFrame) -> np.ndarray:
    """Turn some established applicants into stolen identities, in place; return the mask.

    The frames are edited at the stolen applicants' rows only (see the module docstring).
    """
    n = len(applicant_ids)
    stolen = known_everywhere & ~z["synth"] & (z["stab"] > -0.5) & (rng.random(n) < STOLEN_RATE)
    ids, k = applicant_ids[stolen], int(stolen.sum())
    lender.loc[ids, "loan_amount"] = np.round(
        lender.loc[ids, "loan_amount"].to_numpy() * np.exp(0.6 + 0.2 * rng.standard_normal(k)),
        -1)
    by_app = rng.random(k) < 0.6
    lender.loc[ids[by_app], "channel"] = "app"
    social, bureau = parties["social"], parties["bureau"]
    social.loc[ids, "device_changes_12m"] += 1 + rng.poisson(0.7, k)
    social.loc[ids, "night_activity_share"] = np.clip(
        social.loc[ids, "night_activity_share"].to_numpy() + 0.15, 0, 1).round(3)
    social.loc[ids, "loan_app_inquiries_30d"] += rng.poisson(2.0, k)
    bureau.loc[ids, "inquiries_6m"] += rng.poisson(2.0, k)
    labels.loc[ids, "fraud"] = (rng.random(k) < STOLEN_CONFIRMED).astype(np.int8)
    return stolen


def _customer_ids(rng: np.random.Generator, total: int) -> np.ndarray:
    numbers = rng.permutation(total) + 10_000_000
    return ("C" + pd.Series(numbers).astype(str)).to_numpy(dtype=object)


def _party_rows(rng: np.random.Generator, z: dict[str, np.ndarray], known: np.ndarray,
                applicant_ids: np.ndarray, extra_ids: np.ndarray,
                features: Callable[[np.random.Generator, dict[str, np.ndarray], float],
                                   pd.DataFrame],
                missing: float) -> pd.DataFrame:
    """Rows for known applicants plus non-applicants, shuffled so order leaks nothing."""
    own = features(rng, {k: v[known] for k, v in z.items()}, missing)
    own.index = pd.Index(applicant_ids[known], name="customer_id")
    extra_z = _with_age(rng, _latents(rng, len(extra_ids), synth_rate=0.002))
    extra = features(rng, extra_z, missing)
    extra.index = pd.Index(extra_ids, name="customer_id")
    rows = pd.concat([own, extra])
    return rows.iloc[rng.permutation(len(rows))]


def synthetic_frames(n_customers: int, seed: int, settings: SyntheticSettings | None = None,
                     label: str = "default_12m") -> dict[str, pd.DataFrame]:
    """Return the synthetic population as a data scientist would hold it: a DataFrame per party.

    Each frame has the ID column ``customer_id`` and the party's columns; the lender's also has
    the ``label`` column (``default_12m`` or ``fraud``), and its text columns are of pandas'
    ``category`` type (which declares them categorical to :func:`credit_data.files.load_frames`).

    >>> frames = synthetic_frames(200, seed=0)
    >>> sorted(frames), list(frames["lender"].columns[:2]), str(frames["lender"]["region"].dtype)
    (['bureau', 'lender', 'social'], ['customer_id', 'loan_amount'], 'category')
    >>> frames["lender"].columns[-1]
    'default_12m'
    """
    if label not in LABELS:
        raise ConfigError(f"label must be one of {LABELS}, got '{label}'")
    population = generate(n_customers, seed, settings)
    frames = {}
    for party, table in population.tables.items():
        frame = table.frame.astype(dict.fromkeys(table.categorical, "category"))
        if table.labels is not None:
            frame = frame.join(table.labels[[label]])
        frames[party] = frame.reset_index()
    return frames
