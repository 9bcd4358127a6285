"""3D segmentation: patches from whole volumes, sliding-window inference, volume metrics,
predictions written with the input's geometry, and the CLI's --spatial-dims 3."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from typer.testing import CliRunner

from medlens.data.synthetic import GENERATORS, make_brain_mri_like
from medlens.errors import ConfigError
from medlens.io.volumes import read_volume, write_volume
from medlens.segment.config import SegmentConfig, parse_patch
from medlens.segment.evaluation import evaluate_package
from medlens.segment.layouts import load_segmentation_dataset
from medlens.segment.predict import predict_files, predict_volume
from medlens.segment.task import SegmentAugment
from medlens.segment.volumes import PatchLoader, build_volumes, resolve_patch
from medlens.segment.workflow import train_segmentation
from tests.segment.conftest import (
    ShapeProbe,
    assert_run_directory,
    train_leaving_data_untouched,
    tree_hash,
)

runner = CliRunner()
PATCH = [16, 16, 16]  # smaller than the 16×32×32 volumes in-plane: sliding windows at evaluation


@pytest.fixture(scope="module")
def easy_volumes(tmp_path_factory):
    """Four NIfTI patients, 16 slices of 32×32, every one with an obvious lesion."""
    return make_brain_mri_like(tmp_path_factory.mktemp("vol3d") / "data", patients=4, slices=16, size=32,
                               difficulty=0.0, seed=3, fmt="nifti", lesion_fraction=1.0)


@pytest.fixture(scope="module")
def run3d(easy_volumes, tmp_path_factory):
    run = tmp_path_factory.mktemp("run3d") / "run"
    cfg = SegmentConfig(data=str(easy_volumes), size=None, model="test_unet", spatial_dims=3, patch=PATCH,
                        val_fraction=0.25, test_fraction=0.25, samples_per_volume=100,
                        train={"epochs": 4, "batch_size": 4, "lr": 1e-2, "max_steps_per_epoch": 10,
                               "progress": False, "threads": 1, "patience": 50})
    return run, train_leaving_data_untouched(cfg, run)


def test_3d_training_writes_run_and_learns(run3d):
    run, metrics = run3d
    meta = assert_run_directory(run)
    assert meta["input"]["spatial_dims"] == 3 and meta["input"]["patch"] == PATCH
    assert meta["model"]["kwargs"]["spatial_dims"] == 3
    assert metrics["volumes"] == {"train": 2, "val": 1, "test": 1} and metrics["patch"] == PATCH
    # learning: an empty prediction scores Dice 0 on a lesion patient; ~40 steps do far better
    assert metrics["mean_dice"] > 0.3, metrics["mean_dice"]
    # volumes in mm³ with the files' spacing (1 × 1 × 3 mm)
    row = metrics["per_patient"][metrics["patient_ids"][0]]
    assert row["volume_true"] > 0 and row["volume_true"] % 3.0 == 0 and np.isfinite(row["hd95"])
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "Segmentation 3D" in html and "data:image/png;base64" in html and "3D U-Net" in html
    assert "val_dice" in (run / "logs/history.csv").read_text()


def test_3d_same_seed_same_run_and_exact_resume(easy_volumes, tmp_path):
    def cfg(epochs: int) -> SegmentConfig:
        return SegmentConfig(data=str(easy_volumes), size=None, model="test_unet", spatial_dims=3, patch=[8, 16, 16],
                             val_fraction=0.25, test_fraction=0.25,
                             train={"epochs": epochs, "batch_size": 2, "max_steps_per_epoch": 2, "scheduler": "none",
                                    "progress": False, "threads": 1})

    train_segmentation(cfg(2), tmp_path / "whole")
    train_segmentation(cfg(1), tmp_path / "killed")  # as if killed after epoch 0
    train_segmentation(cfg(2), tmp_path / "killed", resume=True)
    a, b = (torch.load(tmp_path / r / "checkpoints/last.pt", weights_only=False)["model"] for r in ("whole", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_3d_patient_splits_hold(run3d):
    run, metrics = run3d
    with open(run / "splits.csv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    where = {}
    for path, split in rows:
        where.setdefault(path.rsplit("/", 1)[1], set()).add(split)
    assert len(where) == 4 and all(len(s) == 1 for s in where.values())
    test = {p for p, s in where.items() if s == {"test"}}
    assert {f"{p}.nii.gz" for p in metrics["patient_ids"]} == test
    assert not test & {p for p, s in where.items() if s == {"train"}}


def test_3d_predict_keeps_geometry_and_evaluate(run3d, easy_volumes, tmp_path):
    from medlens.package import ModelPackage

    run, _ = run3d
    pkg = ModelPackage(run)
    src = read_volume(next((easy_volumes / "images").glob("*.nii.gz")))
    img = np.pad(src.array, [(0, 0), (0, 4), (0, 6), (0, 2)])  # 20×38×34: not a patch multiple
    geo = {"spacing": [0.9, 0.8, 2.5], "origin": [10.0, -4.0, 3.5],
           "direction": [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]}
    inputs = tmp_path / "in"
    write_volume(inputs / "v.nii.gz", img, like=geo)
    write_volume(inputs / "m.mha", img, like=geo)
    Image.fromarray(np.moveaxis(img[:, 5], 0, -1)).save(inputs / "slice.png")
    before = tree_hash(inputs)
    rows = predict_files(pkg.model, pkg.metadata, [inputs], tmp_path / "pred")
    assert tree_hash(inputs) == before
    by = {r["file"].rsplit("/", 1)[1]: r for r in rows}
    assert "3D U-Net" in by["slice.png"]["error"]  # a 3D model refuses a 2D image
    for name, suffix in (("v.nii.gz", ".nii.gz"), ("m.mha", ".mha")):
        assert by[name]["mask"].endswith(f"_mask{suffix}")
        mv = read_volume(by[name]["mask"])
        assert mv.array.shape == (20, 38, 34) and set(np.unique(mv.array)) <= {0, 1}
        np.testing.assert_allclose(mv.spacing, geo["spacing"], rtol=1e-5)
        np.testing.assert_allclose(mv.origin, geo["origin"], rtol=1e-5)
        np.testing.assert_allclose(mv.direction, geo["direction"], atol=1e-6)
        assert by[name]["lesion_voxels"] > 0
    assert (tmp_path / "pred" / "v_overlay.png").is_file()
    out = tmp_path / "ev"
    metrics = evaluate_package(pkg, easy_volumes, split="test", out_dir=out)
    assert metrics["patients"] == 1 and (out / "report.html").is_file() and (out / "per_patient.csv").is_file()
    assert metrics["mean_dice"] == pytest.approx(run3d[1]["mean_dice"], abs=1e-6)


def test_sliding_window_when_volume_exceeds_patch():
    probe = ShapeProbe(3)
    big = np.zeros((2, 20, 40, 36), np.uint8)
    p = predict_volume(probe, big, patch=(8, 16, 16))
    assert p.shape == (20, 40, 36) and np.all(p > 0.99)
    assert len(probe.calls) > 1 and set(probe.calls) == {(8, 16, 16)}
    probe.calls.clear()
    small = np.zeros((2, 5, 10, 12), np.uint8)  # padded to one window, cropped back
    assert predict_volume(probe, small, patch=(8, 16, 16)).shape == (5, 10, 12)
    assert probe.calls == [(8, 16, 16)]
    probe.calls.clear()  # an in-plane resize goes to the model's side and back
    assert predict_volume(probe, big, patch=(8, 16, 16), resize=16).shape == (20, 40, 36)
    assert probe.calls and set(probe.calls) == {(8, 16, 16)}


def test_patch_loader_positive_share_padding_and_determinism(easy_volumes):
    vols = build_volumes(load_segmentation_dataset(easy_volumes))
    assert vols.shapes == [(16, 32, 32)] * 4 and vols.spacing[vols.patients[0]] == (3.0, 1.0, 1.0)
    loader = PatchLoader(vols, patch=(24, 16, 16), batch_size=3, samples_per_volume=3, pos_fraction=1.0, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    b = batches[0]
    assert b["image"].shape == (3, 3, 24, 16, 16) and b["image"].dtype == torch.uint8
    assert b["mask"].shape == (3, 1, 24, 16, 16)
    assert all(bool(m.any()) for bb in batches for m in bb["mask"])  # centred on lesion voxels
    assert torch.equal(next(iter(loader))["image"], b["image"])  # same epoch, same patches
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))["image"], b["image"])
    assert resolve_patch(None, vols.shapes, 4) == (16, 32, 32)  # default clipped to the volume
    assert resolve_patch([20, 30, 64], [(22, 64, 64), (40, 48, 48)], 16) == (16, 16, 48)
    assert resolve_patch([8, 8, 8], [(5, 64, 64)], 16) == (16, 16, 16)  # at least one divisor


def test_augment_3d_moves_image_and_mask_together():
    torch.manual_seed(0)
    x = torch.zeros(4, 2, 8, 16, 16)
    x[:, :, 1:4, 2:7, 3:9] = 1.0
    y = x[:, :1].clone()
    ax, ay = SegmentAugment(intensity=0.0, rotate_deg=0.0, scale=0.0, shift=0.0)(x, y)
    assert ax.shape == x.shape and torch.equal((ax[:, :1] > 0.5).float(), ay)
    assert not torch.equal(ay, y)  # something was flipped
    ax, ay = SegmentAugment()(x, y)
    assert set(torch.unique(ay).tolist()) <= {0.0, 1.0}
    assert ((ax[:, :1] > 0.5).float() != ay).float().mean() < 0.05


def test_kaggle_slices_stack_into_volumes(kaggle_set):
    vols = build_volumes(load_segmentation_dataset(kaggle_set), size=16)
    assert len(vols) == 4 and all(s == (6, 16, 16) for s in vols.shapes)
    assert vols.images[0].shape == (3, 6, 16, 16) and vols.images[0].dtype == np.uint8
    assert all(list(n) == [1, 2, 3, 4, 5, 6] for n in vols.slice_index)
    sl, probs = vols.as_slices([m.astype(np.float32) for m in vols.masks])
    assert len(sl) == 24 and probs.shape == (24, 16, 16) and sl.images.shape == (24, 3, 16, 16)


def test_config_checks():
    assert SegmentConfig(data="x").spatial_dims == 2 and SegmentConfig(data="x").patch is None
    with pytest.raises(ValidationError, match="spatial_dims"):
        SegmentConfig(data="x", spatial_dims=4)
    with pytest.raises(ValidationError, match="spatial_dims=3"):
        SegmentConfig(data="x", patch=[8, 8, 8])
    with pytest.raises(ValidationError, match="three positive"):
        SegmentConfig(data="x", spatial_dims=3, patch=[8, 8])
    assert parse_patch("32,64,64") == [32, 64, 64] == parse_patch("32x64x64")
    with pytest.raises(ConfigError, match="D,H,W"):
        parse_patch("64,64")
    assert GENERATORS["brain"] is make_brain_mri_like


def test_cli_3d_refuses_image_pairs(tmp_path):
    from medlens.cli.main import get_app

    for folder in ("images", "masks"):
        (tmp_path / "pairs" / folder).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((16, 16), 60 * i, np.uint8)).save(tmp_path / "pairs/images" / f"c{i}.png")
        Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(tmp_path / "pairs/masks" / f"c{i}.png")
    res = runner.invoke(get_app(), ["train", str(tmp_path / "pairs"), "--task", "segment", "--spatial-dims", "3",
                                    "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--spatial-dims 2" in res.output and "Traceback" not in res.output
    res = runner.invoke(get_app(), ["train", str(tmp_path / "pairs"), "--task", "segment", "--spatial-dims", "4",
                                    "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "spatial_dims" in res.output


def test_cli_train_and_cv_3d(easy_volumes, tmp_path):
    from medlens.cli.main import get_app

    res = runner.invoke(get_app(), ["train", str(easy_volumes), "--task", "segment", "--spatial-dims", "3",
                                    "--patch", "16,32,32", "--model", "test_unet", "--size", "32", "--epochs", "1",
                                    "--max-steps", "1", "--batch-size", "2", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    cfg = json.loads((tmp_path / "run/config.json").read_text(encoding="utf-8"))
    assert cfg["spatial_dims"] == 3 and cfg["patch"] == [16, 32, 32]
    res = runner.invoke(get_app(), ["segment-cv", str(easy_volumes), "--out", str(tmp_path / "cv"), "--folds", "2",
                                    "--spatial-dims", "3", "--patch", "16,32,32", "--model", "test_unet",
                                    "--size", "32", "--epochs", "1", "--max-steps", "1", "--batch-size", "2"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    cv = json.loads((tmp_path / "cv/cv_metrics.json").read_text(encoding="utf-8"))
    assert len(cv["per_patient"]) == 4 and len({p for f in cv["folds"] for p in f["test"]}) == 4
