"""k-fold cross-validation: fold coverage, patient grouping, CIs, CLI, resume."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medlens.cli.main import get_app

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
TINY = ["--model", "test_cnn", "--size", "32", "--epochs", "2", "--batch-size", "16"]


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """3-fold CV through the CLI on 40 synthetic dermoscopy photos (28 patients)."""
    from medlens.data.synthetic import make_dermoscopy_like

    base = tmp_path_factory.mktemp("cv")
    data = make_dermoscopy_like(base / "derm", n=40, size=64, difficulty=0.2, seed=3)
    out = base / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDLENS_CACHE_DIR", str(base / "cache"))
        res = runner.invoke(get_app(), ["cv", str(data), "--folds", "3", "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return data, out, res.output


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _patient_of(data: Path) -> dict[str, str]:
    return {row["image"]: row["patient_id"] for row in _rows(data / "labels.csv")}


def test_every_image_held_out_exactly_once(cv_run):
    data, out, _ = cv_run
    held = []
    for i in range(3):
        with np.load(out / f"fold_{i}" / "oof.npz") as z:
            held += z["paths"].tolist()
            assert np.allclose(z["probs"].sum(1), 1.0)
    names = sorted(Path(p).stem for p in held)
    assert names == sorted(_patient_of(data)) and len(set(held)) == 40
    folds = _rows(out / "folds.csv")
    assert sorted({r["fold"] for r in folds}) == ["0", "1", "2"] and len(folds) == 40


def test_no_patient_in_training_and_held_out_of_a_fold(cv_run):
    data, out, _ = cv_run
    patient = _patient_of(data)
    for i in range(3):
        rows = _rows(out / f"fold_{i}" / "splits.csv")
        side = {}
        for r in rows:
            side.setdefault(patient[Path(r["path"]).stem], set()).add(
                "test" if r["split"] == "test" else "fit"
            )
        assert all(len(s) == 1 for s in side.values()), f"fold {i} leaks a patient"
        splits = {r["split"] for r in rows}
        assert splits == {"train", "val", "test"}  # validation carved from the training part
        held = {r["path"] for r in rows if r["split"] == "test"}
        assert held == {r["path"] for r in _rows(out / "folds.csv") if r["fold"] == str(i)}


def test_cv_metrics_per_fold_pooled_and_cis(cv_run):
    from sklearn.metrics import roc_auc_score

    _, out, output = cv_run
    cv = json.loads((out / "cv_metrics.json").read_text())
    assert cv["folds"] == 3 and cv["grouping"] == "patient" and len(cv["per_fold"]) == 3
    for row in cv["per_fold"]:
        for key in (
            "roc_auc",
            "sensitivity",
            "specificity",
            "balanced_accuracy",
            "threshold",
            "seconds",
        ):
            assert row[key] is not None, key
    aucs = [r["roc_auc"] for r in cv["per_fold"]]
    assert cv["summary"]["roc_auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert cv["summary"]["roc_auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
    t, b = cv["auc"]["ci_fold_t"], cv["auc"]["ci_pooled_bootstrap"]
    assert (
        t["low"] <= cv["auc"]["mean"] <= t["high"]
        and b["low"] <= cv["auc"]["pooled_oof"] <= b["high"]
    )
    # pooled = the OOF predictions of all folds together
    y, s = [], []
    for i in range(3):
        with np.load(out / f"fold_{i}" / "oof.npz") as z:
            y += z["labels"].tolist()
            s += z["probs"][:, 1].tolist()
    assert cv["pooled"]["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert cv["pooled"]["counts"]["n"] == 40 and cv["pooled"]["ci"]["roc_auc"] is not None
    assert cv["config"]["model"]["name"] == "test_cnn"
    html = (out / "cv_report.html").read_text()
    assert "Cross-validation folds" in html and "fold 2 (held out)" in html
    assert "mean ± sd" in output and "pooled out-of-fold AUC" in output


def test_other_operating_rules_pooled_from_each_folds_own_validation(cv_run):
    """The pooled alternatives: every held-out image called at its own fold's threshold for the
    rule, that threshold chosen on the fold's validation logits (saved beside the held-out ones)."""
    from scipy.special import softmax

    from medlens.evaluate.operating_point import choose_threshold

    _, out, output = cv_run
    cv = json.loads((out / "cv_metrics.json").read_text())
    rows = {r["name"]: r for r in cv["pooled"]["alternative_operating_points"]["rows"]}
    assert {"sensitivity >= 0.90", "sensitivity >= 0.99", "0.5 call"} <= set(rows)
    called, pos = [], []
    for i in range(3):
        with np.load(out / f"fold_{i}" / "oof.npz") as z:
            t = float(z["temperature"])
            thr = choose_threshold(z["val_labels"], softmax(z["val_logits"] / t, axis=1), negative_class=0,
                                   target_sensitivity=0.90)["threshold"]
            assert np.allclose(softmax(z["logits"] / t, axis=1), z["probs"])
            called += (z["probs"][:, 1] >= thr).tolist()
            pos += (z["labels"] != 0).tolist()
    called, pos = np.array(called), np.array(pos)
    row = rows["sensitivity >= 0.90"]
    assert row["threshold"] is None and row["chosen_on"].startswith("val")  # one threshold per fold
    assert row["sensitivity"] == pytest.approx(called[pos].mean())
    assert row["specificity"] == pytest.approx((~called[~pos]).mean())
    assert row["balanced_accuracy"] == pytest.approx((row["sensitivity"] + row["specificity"]) / 2)
    assert rows["sensitivity >= 0.95"]["same_as_operating_point"] is True  # the package rule
    assert rows["sensitivity >= 0.95"]["balanced_accuracy"] == pytest.approx(cv["pooled"]["balanced_accuracy"])
    assert "val (each fold&#x27;s own threshold)" in (out / "cv_report.html").read_text()
    assert "operating rules, pooled" in output.replace("\n", " ")


def test_resume_after_completion_does_not_retrain(cv_run, monkeypatch, tmp_path):
    _, out, _ = cv_run
    monkeypatch.setenv("MEDLENS_CACHE_DIR", str(tmp_path / "cache"))
    ckpts = sorted(out.glob("fold_*/checkpoints/*.pt")) + sorted(out.glob("fold_*/oof.npz"))
    before = {p: p.stat().st_mtime_ns for p in ckpts}
    auc = json.loads((out / "cv_metrics.json").read_text())["auc"]["pooled_oof"]
    res = runner.invoke(get_app(), ["cv", "ignored", "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert {p: p.stat().st_mtime_ns for p in ckpts} == before
    assert json.loads((out / "cv_metrics.json").read_text())["auc"]["pooled_oof"] == auc


def test_resume_finishes_an_interrupted_fold(cv_run, monkeypatch, tmp_path):
    """A fold whose training ended but whose results were not written is evaluated again
    from its checkpoint (no new epoch) and gives the same predictions."""
    _, out, _ = cv_run
    monkeypatch.setenv("MEDLENS_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    shutil.copytree(out, run)
    with np.load(run / "fold_1" / "oof.npz") as z:
        probs = z["probs"].copy()
    (run / "fold_1" / "result.json").unlink()
    (run / "fold_1" / "oof.npz").unlink()
    last = run / "fold_1" / "checkpoints" / "last.pt"
    mtime = last.stat().st_mtime_ns
    res = runner.invoke(get_app(), ["cv", "ignored", "--out", str(run), "--resume"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert last.stat().st_mtime_ns == mtime
    with np.load(run / "fold_1" / "oof.npz") as z:
        assert np.allclose(z["probs"], probs, atol=1e-6)


def test_existing_run_without_resume_is_refused(cv_run):
    data, out, _ = cv_run
    res = runner.invoke(get_app(), ["cv", str(data), "--folds", "3", "--out", str(out), *TINY])
    assert res.exit_code == 2 and "--resume" in res.output


def test_bad_folds_and_t_interval(tmp_path):
    from medlens.errors import ConfigError
    from medlens.pipelines.config import RunConfig
    from medlens.pipelines.crossval import cross_validate
    from medlens.pipelines.crossval_summary import fold_t_interval

    with pytest.raises(ConfigError, match="folds"):
        cross_validate(RunConfig(data={"path": str(tmp_path)}), tmp_path / "o", folds=1)
    ci = fold_t_interval([0.6, 0.7, 0.8])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) · sd / √k
    assert ci["low"] == pytest.approx(0.7 - half) and ci["high"] == pytest.approx(0.7 + half)
    assert fold_t_interval([0.9]) is None and fold_t_interval([0.99, 0.999, 0.5])["high"] == 1.0


def test_realdata_isic_smoke(tmp_path):
    data = SHARED / "isic_skin_lesions"
    if not (data / "labels.csv").exists():
        pytest.skip(f"{data} not found")
    out = tmp_path / "cv"
    res = runner.invoke(
        get_app(),
        [
            "cv",
            str(data),
            "--folds",
            "2",
            "--out",
            str(out),
            "--size",
            "64",
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--no-audit",
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    cv = json.loads((out / "cv_metrics.json").read_text())
    assert cv["pooled"]["counts"]["n"] == 150 and cv["grouping"] == "image"
    # 150 colour photos and no --model: the small-photo-set recipe (a linear head on frozen
    # ImageNet features, the whole field of view); the size given on the command line wins
    model, pre, train = cv["config"]["model"], cv["config"]["preprocess"], cv["config"]["train"]
    assert model["name"] == "efficientnet_lite0" and model["pretrained"] == "imagenet"
    assert pre["size"] == 64 and pre["resize"] == "stretch"
    assert train["freeze_backbone_epochs"] == train["epochs"] == 1
