"""One operating point everywhere: every place that reports a sensitivity reports the same one.

The data are built so the 0.5/argmax call and the validation threshold give different
sensitivities; a place that fell back to the argmax call would show the other number.
"""

from __future__ import annotations

import functools
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from medlens.evaluate import (
    alternative_thresholds,
    choose_threshold,
    classification_metrics,
    model_card_markdown,
    selection_record,
    write_report,
)
from medlens.evaluate.model_card import operating_point_text
from medlens.io.atomic import atomic_write_json

CLASSES = ["normal", "tumour"]


def _probs(score: np.ndarray) -> np.ndarray:
    return np.stack([1 - score, score], axis=1)


@functools.cache
def _known() -> dict:
    rng = np.random.default_rng(0)
    # test: 16 disease (scores spread 0.32..0.95), 24 negative (0.05..0.6), 10 patients
    y = np.array([1] * 16 + [0] * 24)
    s = np.concatenate([np.linspace(0.32, 0.95, 16), np.linspace(0.05, 0.6, 24)])
    patients = [f"p{i % 10}" for i in range(40)]
    # validation: the threshold for sensitivity >= 0.95 (19 of 20) lands at 0.35
    yv = np.array([1] * 20 + [0] * 20)
    sv = np.concatenate([[0.30], np.linspace(0.35, 0.9, 19), rng.uniform(0.0, 0.5, 20)])
    op = choose_threshold(yv, _probs(sv), negative_class=0, target_sensitivity=0.95)
    m = classification_metrics(
        y, _probs(s), CLASSES, negative_class=0, threshold=op["threshold"],
        selection=selection_record(op, chosen_on="val"),
        alternatives=alternative_thresholds(yv, _probs(sv), negative_class=0),
        patients=patients, n_bootstrap=200, seed=0,
    )
    called = s >= op["threshold"]
    return {"metrics": m, "threshold": op["threshold"], "sens": called[y == 1].mean(),
            "sens_05": (s >= 0.5)[y == 1].mean(), "spec": (~called)[y == 0].mean()}


def _text(fragment: str) -> list[str]:
    """Visible text tokens of an HTML fragment, in order."""
    tokens = re.split(r"<[^>]+>", fragment)
    return [html.unescape(t).strip() for t in tokens if t.strip()]


def _section(page: str, title: str) -> str:
    m = re.search(rf"<h2[^>]*>{re.escape(title)}</h2>(.*?)(?=<h2|</main>|$)", page, re.S)
    assert m, title
    return m.group(1)


def _tables(fragment: str) -> list[list[list[str]]]:
    out = []
    for t in re.findall(r"<table.*?</table>", fragment, re.S):
        rows = [[" ".join(_text(c)) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)]
                for r in re.findall(r"<tr[^>]*>(.*?)</tr>", t, re.S)]
        out.append(rows)
    return out


def _after(tokens: list[str], label: str) -> str:
    return tokens[tokens.index(label) + 1]


def test_known_data_separates_the_two_calls() -> None:
    k = _known()
    assert k["threshold"] == pytest.approx(0.35)
    assert k["sens"] == 15 / 16 and k["sens_05"] < 0.8  # a report mixing the calls would show both


def test_same_sensitivity_in_summary_matrix_tables_card_and_metrics_json(tmp_path: Path) -> None:
    k = _known()
    want = f"{k['sens']:.3f}"
    # metrics.json, read back as a user would
    m = json.loads(atomic_write_json(tmp_path / "metrics.json", k["metrics"]).read_text())
    op = m["operating_point"]
    assert op["threshold"] == pytest.approx(k["threshold"])
    assert op["selection"]["chosen_on"] == "val" and op["selection"]["target_sensitivity"] == 0.95
    assert m["sensitivity"] == op["sensitivity"] == pytest.approx(k["sens"])
    assert m["specificity"] == op["specificity"] == pytest.approx(k["spec"])
    cm = np.array(m["confusion_matrix"]["matrix"])
    assert cm[1, 1] / cm[1].sum() == pytest.approx(k["sens"])
    tn, fp, fn, tp = np.array(op["confusion_matrix"]["matrix"]).ravel()
    assert tp / (tp + fn) == pytest.approx(k["sens"]) and (tn, fp) == tuple(cm[0])
    pc = {r["class"]: r for r in m["per_class"]}
    assert pc["tumour"]["recall"] == pytest.approx(k["sens"])
    assert pc["normal"]["recall"] == pytest.approx(k["spec"])
    # the HTML report
    card = {"name": "tiny", "intended_use": "teaching"}
    page = write_report(tmp_path / "run", title="t", data_summary={}, split_table={}, history=[],
                        metrics=m, patient_table=None, samples=[], model_card=card).read_text()
    summary = html.unescape(_section(page, "Summary"))
    assert _after(_text(summary), "Sensitivity") == want
    assert f"≥ {k['threshold']:.4f}" in summary
    assert "largest disease-score threshold with sensitivity >= 0.95 on the val split" in summary
    assert "resampling the 10 patients" in summary  # the bootstrap unit and count
    roc = _tables(_section(page, "ROC curve and operating point"))[0]
    assert roc[1][roc[0].index("sensitivity")] == want
    per_class = _tables(_section(page, "Per-class metrics"))[0]
    row = next(r for r in per_class if r[0] == "tumour")
    assert row[per_class[0].index("recall")] == want
    card_rows = {r[0]: r[1] for t in _tables(_section(page, "Model card")) for r in t if len(r) == 2}
    assert card_rows["Sensitivity"] == want
    # the Markdown model card shipped in the package
    md = model_card_markdown(card, m)
    assert f"| Sensitivity | {want} |" in md and f"≥ {k['threshold']:.4f}" in md
    # the 0.5 call's sensitivity appears in one place only: the alternatives table
    other = f"{k['sens_05']:.3f}"
    alt_html = _section(page, "Alternative operating points")
    assert other in alt_html
    assert other not in page.replace(alt_html, "")


def test_alternatives_table_is_labelled_and_marks_the_used_point(tmp_path: Path) -> None:
    m = _known()["metrics"]
    page = write_report(tmp_path, title="t", data_summary={}, split_table={}, history=[], metrics=m,
                        patient_table=None, samples=[], model_card={}).read_text()
    alt = _section(page, "Alternative operating points")
    assert "the package does not use them" in alt
    rows = _tables(alt)[0]
    names = [r[0] for r in rows[1:]]
    assert names == ["sensitivity >= 0.90", "sensitivity >= 0.95", "sensitivity >= 0.99", "0.5 call"]
    assert rows[0][:3] == ["alternative", "threshold", "chosen on"]
    assert "test specificity" in rows[0] and "test PPV" in rows[0] and "test NPV" in rows[0]
    marked = [r[0] for r in rows[1:] if "= the operating point" in r]
    assert marked == ["sensitivity >= 0.95"]


def test_cli_summary_speaks_of_the_same_point(capsys) -> None:
    from medlens.cli.commands import print_summary
    from medlens.tasks import get_task

    k = _known()
    print_summary(k["metrics"], Path("run"), get_task("classify"))
    raw = capsys.readouterr().out
    out = " ".join(raw.split())
    assert f"at threshold {k['threshold']:.3f}" in out
    assert re.search(rf"Sensitivity\s*│\s*{k['sens']:.3f}\s*│", raw)
    assert f"{k['sens_05']:.3f}" not in out
    assert "resampling the 10 patients" in out


def test_argmax_run_says_it_has_no_threshold() -> None:
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 3, 30), rng.dirichlet(np.ones(3), 30)
    m = classification_metrics(y, p, ["normal", "a", "b"], negative_class=0, n_bootstrap=0)
    text = operating_point_text(m)
    assert "no threshold" in text and "argmax" in text and "multi-class" in text
    assert m["operating_point"]["threshold"] is None
    want = [[int(np.sum((y == t) & (p.argmax(1) == c))) for c in range(3)] for t in range(3)]
    assert m["confusion_matrix"]["matrix"] == want


def test_package_call_follows_the_threshold_not_argmax() -> None:
    from medlens.package import ModelPackage

    pkg = object.__new__(ModelPackage)  # only the metadata matters to the call
    pkg.metadata = {"classes": ["normal", "a", "b"], "threshold": 0.3, "negative_class": 0}
    p = np.array([[0.6, 0.1, 0.3], [0.8, 0.15, 0.05], [0.2, 0.7, 0.1]])
    assert pkg.call(p).tolist() == [2, 0, 1]  # argmax would say [0, 0, 1]
    pkg.metadata["threshold"] = None  # a model without a threshold: argmax
    assert pkg.call(p).tolist() == [0, 0, 1]


def test_report_of_per_fold_thresholds_states_them(tmp_path: Path) -> None:
    """Pooled cross-validation: each image at its fold's threshold; the report says so."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = np.clip(0.3 * y + rng.uniform(0, 0.7, 60), 0, 1)
    thr = np.repeat([0.3, 0.4, 0.5], 20)
    m = classification_metrics(y, _probs(s), CLASSES, negative_class=0, threshold=thr,
                               selection={"rule": "per fold, on validation"}, n_bootstrap=50)
    assert m["sensitivity"] == pytest.approx(np.mean((s >= thr)[y == 1]))
    page = write_report(tmp_path, title="cv", data_summary={}, split_table={}, history=[], metrics=m,
                        patient_table=None, samples=[], model_card={}).read_text()
    assert "its own fold&#x27;s threshold (0.3000–0.5000)" in page


def test_the_report_names_what_its_metrics_were_computed_on():
    """A run without test patients must not call its images "test images": a fold ensemble's
    are out of fold, a single network's are the validation images its threshold was chosen on;
    ``medlens evaluate`` names the split of the data it was given."""
    from medlens.evaluate.model_card import evaluated_text

    assert evaluated_text({"split": "test"}) == "Test images"
    assert evaluated_text({"split": "out_of_fold"}).startswith("Out-of-fold images (no test split")
    assert "operating point was chosen on them" in evaluated_text({"split": "val"})
    assert evaluated_text({"split": "val", "data": "new"}) == "Val images"  # evaluate --split val: no claim
