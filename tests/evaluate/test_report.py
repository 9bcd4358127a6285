"""The HTML report is self-contained, complete and escapes every user string."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from medlens.evaluate import (
    NOT_FOR_CLINICAL_USE,
    alternative_thresholds,
    calibration_summary,
    choose_threshold,
    classification_metrics,
    figures,
    model_card_markdown,
    select_samples,
    selection_record,
    write_report,
)
from medlens.evaluate.report import SECTIONS

EVIL = "<script>alert(1)</script>"


@functools.cache  # shared by several tests; nothing mutates the result
def _run(seed: int = 0, n: int = 120) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, 2)) * 2
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    classes = ["normal", EVIL]
    op = choose_threshold(y, probs, negative_class=0, target_sensitivity=0.9)
    patients = [f"p{i // 4}" if i % 10 else f"<b>{i}</b>" for i in range(n)]
    m = classification_metrics(
        y,
        probs,
        classes,
        negative_class=0,
        threshold=op["threshold"],
        selection=selection_record(op, chosen_on="val"),
        alternatives=alternative_thresholds(y, probs, negative_class=0),
        patients=patients,
        n_bootstrap=100,
        logits=logits,
        val_logits=logits,
        val_y=y,
    )
    return {"metrics": m, "probs": probs, "y": y}


def _report_kwargs(metrics: dict) -> dict:
    rng = np.random.default_rng(1)
    samples = [
        (rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), f"true {EVIL} ok"),
        (rng.integers(0, 255, (16, 16, 1), dtype=np.uint8), "wrong"),
    ]
    history = [
        {"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_auc": 0.5 + 0.1 * e}
        for e in range(4)
    ]
    return {
        "title": f"Run {EVIL}",
        "data_summary": {"layout": "medmnist", "images": 120, "note": EVIL},
        "split_table": {"train": {"normal": 50, EVIL: 30}, "test": {"normal": 20, EVIL: 20}},
        "history": history,
        "metrics": metrics,
        "patient_table": None,
        "samples": samples,
        "model_card": {"name": "tiny", "intended_use": "teaching", "limitations": [EVIL, "small"]},
        "extra_sections": [(f"Audit {EVIL}", "<p id='extra'>from audit</p>")],
    }


def test_report_is_complete_self_contained_and_escaped(tmp_path: Path) -> None:
    run = _run()
    path = write_report(tmp_path / "run", **_report_kwargs(run["metrics"]))
    assert path == tmp_path / "run" / "report.html"
    text = path.read_text(encoding="utf-8")
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in text, heading
    assert "Not for clinical use" in text
    assert text.count(NOT_FOR_CLINICAL_USE) >= 2  # banner + model card
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) >= 6  # curves, ROC, PR, confusion, reliability, samples
    # every src is a data URI; every link is an in-page anchor; no external resource
    assert all(s.startswith("data:") for s in re.findall(r'src="([^"]*)"', text))
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))
    stripped = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert "http" not in stripped.lower()
    assert "<link" not in stripped and "@import" not in stripped
    # user strings are escaped; only the trusted extra-section body is raw HTML
    assert "<script" not in text.lower()
    assert "&lt;script&gt;" in text
    assert "<b>" not in text and "&lt;b&gt;" in text  # patient id
    assert "<p id='extra'>from audit</p>" in text and "<h2>Audit &lt;script&gt;" in text
    assert not [p for p in path.parent.iterdir() if p.name != "report.html"]  # atomic


def test_report_handles_one_class_test_set_and_html_path(tmp_path: Path) -> None:
    y = np.zeros(6, dtype=int)
    p = np.tile([0.8, 0.2], (6, 1))
    m = classification_metrics(y, p, ["normal", "x"], negative_class=0, n_bootstrap=20)
    kwargs = _report_kwargs(m)
    kwargs.update(history=[], samples=[], patient_table=None, extra_sections=None)
    path = write_report(tmp_path / "custom.html", **kwargs)
    text = path.read_text(encoding="utf-8")
    assert path.name == "custom.html"
    assert "not available" in text and "n/a" in text
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in text


def test_explicit_patient_table_is_rendered(tmp_path: Path) -> None:
    m = _run()["metrics"]
    table = [
        {
            "patient": "P-007",
            "n_images": 3,
            "true": 1,
            "score": 0.9,
            "predicted": 1,
            "correct": True,
        }
    ]
    kwargs = _report_kwargs(m)
    kwargs["patient_table"] = table
    text = write_report(tmp_path, **kwargs).read_text(encoding="utf-8")
    assert "P-007" in text


def test_model_card_markdown() -> None:
    m = _run()["metrics"]
    md = model_card_markdown(
        {"name": "tiny", "intended_use": "teaching", "limitations": ["small data"]}, m
    )
    assert md.startswith("# Model card: tiny")
    assert "Not for clinical use" in md
    assert "## Intended use" in md and "- small data" in md
    assert re.search(r"\| ROC AUC \| 0\.\d{3} \| 0\.\d{3}–[01]\.\d{3} \|", md)
    for label in ("PPV", "NPV"):  # CIs for PPV and NPV too
        assert re.search(rf"\| {label} \| [01]\.\d{{3}} \| [01]\.\d{{3}}–[01]\.\d{{3}} \|", md)
    assert "Operating point: an image is called diseased" in md
    assert "resampling the 42 patients" in md  # the unit and the count of the bootstrap
    assert "sensitivity >= 0.9 on the val split" in md  # how the threshold was chosen


def test_select_samples_picks_confident_mistakes() -> None:
    y = np.array([0, 0, 1, 1, 0])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.95, 0.05], [0.6, 0.4]])
    picked = select_samples(y, p, ["normal", "tumour"], n_correct=2, n_incorrect=1)
    assert [i for i, _ in picked[2:]] == [3]  # most confident mistake
    assert {i for i, _ in picked[:2]} <= {0, 2, 4}
    assert picked[2][1] == "WRONG true tumour / pred normal 0.95"


def test_figures_return_png_bytes() -> None:
    run = _run()
    m = run["metrics"]
    cal = m["calibration"]
    pngs = [
        figures.roc_png(m["roc_curve"], auc=m["roc_auc"], operating_point=m["operating_point"]),
        figures.pr_png(m["pr_curve"], ap=m["pr_auc"]),
        figures.confusion_png(m["confusion_matrix"]["matrix"], m["classes"]),
        figures.reliability_png(cal["reliability"], cal["reliability_after_temperature"]),
        figures.training_curves_png([{"epoch": 0, "train_loss": 1.0, "val_auc": 0.6}]),
        figures.image_grid_png([(np.zeros((8, 8), np.uint8), "cost $5 and $x")]),
        figures.confusion_png([[1, 0], [0, 1]], ["a$b", "$\\frac{$"]),
    ]
    assert all(isinstance(b, bytes) and b.startswith(b"\x89PNG") for b in pngs)
    assert figures.roc_png(None) is None and figures.training_curves_png([]) is None


def test_calibration_summary_in_metrics_feeds_report() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(size=(50, 3)) * 4
    y = rng.integers(0, 3, 50)
    s = calibration_summary(z, y, z, y)
    assert s["temperature"] > 1.0  # random labels: sharp logits must be softened
    assert s["ece_after_temperature"] < s["ece"]
