"""Per-patient intensity normalisation of 2D slice files and missing-modality augmentation:
a patient's slices are normalised together (as one volume), the same way in training,
evaluation and prediction, and a package says which rule it was trained with."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medlens.errors import ConfigError
from medlens.segment.config import SegmentConfig, make_config
from medlens.segment.data import build_slices
from medlens.segment.layouts import load_segmentation_dataset
from medlens.segment.predict import predict_files, read_images
from medlens.segment.task import SegmentAugment
from medlens.train.config import TrainConfig
from medlens.transforms.intensity import PercentileWindow, apply_to_group
from tests.segment.conftest import tree_hash

GEOMETRY_OFF = {"flip": False, "rotate_deg": 0.0, "scale": 0.0, "shift": 0.0, "intensity": 0.0}


def test_group_statistics_keep_a_dim_slice_dim():
    rng = np.random.default_rng(0)
    bright = rng.integers(0, 200, (1, 16, 16)).astype(np.uint8)
    dim = (bright // 2).astype(np.uint8)
    together = apply_to_group(PercentileWindow(), [bright, dim])
    alone = [PercentileWindow().apply(bright), PercentileWindow().apply(dim)]
    assert together[0].shape == bright.shape and together[1].dtype == np.uint8
    # together: the dim slice stays about half as bright; alone: both stretched to full range
    assert together[1].mean() < 0.6 * together[0].mean()
    assert abs(float(alone[1].mean()) - float(alone[0].mean())) < 3
    # different slice sizes are fine; the result is the policy applied to all voxels at once
    small = bright[:, :8, :12]
    out = apply_to_group(PercentileWindow(), [bright, small])
    assert out[1].shape == small.shape


def _darken(src: Path, dst: Path, patient: str, factor: float) -> None:
    shutil.copytree(src, dst)
    for f in (dst / patient).glob("*.tif"):
        if not f.name.endswith("_mask.tif"):
            a = np.asarray(Image.open(f)).astype(np.float64) * factor
            Image.fromarray(a.round().astype(np.uint8)).save(f)


def test_per_patient_normalisation_removes_a_patients_brightness(kaggle_set, tmp_path):
    patient = sorted(p.name for p in kaggle_set.iterdir() if p.is_dir())[0]
    dark = tmp_path / "dark"
    _darken(kaggle_set, dark, patient, 0.35)

    def images(root: Path, scope: str) -> np.ndarray:
        sl = build_slices(load_segmentation_dataset(root), size=None, slice_intensity=scope)
        return sl.images[sl.patients == patient].astype(np.float64)

    raw_gap = np.abs(images(kaggle_set, "none") - images(dark, "none")).mean()
    norm_gap = np.abs(images(kaggle_set, "patient") - images(dark, "patient")).mean()
    assert raw_gap > 10 and norm_gap < 0.2 * raw_gap


def test_prediction_reads_a_folder_as_one_patient_like_training(kaggle_set):
    patient = sorted(p for p in kaggle_set.iterdir() if p.is_dir())[0]
    meta = {"input": {"channels": 3}, "preprocess": {"intensity": {"kind": "percentile"},
                                                     "slice_intensity": "patient"}}
    files = sorted(f for f in patient.glob("*.tif") if not f.name.endswith("_mask.tif"))
    got = read_images(meta, files)
    sl = build_slices(load_segmentation_dataset(kaggle_set), size=None, slice_intensity="patient")
    by_source = {Path(s): im for s, im in zip(sl.sources, sl.images)}
    for f in files:
        np.testing.assert_array_equal(got[f], by_source[f])
    # a package without the rule (older ones) reads files as stored
    plain = read_images({"input": {"channels": 3}}, files[:1])[files[0]]
    np.testing.assert_array_equal(np.moveaxis(plain, 0, -1), np.asarray(Image.open(files[0])))


def test_training_stores_the_rule_and_predict_applies_it(kaggle_set, tmp_path):
    from medlens.package import ModelPackage
    from medlens.segment.workflow import train_segmentation

    cfg = SegmentConfig(data=str(kaggle_set), size=32, model="test_unet", slice_intensity="patient",
                        val_fraction=0.25, test_fraction=0.25,
                        train=TrainConfig(epochs=1, batch_size=8, progress=False, threads=1))
    train_segmentation(cfg, tmp_path / "run")
    pkg = ModelPackage(tmp_path / "run")
    assert pkg.metadata["preprocess"]["slice_intensity"] == "patient"
    patient = sorted(p for p in kaggle_set.iterdir() if p.is_dir())[0]
    dark = tmp_path / "dark"
    _darken(kaggle_set, dark, patient.name, 0.35)
    before = tree_hash(dark)
    a = predict_files(pkg.model, pkg.metadata, [patient], tmp_path / "p1")
    b = predict_files(pkg.model, pkg.metadata, [dark / patient.name], tmp_path / "p2")
    assert tree_hash(dark) == before
    # the darkened copy of the patient is normalised back: nearly the same answers
    pa = np.array([r["max_probability"] for r in a])
    pb = np.array([r["max_probability"] for r in b])
    assert len(pa) == len(pb) > 0 and np.abs(pa - pb).max() < 0.05


def test_channel_copy_replaces_channels_with_others_only():
    x = torch.stack([torch.full((6, 6), float(c)) for c in range(3)])[None].repeat(64, 1, 1, 1)
    y = (torch.rand(64, 1, 6, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    xa, ya = SegmentAugment(**GEOMETRY_OFF, channel_copy=1.0)(x.clone(), y.clone(), torch.Generator().manual_seed(1))
    assert torch.equal(ya, y)
    vals = xa[:, :, 0, 0]
    assert (vals != torch.arange(3.0)).all()  # p=1: every channel took another channel's values
    assert torch.equal(xa, vals[:, :, None, None].expand_as(xa))  # whole channels copied, not mixed
    some, _ = SegmentAugment(**GEOMETRY_OFF, channel_copy=0.3)(x.clone(), y.clone(), torch.Generator().manual_seed(2))
    share = float((some[:, :, 0, 0] != torch.arange(3.0)).float().mean())
    assert 0.15 < share < 0.45
    one = torch.rand(4, 1, 6, 6)
    same, _ = SegmentAugment(**GEOMETRY_OFF, channel_copy=1.0)(one.clone(), y[:4].clone(), torch.Generator())
    assert torch.equal(same, one)  # one channel: nothing to copy from


def test_config_takes_channel_copy_and_the_slice_rule():
    cfg = make_config(data="x", augment_acquisition={"channel_copy": 0.2}, slice_intensity="patient")
    assert cfg.augment_acquisition == {"channel_copy": 0.2} and cfg.slice_intensity == "patient"
    with pytest.raises(ConfigError, match="channel_copy must be between 0 and 1"):
        make_config(data="x", augment_acquisition={"channel_copy": 1.5})
    with pytest.raises(ConfigError, match="slice_intensity"):
        make_config(data="x", slice_intensity="slice")


def test_config_file_training_settings_are_kept_under_the_flags(tmp_path):
    """A --config file's `train` settings override the segmentation defaults; flags override both."""
    import json

    from medlens.segment.workflow import config_from_cli

    f = tmp_path / "c.json"
    f.write_text(json.dumps({"train": {"epochs": 80, "keep": "last"}, "slice_intensity": "patient"}))
    cfg = config_from_cli(data=tmp_path, config=f, options={})
    assert (cfg.train.epochs, cfg.train.keep, cfg.train.lr, cfg.slice_intensity) == (80, "last", 3e-3, "patient")
    assert config_from_cli(data=tmp_path, config=f, options={"epochs": 3}).train.epochs == 3


def test_defaults_are_the_measured_recipe_and_patience_asks_for_early_stopping(tmp_path):
    """The defaults chosen by leave-one-institution-out CV (README): per-patient intensities,
    acquisition augmentation with missing sequences, the last weights of the whole schedule."""
    from medlens.segment.config import DEFAULT_ACQUISITION
    from medlens.segment.workflow import config_from_cli

    cfg = config_from_cli(data=tmp_path, config=None, options={})
    assert cfg.slice_intensity == "patient" and cfg.train.keep == "last"
    assert cfg.augment_acquisition == DEFAULT_ACQUISITION and DEFAULT_ACQUISITION["channel_copy"] > 0
    stop = config_from_cli(data=tmp_path, config=None, options={"patience": 5})
    assert (stop.train.keep, stop.train.patience) == ("best", 5)
    off = make_config(data="x", augment_acquisition={})
    assert off.augment_acquisition == {}  # {} turns it off
