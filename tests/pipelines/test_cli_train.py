"""End to end through the CLI: train → run directory → predict → evaluate → Python API."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

import medlens
from medlens.cli.main import get_app

runner = CliRunner()


def test_run_directory_is_complete(trained_run):
    for name in ("config.json", "splits.csv", "metrics.json", "report.html", "model/weights.pt",
                 "model/metadata.json", "model/model_card.md", "logs/history.csv", "checkpoints/last.pt"):
        assert (trained_run / name).exists(), name
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["model"]["name"] == "test_cnn" and cfg["preprocess"]["size"] == 32
    m = json.loads((trained_run / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "roc_auc",
                "pr_auc", "confusion_matrix", "per_class", "ci", "calibration", "operating_point", "patient_level"):
        assert key in m, key
    op = m["operating_point"]
    assert op["selection"]["chosen_on"] == "val" and op["selection"]["target_sensitivity"] == 0.90  # the IDC rule
    assert all(m[k] == op[k] for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy"))
    cm = m["confusion_matrix"]["matrix"]  # the K×K matrix is of the same call
    assert op["confusion_matrix"]["matrix"] == cm
    assert [r["name"] for r in m["alternative_operating_points"]["rows"]][-1] == "0.5 call"
    assert m["ci"]["unit"] == "patient"  # IDC layout: patient ids known → patients resampled
    assert 0 <= m["roc_auc"] <= 1
    meta = json.loads((trained_run / "model" / "metadata.json").read_text())
    assert meta["task"] == "classify" and meta["classes"] == ["0", "1"] and meta["threshold"] is not None
    assert meta["operating_point"]["threshold"] == meta["threshold"] == op["threshold"]
    assert len(meta["operating_point"]["alternatives"]) == 4
    html = (trained_run / "report.html").read_text()
    assert "Not for clinical use" in html and "data:image/png;base64" in html


def test_splits_never_share_a_patient(trained_run):
    rows = [ln.split(",") for ln in (trained_run / "splits.csv").read_text().splitlines()[1:]]
    split_of_patient: dict[str, set[str]] = {}
    for path, split in rows:
        patient = path.replace("\\", "/").split("/")[-3]
        split_of_patient.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in split_of_patient.values())
    assert {s for v in split_of_patient.values() for s in v} == {"train", "val", "test"}


def test_predict_cli_and_python_api(trained_run, idc_small, tmp_path):
    img = tmp_path / "photo.jpg"
    Image.fromarray((np.random.default_rng(0).random((333, 517, 3)) * 255).astype(np.uint8)).save(img)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    out = tmp_path / "preds.csv"
    res = runner.invoke(get_app(), ["predict", str(trained_run), str(img), str(bad), "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("file,predicted,disease_score,decision") and len(lines) == 3
    assert "photo.jpg" in lines[1] and "bad.png" in lines[2] and "not a readable image" in lines[2]
    pkg = medlens.load_model(trained_run)
    rows = pkg.predict([np.zeros((10, 20, 1), np.uint8), str(img)])
    assert len(rows) == 2
    for r in rows:
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-5
        assert r["decision"] in ("positive", "negative")
    # the predicted class follows the operating point: negative class exactly when decision is negative
    patches = sorted(idc_small.rglob("*.png"))[::7]
    rows = pkg.predict([str(f) for f in patches])
    neg = pkg.classes[pkg.negative_class]
    for r in rows:
        assert (r["predicted"] == neg) == (r["decision"] == "negative") == (r["disease_score"] < r["threshold"])


def test_evaluate_cli_reuses_run_splits(trained_run, idc_small, tmp_path):
    res = runner.invoke(get_app(), ["evaluate", str(trained_run), str(idc_small), "--split", "test",
                                    "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    tr = json.loads((trained_run / "metrics.json").read_text())
    assert ev["counts"]["n"] == tr["counts"]["n"]
    assert abs(ev["roc_auc"] - tr["roc_auc"]) < 1e-6
    assert (tmp_path / "ev" / "report.html").exists()


def test_user_errors_are_one_clean_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(get_app(), ["train", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "runs").exists(), "a failed start must not leave a run directory behind"
    res = runner.invoke(get_app(), ["predict", str(tmp_path), "x.png"])
    assert res.exit_code == 1 and "not a medlens model package" in res.output


def test_model_typo_gets_did_you_mean(idc_small, tmp_path):
    res = runner.invoke(get_app(), ["train", str(idc_small), "--out", str(tmp_path / "r"), "--model", "cancernt",
                                    "--epochs", "1", "--no-audit"])
    assert res.exit_code == 2 and "Did you mean" in res.output and "cancernet" in res.output
