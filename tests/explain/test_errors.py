"""Clear errors for the mistakes users make."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medlens.errors import BadInputError, ConfigError
from medlens.explain import conv_layer_names, explain, resolve_layer

from .conftest import TinyCNN


def test_unknown_layer_did_you_mean():
    model = TinyCNN().eval()
    with pytest.raises(ConfigError) as err:
        explain(model, torch.randn(1, 3, 16, 16), method="gradcam", layer="feature.3")
    msg = str(err.value)
    assert "Did you mean 'features.3'" in msg
    assert "Convolutional layers: features.0, features.3" in msg


def test_registered_default_layer_and_fallback():
    model = TinyCNN()
    assert resolve_layer(model) == "features.3"
    assert resolve_layer(model, "features.0") == "features.0"
    plain = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.Conv2d(2, 2, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2, 2),
    )
    assert conv_layer_names(plain) == ["0", "1"]
    assert resolve_layer(plain) == "1"


def test_non_spatial_layer_is_refused():
    with pytest.raises(ConfigError, match="not a spatial feature map"):
        explain(TinyCNN().eval(), torch.randn(1, 3, 16, 16), method="gradcam", layer="fc")


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_model_without_convs_names_working_methods(method):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    with pytest.raises(ConfigError) as err:
        explain(model, torch.randn(1, 3, 8, 8), method=method)
    for ok in ("lime", "occlusion", "integrated-gradients"):
        assert ok in str(err.value)
    # ... and those methods do work on it
    assert explain(model, torch.randn(1, 3, 8, 8), method="occlusion").shape == (1, 8, 8)


@pytest.mark.parametrize("target", [2, -1, 99])
def test_target_out_of_range(target):
    with pytest.raises(ConfigError, match="out of range"):
        explain(TinyCNN().eval(), torch.randn(1, 3, 16, 16), method="gradcam", target=target)


def test_wrong_channel_count_names_expected_and_got():
    with pytest.raises(BadInputError, match=r"expects images with 3 channel\(s\), got 1"):
        explain(TinyCNN().eval(), torch.randn(1, 1, 16, 16), method="gradcam")


def test_unknown_method_and_option():
    with pytest.raises(ConfigError, match="Did you mean 'gradcam'"):
        explain(TinyCNN().eval(), torch.randn(1, 3, 16, 16), method="gradcm")
    with pytest.raises(ConfigError, match="Unknown option"):
        explain(TinyCNN().eval(), torch.randn(1, 3, 16, 16), method="gradcam", n_samples=3)


def test_bad_shape():
    with pytest.raises(BadInputError, match="Expected a batch"):
        explain(TinyCNN().eval(), torch.randn(3, 16, 16), method="gradcam")
