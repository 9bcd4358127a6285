"""A segmentation run of several members: seeds, member directories, package, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medlens.errors import BadInputError


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
    inner = meta["model"]["kwargs"]["inner"]  # the package answers with test-time mirroring (tta flip)
    assert meta["model"]["name"] == "mirror" and inner["name"] == "ensemble" and len(inner["members"]) == 2
    assert meta["tta"] == "flip"
    assert "Ensemble of 2 U-Nets (seeds 3, 4)" in (run / "model" / "model_card.md").read_text(encoding="utf-8")
    ev = evaluate_package(ModelPackage(run), kaggle_set, split="test", out_dir=tmp_path / "ev")
    assert ev["mean_dice"] == pytest.approx(metrics["mean_dice"], abs=1e-6)
    # what the mirror gave, patient by patient: the same patients through the network alone
    plain_pkg = ModelPackage(run)
    plain_pkg.model = plain_pkg.model.inner
    plain = evaluate_package(plain_pkg, kaggle_set, split="test", out_dir=tmp_path / "ev_plain")
    assert {p: r["dice_if_no_mirror"] for p, r in metrics["per_patient"].items()} == pytest.approx(
        {p: r["dice"] for p, r in plain["per_patient"].items()}, abs=1e-6)
    assert metrics["mean_dice_if_no_mirror"] == pytest.approx(plain["mean_dice"], abs=1e-6)
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
    assert pkg.metadata["model"]["name"] == "mirror" and pkg.metadata["input"]["patch"] == [4, 16, 16]
    assert len(pkg.model.inner.members) == 2
    ev = evaluate_package(pkg, nifti_set, split="test", out_dir=tmp_path / "ev")
    assert ev["mean_dice"] == pytest.approx(metrics["mean_dice"], abs=1e-6)


def test_member_splits_rotate_validation_over_the_pool():
    from medlens.errors import ConfigError
    from medlens.segment.workflow import member_splits

    splits = {"train": ["a", "b", "c", "d"], "val": ["e"], "test": ["t"]}
    members = member_splits(splits, 3, seed=0)
    vals = [m["val"] for m in members]
    assert sorted(p for v in vals for p in v) == ["a", "b", "c", "d", "e"]  # each pooled patient validated once
    for m in members:
        assert set(m["train"]).isdisjoint(m["val"]) and set(m["train"]) | set(m["val"]) == set("abcde")
        assert m["test"] == ["t"]
    with pytest.raises(ConfigError, match="at least 6"):
        member_splits(splits, 6, seed=0)


def test_fold_ensemble_run(kaggle_set, tmp_path):
    """nnU-Net's cross-validation ensemble: members validated on different patients, the
    post-processing chosen on out-of-fold predictions, the validation patients trained on."""
    from medlens.data.splits import load_splits
    from medlens.package import ModelPackage
    from medlens.segment.config import SegmentConfig
    from medlens.segment.evaluation import evaluate_package
    from medlens.segment.workflow import train_segmentation

    train = {"epochs": 1, "batch_size": 8, "lr": 5e-3, "progress": False, "threads": 1, "seed": 0}
    with pytest.raises(ValueError, match="ensemble ≥ 2"):
        SegmentConfig(data=str(kaggle_set), ensemble_by="folds")
    cfg = SegmentConfig(data=str(kaggle_set), size=32, model="test_unet", val_fraction=0.25, test_fraction=0.25,
                        ensemble=2, ensemble_by="folds", train=train)
    run = tmp_path / "run"
    metrics = train_segmentation(cfg, run)
    vals = [m["val_patients"] for m in metrics["members"]]
    assert len(vals) == 2 and set(vals[0]).isdisjoint(vals[1])
    pool = sorted(vals[0] + vals[1])
    assert len(pool) == 3 and not set(pool) & set(metrics["patient_ids"])  # 4 patients: 1 test, 3 pooled
    assert metrics["postprocess"]["chosen_by"] == "out-of-fold predictions of 3 patients"
    where = {Path(k).parent.name: v for k, v in load_splits(run / "splits.csv").items()}
    assert sorted(p for p, s in where.items() if s == "train") == pool and "val" not in where.values()
    assert "Cross-validation ensemble" in (run / "model" / "model_card.md").read_text(encoding="utf-8")
    ev = evaluate_package(ModelPackage(run), kaggle_set, split="test", out_dir=tmp_path / "ev")
    assert ev["mean_dice"] == pytest.approx(metrics["mean_dice"], abs=1e-6)
    # without test patients the run reports the out-of-fold predictions of every patient
    oof = train_segmentation(cfg.model_copy(update={"test_fraction": 0.0}), tmp_path / "oof")
    assert oof["split"] == "out_of_fold" and sorted(oof["per_patient"]) == sorted(oof["patient_ids"])
    assert len(oof["patient_ids"]) == 4
    assert all(0 <= r["dice_if_no_mirror"] <= 1 for r in oof["per_patient"].values())  # each by its member alone
    none = train_segmentation(cfg.model_copy(update={"tta": "none"}), tmp_path / "none")
    assert "dice_if_no_mirror" not in next(iter(none["per_patient"].values()))
    with pytest.raises(BadInputError, match="holds out no test split"):  # its own data has no test patients
        evaluate_package(ModelPackage(tmp_path / "oof"), kaggle_set, split="test", out_dir=tmp_path / "ev2")


def test_cv_fold_row_names_out_of_fold_validation():
    from medlens.segment.crossval import _fold_row

    m = {"mean_dice": 0.5, "members": [{"val_patients": ["a", "b"]}, {"val_patients": ["c"]}]}
    assert _fold_row(0, ["t"], ["a"], m)["val"] == ["out-of-fold, 2 folds of 3 patients"]
    assert _fold_row(0, ["t"], ["a"], {"members": [{"seed": 0}]})["val"] == ["a"]


def test_fold_ensemble_is_the_default_from_ten_patients(kaggle_set, tmp_path):
    from medlens.data.synthetic.brain import make_brain_mri_like
    from medlens.segment.workflow import config_from_cli

    ten = make_brain_mri_like(tmp_path / "ten", patients=10, slices=2, size=16, seed=0)
    cfg = config_from_cli(data=ten, config=None, options={})
    assert (cfg.ensemble, cfg.ensemble_by) == (3, "folds")
    assert cfg.test_fraction == 0.0  # every patient trains the shipped ensemble; out-of-fold is the estimate
    assert config_from_cli(data=ten, config=None, options={"test_fraction": 0.3}).test_fraction == 0.3
    one = config_from_cli(data=ten, config=None, options={"ensemble": 1})  # the user's choice wins
    assert one.ensemble == 1 and one.test_fraction == 0.2
    by_seed = config_from_cli(data=ten, config=None, options={"ensemble_by": "seed"})
    assert (by_seed.ensemble, by_seed.ensemble_by, by_seed.test_fraction) == (3, "seed", 0.2)
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"ensemble": 2}), encoding="utf-8")
    assert (config_from_cli(data=ten, config=conf, options={}).ensemble_by,
            config_from_cli(data=ten, config=conf, options={}).ensemble) == ("seed", 2)
    few = config_from_cli(data=kaggle_set, config=None, options={})  # 4 patients: one network, a test split
    assert few.ensemble == 1 and few.test_fraction == 0.2
