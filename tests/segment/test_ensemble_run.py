"""A segmentation run of several members: seeds, member directories, package, resume."""

from __future__ import annotations

import json

import pytest


def test_segmentation_run_with_members(kaggle_set, tmp_path):
    from medlens.package import ModelPackage
    from medlens.segment.config import SegmentConfig
    from medlens.segment.evaluation import evaluate_package
    from medlens.segment.workflow import train_segmentation

    cfg = SegmentConfig(data=str(kaggle_set), size=32, model="test_unet", val_fraction=0.25, test_fraction=0.25,
                        ensemble=2, train={"epochs": 2, "batch_size": 8, "lr": 5e-3, "progress": False,
                                           "threads": 1, "seed": 3})
    run = tmp_path / "run"
    metrics = train_segmentation(cfg, run)
    assert [m["seed"] for m in metrics["members"]] == [3, 4]
    assert metrics["best_epoch"] is None and all(m["best_epoch"] in (0, 1) for m in metrics["members"])
    for k in (0, 1):
        assert (run / f"member{k}" / "checkpoints" / "best.pt").is_file()
        assert (run / f"member{k}" / "logs" / "history.csv").is_file()
    meta = json.loads((run / "model" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["model"]["name"] == "ensemble" and len(meta["model"]["kwargs"]["members"]) == 2
    assert "Ensemble of 2 U-Nets (seeds 3, 4)" in (run / "model" / "model_card.md").read_text(encoding="utf-8")
    ev = evaluate_package(ModelPackage(run), kaggle_set, split="test", out_dir=tmp_path / "ev")
    assert ev["mean_dice"] == pytest.approx(metrics["mean_dice"], abs=1e-6)
    # resuming a finished ensemble trains nothing more and gives the same figures
    again = train_segmentation(cfg, run, resume=True)
    assert again["mean_dice"] == pytest.approx(metrics["mean_dice"], abs=1e-9)
    assert again["members"] == metrics["members"]


def test_3d_run_with_members(nifti_set, tmp_path):
    from medlens.package import ModelPackage
    from medlens.segment.config import SegmentConfig
    from medlens.segment.evaluation import evaluate_package
    from medlens.segment.workflow import train_segmentation

    cfg = SegmentConfig(data=str(nifti_set), size=None, model="test_unet", spatial_dims=3, patch=[4, 16, 16],
                        val_fraction=0.34, test_fraction=0.34, ensemble=2,
                        train={"epochs": 1, "batch_size": 2, "max_steps_per_epoch": 2, "progress": False,
                               "threads": 1})
    metrics = train_segmentation(cfg, tmp_path / "run")
    assert [m["seed"] for m in metrics["members"]] == [0, 1]
    pkg = ModelPackage(tmp_path / "run")
    assert pkg.metadata["model"]["name"] == "ensemble" and pkg.metadata["input"]["patch"] == [4, 16, 16]
    ev = evaluate_package(pkg, nifti_set, split="test", out_dir=tmp_path / "ev")
    assert ev["mean_dice"] == pytest.approx(metrics["mean_dice"], abs=1e-6)
