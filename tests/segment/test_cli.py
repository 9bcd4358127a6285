"""Segmentation through the CLI: train --task segment, evaluate, predict, segment-cv, demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medlens.cli.main import get_app

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_run(kaggle_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    res = runner.invoke(get_app(), ["train", str(kaggle_set), "--task", "segment", "--out", str(out),
                                    "--model", "test_unet", "--size", "32", "--epochs", "1",
                                    "--batch-size", "8"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out


def test_cli_train_evaluate_predict(cli_run, kaggle_set, tmp_path):
    assert json.loads((cli_run / "model/metadata.json").read_text(encoding="utf-8"))["task"] == "segment"
    res = runner.invoke(get_app(), ["evaluate", str(cli_run), str(kaggle_set), "--split", "test",
                                    "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    ev = json.loads((tmp_path / "ev/metrics.json").read_text(encoding="utf-8"))
    assert "mean_dice" in ev
    assert "per-patient segmentation" in res.output and f"{ev['mean_dice']:.3f}" in res.output
    assert all(pid in res.output for pid in ev["per_patient"])
    img = next(kaggle_set.glob("*/*_2.tif"))
    res = runner.invoke(get_app(), ["predict", str(cli_run), str(img), "--out", str(tmp_path / "pred")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    mask = np.asarray(Image.open(tmp_path / "pred" / f"{img.stem}_mask.tif"))
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}


def test_cli_bad_data_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    res = runner.invoke(get_app(), ["train", str(tmp_path / "empty"), "--task", "segment",
                                    "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "no segmentation layout" in res.output


def test_segment_cv_leaves_patients_out(kaggle_set, tmp_path):
    res = runner.invoke(get_app(), ["segment-cv", str(kaggle_set), "--out", str(tmp_path / "cv"), "--folds", "2",
                                    "--model", "test_unet", "--size", "32", "--epochs", "1", "--max-steps", "1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    cv = json.loads((tmp_path / "cv/cv_metrics.json").read_text(encoding="utf-8"))
    tested = [p for f in cv["folds"] for p in f["test"]]
    assert sorted(tested) == sorted(cv["per_patient"]) and len(set(tested)) == 4
    for f in cv["folds"]:
        splits = (tmp_path / "cv" / f"fold_{f['fold']}" / "splits.csv").read_text(encoding="utf-8")
        train_lines = [ln for ln in splits.splitlines() if ln.endswith(",train")]
        assert not any(p in ln for p in f["test"] for ln in train_lines)
    assert "mean per-patient-volume Dice" in res.output
    # test-time mirroring (the default) judged on the same unseen patients: the network alone beside it
    plain = [r["dice_if_no_mirror"] for r in cv["per_patient"].values()]
    assert len(plain) == 4 and cv["mean_dice_if_no_mirror"] == pytest.approx(float(np.mean(plain)))
    assert "without test-time mirroring: mean Dice" in res.output
    assert "mean Dice without test-time mirroring" in (tmp_path / "cv" / "cv_report.html").read_text(encoding="utf-8")
    # the data are decoded once, into the CV folder, not once per fold
    assert len(list((tmp_path / "cv" / "cache").glob("slices_*.npz"))) == 1
    assert not any((tmp_path / "cv").glob("fold*/cache"))
    page = (tmp_path / "cv" / "cv_report.html").read_text(encoding="utf-8")
    assert "Per patient (worst first)" in page and "data:image/png;base64" in page
    for f in cv["folds"]:  # every unseen patient links to its fold's report
        assert all(f"<th>{p}</th>" in page for p in f["test"]) and f"fold_{f['fold']}/report.html" in page


def test_demo_quick(tmp_path):
    from medlens.segment.workflow import run_demo

    run = run_demo(tmp_path / "demo", quick=True)
    assert (run / "report.html").is_file() and (run / "model/metadata.json").is_file()


def test_segment_cv_resumes_after_an_interruption(kaggle_set, tmp_path, monkeypatch):
    """Killed at the start of fold 1: --resume reads fold 0 back, trains fold 1 and ends with the
    figures of an uninterrupted run; without --resume the folder is refused."""
    import medlens.segment.crossval as wf

    args = ["--folds", "2", "--model", "test_unet", "--size", "32", "--epochs", "2", "--max-steps", "2"]
    whole = runner.invoke(get_app(), ["segment-cv", str(kaggle_set), "--out", str(tmp_path / "whole"), *args])
    assert whole.exit_code == 0, whole.output
    real, calls = wf.train_segmentation, []

    def dies_on_fold1(cfg, run_dir, *, resume=False, **shared):
        calls.append((Path(run_dir).name, resume))
        if Path(run_dir).name == "fold_1" and len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, run_dir, resume=resume, **shared)

    monkeypatch.setattr(wf, "train_segmentation", dies_on_fold1)
    cv = tmp_path / "cv"
    with pytest.raises(KeyboardInterrupt):
        wf.cross_validate(wf.load_cv_plan(tmp_path / "whole")[0], cv, folds=2)
    stamp = (cv / "fold_0" / "metrics.json").stat().st_mtime_ns
    again = runner.invoke(get_app(), ["segment-cv", str(kaggle_set), "--out", str(cv), *args])
    assert again.exit_code == 2 and "--resume" in again.output
    res = runner.invoke(get_app(), ["segment-cv", str(kaggle_set), "--out", str(cv), "--resume"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert calls[2:] == [("fold_1", False)]  # fold 0 read back, not trained again
    assert (cv / "fold_0" / "metrics.json").stat().st_mtime_ns == stamp
    a, b = (json.loads((d / "cv_metrics.json").read_text(encoding="utf-8")) for d in (tmp_path / "whole", cv))
    assert a["per_patient"] == b["per_patient"] and a["mean_dice"] == b["mean_dice"]
