from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medlens.io.volumes import read_volume, write_volume
from medlens.segment.config import SegmentConfig
from medlens.segment.evaluation import evaluate_package
from medlens.segment.predict import overlay, predict_files, predict_slices
from medlens.segment.task import SegmentAugment, SegmentTask
from medlens.train.config import TrainConfig
from tests.segment.conftest import (
    ShapeProbe,
    assert_run_directory,
    train_leaving_data_untouched,
    tree_hash,
)


def test_augment_moves_image_and_mask_together():
    torch.manual_seed(0)
    x = torch.zeros(4, 3, 32, 32)
    x[:, :, 4:12, 4:12] = 1.0
    y = x[:, :1].clone()
    ax, ay = SegmentAugment(intensity=0.0)(x, y)
    assert set(torch.unique(ay).tolist()) <= {0.0, 1.0}  # nearest for masks
    assert torch.allclose((ax[:, :1] > 0.5).float(), ay, atol=0) or \
        ((ax[:, :1] > 0.5).float() != ay).float().mean() < 0.02


def test_task_step_and_validate_keys():
    from medlens.models.registry import create_model
    from medlens.train.loader import BatchLoader

    m = create_model("test_unet", num_classes=1)
    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 255, (6, 3, 16, 16), dtype=np.uint8),
              "mask": (rng.random((6, 1, 16, 16)) > 0.7).astype(np.uint8),
              "patient": np.array([0, 0, 0, 1, 1, 1])}
    task = SegmentTask()
    loss = task.training_step(m, next(iter(BatchLoader(arrays, batch_size=3, shuffle=True))), torch.device("cpu"))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    v = task.validate(m, BatchLoader(arrays, batch_size=4, shuffle=False), torch.device("cpu"))
    assert {"val_dice", "val_iou", "val_slice_dice", "val_loss"} <= set(v)
    assert task.monitor in v and 0 <= v["val_dice"] <= 1


@pytest.fixture(scope="module")
def trained_run(kaggle_set, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    cfg = SegmentConfig(data=str(kaggle_set), size=32, model="test_unet", val_fraction=0.25, test_fraction=0.25,
                        train=TrainConfig(epochs=2, batch_size=8, lr=5e-3, progress=False, threads=1))
    return run, train_leaving_data_untouched(cfg, run)


def test_train_writes_run_directory(trained_run):
    run, metrics = trained_run
    meta = assert_run_directory(run)
    assert meta["task"] == "segment" and meta["preprocess"]["resize"] == 32 and meta["threshold"] == 0.5
    assert metrics["split"] == "test" and len(metrics["patient_ids"]) == 1
    assert 0 <= metrics["mean_dice"] <= 1
    # test patients never trained on
    rows = [line.split(",") for line in (run / "splits.csv").read_text().splitlines()[1:]]
    by_patient = {}
    for path, split in rows:
        by_patient.setdefault(path.rsplit("/", 2)[1], set()).add(split)
    assert all(len(s) == 1 for s in by_patient.values())
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "Per patient (worst first)" in html and "data:image/png;base64" in html
    assert "false negative" in html and "Training curves" in html


def test_evaluate_and_predict_from_package(trained_run, kaggle_set, tmp_path):
    from medlens.package import ModelPackage

    run, _ = trained_run
    pkg = ModelPackage(run)
    out = tmp_path / "ev"
    metrics = evaluate_package(pkg, kaggle_set, split="all", out_dir=out)
    assert metrics["patients"] == 4 and (out / "report.html").is_file()
    # predict a PNG, a TIFF of another size, and a NIfTI volume; masks match format and geometry
    img = np.asarray(Image.open(next(kaggle_set.glob("*/*_3.tif"))))
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(img).save(inputs / "a.png")
    Image.fromarray(np.asarray(Image.fromarray(img).resize((48, 40)))).save(inputs / "b.tif")
    geo = {"spacing": [0.9, 0.9, 3.0], "origin": [1.0, 2.0, 3.0], "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1]}
    write_volume(inputs / "v.nii.gz", np.moveaxis(np.stack([img] * 3), -1, 0).astype(np.float32), like=geo)
    (inputs / "broken.png").write_bytes(b"nope")
    before = tree_hash(inputs)
    rows = predict_files(pkg.model, pkg.metadata, [inputs], tmp_path / "pred")
    assert tree_hash(inputs) == before
    by = {r["file"].rsplit("/", 1)[1]: r for r in rows}
    assert "error" in by["broken.png"]
    assert np.asarray(Image.open(by["a.png"]["mask"])).shape == img.shape[:2]
    assert by["b.tif"]["mask"].endswith("b_mask.tif")
    assert np.asarray(Image.open(by["b.tif"]["mask"])).shape == (40, 48)
    mv = read_volume(by["v.nii.gz"]["mask"])
    assert mv.array.shape == (3, 32, 32)
    np.testing.assert_allclose(mv.spacing, geo["spacing"], rtol=1e-5)
    np.testing.assert_allclose(mv.origin, geo["origin"], rtol=1e-5)
    assert all((tmp_path / "pred" / f"{s}_overlay.png").is_file() for s in ("a", "b", "v"))


def test_sliding_window_for_inputs_larger_than_patch():
    probe = ShapeProbe(2)
    images = np.zeros((1, 3, 40, 56), np.uint8)
    p = predict_slices(probe, images, resize=None, patch=(16, 16), divisor=4)
    assert p.shape == (1, 40, 56) and np.all(p > 0.99)
    assert all(c == (16, 16) for c in probe.calls) and len(probe.calls) >= 1


def test_overlay_colours():
    img = np.full((3, 4, 4), 100, np.uint8)
    pred = np.zeros((4, 4), bool)
    truth = np.zeros((4, 4), bool)
    pred[0, 0] = truth[0, 0] = True  # TP
    pred[0, 1] = True  # FP
    truth[0, 2] = True  # FN
    rgb = overlay(img, pred, truth)
    assert rgb[0, 0, 1] > rgb[0, 0, 0]  # green
    assert rgb[0, 1, 0] > rgb[0, 1, 1] and rgb[0, 1, 2] < 50  # red
    assert rgb[0, 2, 0] > rgb[0, 2, 1] > rgb[0, 2, 2]  # orange
    assert (rgb[3, 3] == rgb[3, 3, 0]).all()  # untouched grey


def test_explain_files_on_a_segmentation_package(trained_run, kaggle_set, tmp_path):
    """`medlens explain RUN images` reads a segmenter's images its own way (channels, resize)."""
    from medlens.explain.files import explain_files
    from medlens.package import ModelPackage

    run, _ = trained_run
    pkg = ModelPackage(run)
    files = sorted(p for p in kaggle_set.glob("*/*.tif") if "_mask" not in p.name)[:2]
    odd = tmp_path / "odd.png"  # another size: resized to the training side like predict does
    Image.fromarray(np.asarray(Image.open(files[0]).resize((40, 30)))).save(odd)
    x = pkg.preprocess(pkg.load_images([*files, odd]))
    assert tuple(x.shape) == (3, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    recs = explain_files(pkg, [*files, odd], method="gradcam", out_dir=tmp_path / "ex")
    assert len(recs) == 3
    for r in recs:
        m = np.load(r["map"])
        assert m.shape[-2:] == (32, 32) and np.isfinite(m).all()
        assert Path(r["overlay"]).is_file()
