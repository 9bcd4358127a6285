"""Model registry, networks and local pretrained-weight loading (tiny, CPU, no downloads)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from medlens.errors import BadInputError, ConfigError
from medlens.models import create_model, list_models, load_pretrained, model_info
from medlens.models.pretrained import adapt_input_channels
from medlens.models.registry import MODELS, register_model

TINY = ["test_cnn", "test_cancernet", "test_resnet", "lenet", "cancernet"]
# full-size architectures, run once at a small input (small stem where supported)
FULL = {
    "resnet18": 32, "resnet50": 32, "resnet101": 32, "densenet121": 32,
    "efficientnet_b0": 32, "efficientnet_b1": 32, "mobilenetv3_small": 32,
    "mobilenetv3_large": 32, "melanoma_cnn": 32,
    # no small stem: 64 px keeps a 2×2 CAM map (the ImageNet stride of 32)
    "efficientnet_lite0": 64, "efficientnet_lite1": 64, "efficientnet_lite2": 64,
}  # fmt: skip
# torchvision's parameter counts at 1000 classes: proves the architectures are the real ones
REFERENCE_PARAMS = {
    "resnet18": 11_689_512, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "densenet121": 7_978_856, "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184,
    "mobilenetv3_small": 2_542_856, "mobilenetv3_large": 5_483_032,
}  # fmt: skip


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _own_models() -> list[str]:
    """Classification models registered in medlens.models (not e.g. segmentation U-Nets)."""
    return [
        n for n in list_models() if MODELS.get(n).factory.__module__.startswith("medlens.models")
        and MODELS.get(n).family != "ensemble"  # built from trained members: test_ensemble.py
    ]


def _step(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    model.train()
    out = model(x)
    assert out.shape == (x.shape[0], num_classes)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def test_every_model_is_covered_by_these_tests() -> None:
    assert set(_own_models()) == set(TINY) | set(FULL) | {"test_cnn"}


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [28, 50])
def test_tiny_forward_backward(name: str, in_channels: int, size: int) -> None:
    model = create_model(name, num_classes=3, in_channels=in_channels, input_size=size)
    _step(model, torch.randn(2, in_channels, size, size), 3)
    assert model.medlens_name == name
    assert _has_conv(model.get_submodule(model.cam_layer))


@pytest.mark.parametrize("name", sorted(FULL))
def test_full_models_small_input(name: str) -> None:
    size = FULL[name]
    model = create_model(name, num_classes=2, in_channels=1, input_size=size)
    _step(model, torch.randn(2, 1, size, size), 2)
    target = model.get_submodule(model.cam_layer)
    assert _has_conv(target)
    assert model_info(name)["cam_layer"] == model.cam_layer
    # the CAM layer keeps spatial extent at this small input
    seen = {}

    def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
        seen["shape"] = output.shape

    handle = target.register_forward_hook(hook)
    model.eval()(torch.randn(1, 1, size, size))
    handle.remove()
    assert len(seen["shape"]) == 4 and seen["shape"][-1] >= 2


@pytest.mark.parametrize("name", ["test_cnn", "test_cancernet", "test_resnet", "mobilenetv3_small"])
def test_3d(name: str) -> None:
    model = create_model(name, num_classes=2, in_channels=1, spatial_dims=3, input_size=16)
    _step(model, torch.randn(2, 1, 16, 16, 16), 2)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_reference_parameter_counts(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[name]


def test_small_stem_chosen_by_input_size() -> None:
    small = create_model("resnet18", num_classes=2, input_size=28)
    large = create_model("resnet18", num_classes=2)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    forced = create_model("resnet18", num_classes=2, input_size=28, small_stem=False)
    assert forced.conv1.kernel_size == (7, 7)
    x = torch.randn(1, 3, 28, 28)
    assert _layer4(small, x).shape[-2:] == (4, 4) and _layer4(large, x).shape[-2:] == (1, 1)


def test_cancernet_layout() -> None:
    model = create_model("cancernet", num_classes=2)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    pointwise = [c for c in convs if c.kernel_size == (1, 1)]
    assert [c.out_channels for c in pointwise] == [32, 64, 64, 128, 128, 128]
    assert [c.groups for c in depthwise] == [3, 32, 64, 64, 128, 128]
    assert all(c.padding == (1, 1) and c.bias is None for c in depthwise)
    assert len(convs) == 12
    dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.25, 0.25, 0.25, 0.5]
    # at the original 50-px input the head is the Keras one: Flatten(6*6*128) → Dense 256
    assert model.head[1].in_features == 6 * 6 * 128 and model.head[1].out_features == 256
    n_params = sum(p.numel() for p in model.parameters())
    print(f"cancernet parameters (3 channels, 2 classes): {n_params}")
    assert 1_000_000 < n_params < 1_400_000
    assert model(torch.randn(2, 3, 50, 50)).shape == (2, 2)


def test_typo_suggests_name() -> None:
    with pytest.raises(ConfigError, match="Did you mean.*cancernet"):
        create_model("cancernett", num_classes=2)
    with pytest.raises(ConfigError, match="Did you mean"):
        model_info("resnet181")


@pytest.mark.parametrize(
    "kwargs",
    [{"num_classes": 0}, {"num_classes": 2, "in_channels": 0},
     {"num_classes": 2, "spatial_dims": 4},
     {"num_classes": 2, "width": 3}, {"num_classes": 2, "pretrained": True}],
)  # fmt: skip
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        create_model("test_cnn", **kwargs)


@pytest.fixture
def probe_name():
    name = "test_registry_probe"
    yield name
    MODELS._items.pop(name, None)  # keep the global registry clean for other tests


def test_register_model_metadata_and_fallback_cam_layer(probe_name: str) -> None:
    name = probe_name
    if name not in MODELS:

        @register_model(name, input_size=12, family="probe", channels_last=True)
        def _probe(*, num_classes: int, in_channels: int = 3, spatial_dims: int = 2):
            return nn.Sequential(
                nn.Conv2d(in_channels, 4, 3), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1),
                nn.Flatten(), nn.Linear(4, num_classes),
            )  # fmt: skip

    info = model_info(name)
    assert info == {"name": name, "input_size": 12, "family": "probe", "channels_last": True,
                    "cam_layer": "1", "weights": [], "normalize": None, "head": None}  # fmt: skip
    assert name in list_models("test_reg*")
    with pytest.raises(ValueError, match="twice"):
        register_model(name)(lambda **kw: None)
    with pytest.raises(ValueError, match="timm"):
        register_model("timm/x")


def _layer4(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.layer4.register_forward_hook(lambda m, i, o: seen.append(o))
    model.eval()(x)
    handle.remove()
    return seen[0]


def test_pretrained_round_trip_rgb_to_grey(tmp_path) -> None:
    source = create_model("test_resnet", num_classes=5, in_channels=3)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = create_model("test_resnet", num_classes=2, in_channels=1, pretrained=path)
    report = model.pretrained_report
    assert torch.allclose(model.conv1.weight, source.conv1.weight.sum(1, keepdim=True))
    assert report["adapted"] == ["conv1.weight"]
    assert set(report["skipped"]) == {"fc.weight", "fc.bias"}
    assert not torch.equal(model.fc.weight, source.fc.weight[:2])
    assert report["missing"] == [] and report["unexpected"] == []
    assert torch.equal(model.layer4[0].conv1.weight, source.layer4[0].conv1.weight)
    # a grey image through the grey model equals the same image as RGB through the source
    grey = torch.randn(1, 1, 32, 32)
    assert torch.allclose(_layer4(source, grey.repeat(1, 3, 1, 1)), _layer4(model, grey), atol=1e-5)
    with pytest.raises(ConfigError, match="strict"):
        load_pretrained(model, path, strict=True)


def test_pretrained_grey_to_rgb_and_errors(tmp_path) -> None:
    grey = create_model("mobilenetv3_small", num_classes=2, in_channels=1, input_size=32)
    path = tmp_path / "grey.pt"
    torch.save(grey.state_dict(), path)
    rgb = create_model("mobilenetv3_small", num_classes=2, in_channels=3, input_size=32)
    report = load_pretrained(rgb, path, strict=True)
    assert report["adapted"] == ["features.0.0.weight"] and not report["skipped"]
    assert torch.allclose(
        rgb.features[0][0].weight, grey.features[0][0].weight.repeat(1, 3, 1, 1) / 3
    )
    with pytest.raises(BadInputError, match="not found"):
        load_pretrained(rgb, tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match="bad.pth"):
        load_pretrained(rgb, bad)
    other = tmp_path / "other.pth"
    torch.save({"x.weight": torch.zeros(3)}, other)
    with pytest.raises(ConfigError, match="No tensor"):
        load_pretrained(rgb, other)


def test_adapt_input_channels_rules() -> None:
    w = torch.randn(4, 3, 3, 3)
    assert torch.allclose(adapt_input_channels(w, 1), w.sum(1, keepdim=True))
    w4 = torch.randn(4, 4, 3, 3)
    assert torch.allclose(adapt_input_channels(w4, 1), w4.mean(1, keepdim=True))
    w1 = torch.randn(4, 1, 3, 3)
    assert torch.allclose(adapt_input_channels(w1, 3), w1.repeat(1, 3, 1, 1) / 3)
    assert adapt_input_channels(w, 4).shape == (4, 4, 3, 3)


def test_safetensors_weights(tmp_path) -> None:
    st = pytest.importorskip("safetensors.torch")
    source = create_model("test_cnn", num_classes=2)
    path = tmp_path / "w.safetensors"
    st.save_file(source.state_dict(), str(path))
    model = create_model("test_cnn", num_classes=2, pretrained=str(path))
    assert torch.equal(model.head[-1].weight, source.head[-1].weight)


def test_timm_absent_gives_install_hint(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    with pytest.raises(ConfigError, match=r'pip install "medlens\[timm\]".*torch==2\.14\.1'):
        create_model("timm/resnet18", num_classes=2)
    assert model_info("timm/resnet18")["family"] == "timm"


def test_medlens_config_rebuilds_the_same_model() -> None:
    model = create_model("test_cancernet", num_classes=4, in_channels=1, input_size=40)
    config = dict(model.medlens_config)
    assert config["name"] == "test_cancernet" and config["input_size"] == 40
    rebuilt = create_model(config.pop("name"), **config)
    rebuilt.load_state_dict(model.state_dict())  # same keys and shapes


def test_timm_path_with_a_stand_in_module(monkeypatch) -> None:
    """Checks the arguments handed to timm and the CAM layer read from feature_info."""
    calls = {}

    def fake_create(arch, pretrained, num_classes, in_chans, **kw):
        calls.update(arch=arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
        if pretrained:
            raise OSError("no network")
        model = nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(4, num_classes))  # fmt: skip
        model.feature_info = [{"module": "0"}]
        return model

    fake = types.SimpleNamespace(
        create_model=fake_create, is_model=lambda a: a == "resnet18",
        list_models=lambda: ["resnet18", "resnet34"],
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "timm", fake)
    model = create_model("timm/resnet18", num_classes=3, in_channels=1, input_size=28)
    assert calls == {"arch": "resnet18", "pretrained": False, "num_classes": 3, "in_chans": 1}
    assert model.cam_layer == "0" and model.medlens_name == "timm/resnet18"
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ConfigError, match="local weights file"):
        create_model("timm/resnet18", num_classes=3, pretrained=True)
    with pytest.raises(ConfigError, match="Did you mean timm/resnet18"):
        create_model("timm/resnet81", num_classes=3)
    with pytest.raises(ConfigError, match="2D only"):
        create_model("timm/resnet18", num_classes=3, spatial_dims=3)
