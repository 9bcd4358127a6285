"""Multi-class data without a healthy class get the argmax operating point (issue 14).

Before: cell types (basophil, eosinophil, …) fell back to "negative = class 0" and every
pipeline applied a sensitivity-targeted threshold on 1 − p(basophil)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import medlens
from medlens.cli.main import get_app
from medlens.errors import ConfigError
from medlens.evaluate.metrics import classification_metrics
from medlens.evaluate.operating_point import ARGMAX_NOTE, operating_negative_class
from medlens.pipelines.evaluation import negative_class_index

runner = CliRunner()
TINY = ["--model", "test_cnn", "--size", "32", "--epochs", "2", "--batch-size", "16"]
COLOURS = ((200, 60, 60), (60, 200, 60), (60, 60, 200))


def _folders(root: Path, names: tuple[str, ...], per_class: int = 14) -> Path:
    """One folder per class of small noisy colour squares (class = colour)."""
    rng = np.random.default_rng(0)
    for name, colour in zip(names, COLOURS, strict=False):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(np.array(colour) + rng.normal(0, 60, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{name}_{i}.png")
    return root


def _train(tmp: Path, names: tuple[str, ...]) -> tuple[Path, Path]:
    data = _folders(tmp / "data", names)
    out = tmp / "run"
    res = runner.invoke(get_app(), ["train", str(data), "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return data, out


def test_the_rule_names_no_negative_class_only_for_multiclass_without_a_healthy_name():
    assert operating_negative_class(["a", "b", "c"]) is None
    assert operating_negative_class(["a", "Normal", "c"]) == 1
    assert operating_negative_class(["cat", "dog"]) == 0  # binary: unchanged
    assert operating_negative_class(["a", "b", "c"], named=2) == 2
    assert negative_class_index(["basophil", "eosinophil", "ig"], None) is None
    assert negative_class_index(["basophil", "eosinophil", "ig"], "ig") == 2
    assert negative_class_index(["cat", "dog"], None) == 0


def test_metrics_without_a_negative_class_are_argmax_and_drop_disease_rates():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    p = rng.dirichlet(np.ones(3), size=60)
    p[np.arange(60), y] += 0.4 * (rng.random(60) < 0.6)
    p /= p.sum(1, keepdims=True)
    m = classification_metrics(y, p, ["a", "b", "c"], negative_class=None, n_bootstrap=50)
    assert m["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == y)))
    assert m["operating_point"]["threshold"] is None and m["operating_point"]["note"] == ARGMAX_NOTE
    assert m["negative_class"]["index"] is None
    for key in ("sensitivity", "specificity", "ppv", "npv", "f1", "roc_auc_disease"):
        assert m[key] is None and "no negative class" in m["undefined"][key]
    assert m["negative_class"]["note"] == ARGMAX_NOTE
    assert m["ci"]["sensitivity"] is None and m["ci"]["accuracy"] is not None
    recall_b = np.mean(p[y == 1].argmax(1) == 1)
    assert m["per_class"][1]["recall"] == pytest.approx(recall_b)  # one-vs-rest sensitivity kept
    # with negative class 0 the same data get the old disease-vs-"a" rates
    old = classification_metrics(y, p, ["a", "b", "c"], negative_class=0, n_bootstrap=0)
    assert old["sensitivity"] is not None
    with pytest.raises(ConfigError, match="negative-class"):
        classification_metrics(y, p, ["a", "b", "c"], negative_class=None, threshold=0.5, n_bootstrap=0)


def test_three_classes_without_healthy_name_train_predict_evaluate_argmax(tmp_path):
    data, run = _train(tmp_path, ("a", "b", "c"))
    meta = json.loads((run / "model" / "metadata.json").read_text())
    assert meta["threshold"] is None
    assert meta["operating_point"]["negative_class"] is None and meta["operating_point"]["note"] == ARGMAX_NOTE
    m = json.loads((run / "metrics.json").read_text())
    assert m["operating_point"]["threshold"] is None and m["sensitivity"] is None
    assert ARGMAX_NOTE in m["operating_point"]["selection"]["rule"]

    with (run / "splits.csv").open(newline="") as fh:
        test = [r["path"] for r in csv.DictReader(fh) if r["split"] == "test"]
    assert test
    files = [p if Path(p).is_absolute() else str(data / p) for p in test]
    pkg = medlens.load_model(run)
    rows = pkg.predict(files)
    for r in rows:  # predicted = argmax, no decision without a threshold
        assert r["predicted"] == max(r["probabilities"], key=r["probabilities"].get)
        assert "decision" not in r
    truth = [Path(f).parent.name for f in files]
    argmax_acc = float(np.mean([r["predicted"] == t for r, t in zip(rows, truth, strict=True)]))
    assert m["accuracy"] == pytest.approx(argmax_acc)

    res = runner.invoke(get_app(), ["evaluate", str(run), str(data), "--split", "test", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["accuracy"] == pytest.approx(argmax_acc)
    assert ev["negative_class"]["index"] is None and ev["sensitivity"] is None
    assert (tmp_path / "ev" / "report.html").exists()

    # calibrate refits the temperature only: no threshold appears on "1 - p(a)"
    res = runner.invoke(get_app(), ["calibrate", str(run), str(data), "--fraction", "0.5"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    (cal,) = (run / "calibrations").iterdir()
    cal_meta = json.loads((cal / "model" / "metadata.json").read_text())
    assert cal_meta["threshold"] is None and cal_meta["operating_point"]["negative_class"] is None
    assert cal_meta["metrics"]["sensitivity"] is None
    res = runner.invoke(get_app(), ["calibrate", str(run), str(data), "--target-sensitivity", "0.9",
                                    "--out", str(tmp_path / "cal2")])
    assert res.exit_code != 0 and "--negative-class" in res.output


def test_a_class_named_normal_keeps_the_threshold(tmp_path):
    _, run = _train(tmp_path, ("b", "c", "normal"))
    meta = json.loads((run / "model" / "metadata.json").read_text())
    assert isinstance(meta["threshold"], float) and meta["negative_class"] == 2
    m = json.loads((run / "metrics.json").read_text())
    assert m["negative_class"]["name"] == "normal" and m["sensitivity"] is not None
    assert m["operating_point"]["selection"]["target_sensitivity"] == 0.95


def test_cv_on_three_classes_pools_argmax_accuracy(tmp_path):
    data = _folders(tmp_path / "data", ("a", "b", "c"), per_class=12)
    out = tmp_path / "cv"
    res = runner.invoke(get_app(), ["cv", str(data), "--folds", "2", "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output + repr(res.exception)
    cv = json.loads((out / "cv_metrics.json").read_text())
    assert all(r["threshold"] is None for r in cv["per_fold"])
    probs, labels = [], []
    for i in range(2):
        with np.load(out / f"fold_{i}" / "oof.npz") as z:
            probs.append(z["probs"])
            labels.append(z["labels"])
    p, y = np.concatenate(probs), np.concatenate(labels)
    pooled = cv["pooled"]
    assert pooled["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == y)))
    assert pooled["operating_point"]["threshold"] is None and pooled["sensitivity"] is None
    assert cv["pooled_operating_point"]["rule"] == ARGMAX_NOTE
    assert "argmax" in res.output and ARGMAX_NOTE in (out / "cv_report.html").read_text()
