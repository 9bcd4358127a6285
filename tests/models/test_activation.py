"""`model.activation` for medlens' own CNNs: default unchanged, recorded in the package, loads back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medlens.errors import ConfigError
from medlens.models import create_model


@pytest.mark.parametrize("name", ["test_cnn", "test_cancernet", "lenet"])
def test_default_is_relu_and_outputs_do_not_change(name: str) -> None:
    x = torch.rand(2, 3, 32, 32)
    torch.manual_seed(0)
    default = create_model(name, num_classes=2, in_channels=3).eval()
    torch.manual_seed(0)
    relu = create_model(name, num_classes=2, in_channels=3, activation="relu").eval()
    torch.manual_seed(0)
    elu = create_model(name, num_classes=2, in_channels=3, activation="elu").eval()
    assert "activation" not in default.medlens_config  # old packages and configs stay byte-identical
    assert any(isinstance(m, nn.ReLU) for m in default.modules())
    assert torch.equal(default(x), relu(x))
    assert not any(isinstance(m, nn.ReLU) for m in elu.modules()) and any(isinstance(m, nn.ELU) for m in elu.modules())
    assert not torch.allclose(default(x), elu(x))


def test_activation_round_trips_through_the_package(tmp_path) -> None:
    from medlens.package import load_model, save_model_package

    torch.manual_seed(1)
    kwargs = {"num_classes": 2, "in_channels": 3, "activation": "gelu"}
    model = create_model("test_cnn", **kwargs).eval()
    meta = {"task": "classify", "classes": ["a", "b"], "input": {"size": 32, "channels": 3},
            "preprocess": {"size": 32, "channels": 3}, "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_model_package(tmp_path / "pkg", model, model_name="test_cnn", model_kwargs=kwargs, metadata=meta)
    pkg = load_model(tmp_path / "pkg")
    assert pkg.metadata["model"]["kwargs"]["activation"] == "gelu"
    assert any(isinstance(m, nn.GELU) for m in pkg.model.modules())
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(pkg.model(x), model(x))


def test_config_field_and_errors() -> None:
    from medlens.pipelines.config import ModelConfig

    assert ModelConfig().kwargs == {} and ModelConfig().activation is None
    assert ModelConfig(name="test_cnn", activation="selu").kwargs == {"activation": "selu"}
    with pytest.raises(ConfigError, match="disagree"):
        ModelConfig(activation="elu", kwargs={"activation": "gelu"})
    with pytest.raises(ConfigError, match="elu"):  # did you mean …, with the valid names
        create_model("test_cnn", num_classes=2, activation="elux")
    with pytest.raises(ConfigError, match="does not accept option"):  # MONAI/timm backbones: not applicable
        create_model("test_resnet", num_classes=2, activation="elu")
