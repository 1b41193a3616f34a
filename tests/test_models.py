import pytest
import torch
from opacus.validators import ModuleValidator

from credit_data.errors import ConfigError
from models.factory import build_model
from models.networks import SplitModel
from models.settings import ModelKind, ModelSettings

pytestmark = pytest.mark.unit

WIDTHS = {"lender": 5, "bureau": 3, "social": 4}


@pytest.mark.parametrize("kind", list(ModelKind))
def test_every_model_passes_opacus_validator_and_scores_each_row(kind):
    model = build_model(ModelSettings(kind=kind), WIDTHS)
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model(torch.randn(7, 12)).shape == (7,)


def test_split_model_is_encoders_then_head_on_each_partys_columns():
    torch.manual_seed(0)
    model = SplitModel(WIDTHS, (6,), 2, (4,), dropout=0.0).eval()
    x = torch.randn(9, 12)
    parts = {"lender": x[:, :5], "bureau": x[:, 5:8], "social": x[:, 8:]}
    embeddings = torch.cat([model.encoders[p](parts[p]) for p in WIDTHS], dim=1)
    assert torch.allclose(model(x), model.head(embeddings))
    # changing the bureau's columns moves only the bureau's embedding
    y = x.clone()
    y[:, 5:8] += 1.0
    lender_then_bureau = torch.cat([model.encoders["lender"](x[:, :5]),
                                    model.encoders["bureau"](y[:, 5:8]),
                                    model.encoders["social"](x[:, 8:])], dim=1)
    assert torch.allclose(model(y), model.head(lender_then_bureau))


@pytest.mark.parametrize(("settings", "key"), [
    (ModelSettings(hidden=(0,)), "model.hidden"),
    (ModelSettings(dropout=1.0), "model.dropout"),
    (ModelSettings(kind=ModelKind.split_mlp, embedding_dim=0), "model.embedding_dim"),
])
def test_bad_model_settings_name_the_key(settings, key):
    with pytest.raises(ConfigError, match=key):
        build_model(settings, WIDTHS)


def test_training_starts_at_the_base_rate():
    from models.networks import LogisticRegression
    from models.training import start_at_base_rate

    model = LogisticRegression(4)
    start_at_base_rate(model, 0.13)
    p = torch.sigmoid(model(torch.zeros(1, 4))).item()
    assert p == pytest.approx(0.13, abs=1e-6)
