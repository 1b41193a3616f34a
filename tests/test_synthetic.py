import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from credit_data.errors import ConfigError
from credit_data.settings import SyntheticSettings
from credit_data.synthetic import generate

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pop():
    return generate(20_000, seed=7)


def test_same_seed_same_tables_other_seed_other_tables():
    a, b, c = generate(1_000, seed=3), generate(1_000, seed=3), generate(1_000, seed=4)
    for party in a.tables:
        pd.testing.assert_frame_equal(a.tables[party].frame, b.tables[party].frame)
    assert not a.tables["lender"].frame.equals(c.tables["lender"].frame)


def test_columns_of_each_party(pop):
    social = pop.tables["social"]
    assert len(social.features) >= 8
    assert {"account_age_months", "monthly_active_days", "night_activity_share",
            "payment_count_90d", "payment_amount_90d", "contact_count", "contacts_default_share",
            "device_changes_12m", "loan_app_inquiries_30d"} <= set(social.features)
    lender = pop.tables["lender"]
    assert {"loan_amount", "term_months", "purpose", "income", "years_employed",
            "debt_to_income", "channel", "age", "region"} == set(lender.features)
    assert set(lender.categorical) == {"purpose", "channel", "region"}
    assert list(lender.labels.columns) == ["default_12m", "fraud"]
    assert {"history_length_months", "open_accounts", "utilization", "delinq_30d_24m",
            "delinq_90d_24m", "inquiries_6m", "prior_chargeoffs",
            "public_records"} == set(pop.tables["bureau"].features)
    for table in pop.tables.values():
        assert table.frame.index.is_unique
        assert all(isinstance(i, str) for i in table.frame.index[:10])


def test_coverage_is_partial_and_parties_hold_non_applicants(pop):
    applicants = pop.tables["lender"].frame.index
    for party in ("bureau", "social"):
        ids = pop.tables[party].frame.index
        known = applicants.isin(ids).mean()
        assert 0.8 < known < 0.99, (party, known)
        assert (~ids.isin(applicants)).sum() > 0.5 * len(applicants)


def test_some_columns_have_missing_values(pop):
    missing = {p: t.frame.isna().any() for p, t in pop.tables.items()}
    assert missing["lender"]["income"] and missing["lender"]["years_employed"]
    assert missing["bureau"]["utilization"] and missing["social"]["night_activity_share"]
    assert not any(t.frame.isna().all().any() for t in pop.tables.values())


def test_labels_and_oracle(pop):
    labels = pop.tables["lender"].labels
    assert 0.08 < labels["default_12m"].mean() < 0.2
    assert 0.005 < labels["fraud"].mean() < 0.03
    oracle = roc_auc_score(labels["default_12m"], pop.truth["default_12m"])
    assert 0.78 < oracle < 0.9


def test_fraud_follows_the_synthetic_identity_pattern(pop):
    fraud = pop.tables["lender"].labels["fraud"] == 1
    kind = pop.truth["fraud_type"]
    fraud_ids, genuine_ids = fraud.index[fraud & (kind == "synthetic")], fraud.index[~fraud]
    social = pop.tables["social"].frame
    f, g = social.reindex(fraud_ids), social.reindex(genuine_ids)
    assert f["account_age_months"].median() < 0.3 * g["account_age_months"].median()
    assert f["device_changes_12m"].mean() > 3 * g["device_changes_12m"].mean()
    assert f["loan_app_inquiries_30d"].mean() > 3 * g["loan_app_inquiries_30d"].mean()
    bureau_known = fraud_ids.isin(pop.tables["bureau"].frame.index).mean()
    assert bureau_known < 0.3  # thin file


def test_stolen_identities_are_established_people_applying_out_of_character(pop):
    kind, labels = pop.truth["fraud_type"], pop.tables["lender"].labels
    stolen, genuine = kind.index[kind == "stolen"], kind.index[kind == ""]
    assert 0.004 < len(stolen) / len(kind) < 0.012
    assert set(kind.unique()) == {"", "synthetic", "stolen"}
    # the victim's own history: known everywhere, an account as old as anyone's
    assert stolen.isin(pop.tables["bureau"].frame.index).all()
    social = pop.tables["social"].frame
    s, g = social.reindex(stolen), social.reindex(genuine).dropna(how="all")
    assert s["account_age_months"].median() > 0.8 * g["account_age_months"].median()
    # what the fraudster does: a recent device change, night activity, loan-app shopping
    assert s["device_changes_12m"].mean() > g["device_changes_12m"].mean() + 1
    assert s["night_activity_share"].mean() > g["night_activity_share"].mean() + 0.1
    assert s["loan_app_inquiries_30d"].mean() > g["loan_app_inquiries_30d"].mean() + 1.5
    assert 0.4 < labels.loc[stolen, "fraud"].mean() < 0.8  # the victim's dispute confirms it
    assert labels.loc[kind.index[kind == ""], "fraud"].sum() == 0


def test_stolen_identities_leave_everyone_else_as_they_were():
    import credit_data.synthetic as synthetic

    with_stolen = generate(3_000, seed=4)
    rate, synthetic.STOLEN_RATE = synthetic.STOLEN_RATE, 0.0
    try:
        without = generate(3_000, seed=4)
    finally:
        synthetic.STOLEN_RATE = rate
    genuine = with_stolen.truth.index[with_stolen.truth["fraud_type"] != "stolen"]
    for party in ("lender", "bureau", "social"):
        a, b = with_stolen.tables[party].frame, without.tables[party].frame
        keep = a.index.intersection(genuine.union(a.index.difference(with_stolen.truth.index)))
        pd.testing.assert_frame_equal(a.loc[keep], b.loc[keep])


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"bureau_coverage": 1.5}, "data.synthetic.bureau_coverage"),
    ({"social_non_applicants": -1.0}, "data.synthetic.social_non_applicants"),
])
def test_bad_synthetic_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        generate(1_000, seed=0, settings=SyntheticSettings(**kwargs))


def test_too_few_customers_names_the_key():
    with pytest.raises(ConfigError, match="data.n_customers"):
        generate(10, seed=0)


def test_risk_is_non_linear_with_cross_party_interaction():
    from credit_data.synthetic import default_probability

    n = 4
    z = {"cap": np.zeros(n), "stab": np.zeros(n), "synth": np.zeros(n, dtype=bool),
         "disc": np.array([0.0, -2.0, 0.0, -2.0]), "net": np.array([0.0, 0.0, 2.0, 2.0])}
    p = default_probability(z, lti=np.full(n, 2.0), term=np.full(n, 36.0), region=np.full(n, 2))
    logit = np.log(p / (1 - p))
    # discipline (bureau) and social circle (social) add more together than apart
    assert logit[3] - logit[0] > (logit[1] - logit[0]) + (logit[2] - logit[0]) + 1.0
