"""The patient-level report: metrics at the operating point with patient-bootstrap CIs,
the ROC curve, and per patient the cells with the highest attention (thumbnails) and the
cell-type mix of those cells — which cells drove each diagnosis."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens.evaluate import page as pg
from medlens.io.atomic import atomic_write_text
from medlens.mil.bags import Bags

HEADLINE = (("roc_auc", "ROC-AUC"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
            ("balanced_accuracy", "balanced accuracy"), ("ppv", "PPV"), ("npv", "NPV"))


def _thumb(cell: np.ndarray, side: int = 72) -> str:
    """A ``(C, S, S)`` uint8 cell as a PNG data URI."""
    from PIL import Image

    arr = np.ascontiguousarray(cell.transpose(1, 2, 0))
    im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    if max(im.size) < side:
        im = im.resize((side, side), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _ci(metrics: dict[str, Any], key: str) -> str:
    ci = (metrics.get("ci") or {}).get(key)
    return f"{ci['low']:.3f}–{ci['high']:.3f}" if isinstance(ci, dict) else "not estimable"


def summary_html(metrics: dict[str, Any]) -> str:
    """Headline cards (value and 95 % patient-bootstrap CI) and how the threshold was chosen."""
    cards = "".join(
        f'<div class="card"><div>{pg.e(label)}</div><div class="v">{pg.e(pg.fmt(metrics.get(k)))}</div>'
        f'<div class="ci">95% CI {pg.e(_ci(metrics, k))}</div></div>' for k, label in HEADLINE)
    op = metrics.get("operating_point") or {}
    rule = (op.get("selection") or {}).get("rule", "")
    method = (metrics.get("ci") or {}).get("method", "no bootstrap")
    thr = op.get("threshold")
    return (f'<div class="cards">{cards}</div><p>Every number above is at the operating point: a patient is '
            f"called diseased when 1 − p({pg.e((metrics.get('negative_class') or {}).get('name'))}) ≥ "
            f"{pg.e(pg.fmt(thr, digits=4))} ({pg.e(rule)}). CIs: {pg.e(method)}.</p>")


def patients_html(rows: Sequence[dict[str, Any]], bags: Bags) -> str:
    """One block per patient, misclassified first: truth, call, score, top-attention cells."""
    out = []
    for r in sorted(rows, key=lambda r: (r["correct"], -r["disease_score"])):
        figs = "".join(
            f'<figure><img src="{_thumb(bags.images[c["row"]])}" alt="{pg.e(c["cell_type"])}" width="72">'
            f'<figcaption>{pg.e(c["cell_type"])}<br>a={c["attention"]:.3f}</figcaption></figure>'
            for c in r["top_cells"])
        mix = ", ".join(f"{k} {v}" for k, v in r["top_cell_types"].items())
        allmix = ", ".join(f"{k} {v}" for k, v in r["cell_types"].items())
        mark = "" if r["correct"] else ' style="color:#c0392b"'
        out.append(f"<h3{mark}>{pg.e(r['patient'])}: {pg.e(r['label'])} → called {pg.e(r['predicted'])} "
                   f"(disease score {r['disease_score']:.3f}, {r['cells']} cells)</h3>"
                   f"<p>cell types of the {len(r['top_cells'])} highest-attention cells: {pg.e(mix)}"
                   f'<br><span class="muted">all cells: {pg.e(allmix)}</span></p><div>{figs}</div>')
    return "".join(out) or '<p class="muted">No patients.</p>'


def write_report(path: str | Path, metrics: dict[str, Any], rows: Sequence[dict[str, Any]], bags: Bags, *,
                 history: Sequence[dict[str, Any]] | None = None, title: str = "Patient-level diagnosis",
                 problems: Sequence[Any] = ()) -> Path:
    """``report.html``: summary, ROC, per-patient attention, training curves, files left out."""
    from medlens.evaluate.figures import roc_png, training_curves_png

    table = pg.table([{"patient": r["patient"], "label": r["label"], "predicted": r["predicted"],
                       "disease score": r["disease_score"], "cells": r["cells"]} for r in rows],
                     row_class=lambda r: "" if r["label"] == r["predicted"] else "bad")
    sections = [
        ("Summary", summary_html(metrics) + table),
        ("ROC curve", pg.img(roc_png(metrics.get("roc_curve"), auc=metrics.get("roc_auc_disease"),
                                     operating_point=metrics.get("operating_point")), "ROC curve")),
        ("Which cells drove each diagnosis", "<p>Per patient, the cells the pooling weighted most (attention "
         "a, summing to 1 over the patient's cells) and the cell-type mix of those cells.</p>"
         + patients_html(rows, bags)),
    ]
    if history:
        sections.append(("Training", pg.img(training_curves_png(history, best_epoch=metrics.get("best_epoch"),
                                                                monitor="val_loss"), "training curves")))
    if problems:
        items = "".join(f"<li>{pg.e(p.path)}: {pg.e(p.reason)}</li>" for p in list(problems)[:200])
        more = f"<p class='muted'>… and {len(problems) - 200} more</p>" if len(problems) > 200 else ""
        sections.append(("Files left out", f"<ul>{items}</ul>{more}"))
    return atomic_write_text(path, pg.page(title, sections))


def write_cv_report(path: str | Path, cv: dict[str, Any], *, title: str) -> Path:
    """``cv_report.html`` of a patient cross-validation: pooled out-of-fold metrics with
    patient-bootstrap CIs, the pooled ROC, per-fold rows and every patient's out-of-fold score."""
    from medlens.evaluate.figures import roc_png

    pooled = cv.get("pooled") or {}
    auc = cv.get("auc") or {}
    t, b = auc.get("ci_fold_t") or {}, auc.get("ci_pooled_bootstrap") or {}
    intro = (f"<p>{cv.get('folds')} folds of whole patients (stratified by diagnosis; a patient is never in two "
             f"folds), {cv.get('patients')} patients, each predicted once by the model that did not train on "
             f"it. AUC {pg.fmt(auc.get('mean'))} ± {pg.fmt(auc.get('std'))} over folds (95% CI, t over folds: "
             f"{pg.fmt(t.get('low'))}–{pg.fmt(t.get('high'))}); pooled out-of-fold AUC "
             f"{pg.fmt(auc.get('pooled_oof'))} (95% CI, patient bootstrap: {pg.fmt(b.get('low'))}–"
             f"{pg.fmt(b.get('high'))}).</p>")
    folds = pg.table([{k: (", ".join(v) if isinstance(v, list) else v) for k, v in r.items()
                       if k in ("fold", "n_test", "roc_auc", "sensitivity", "specificity", "balanced_accuracy",
                                "threshold", "best_epoch", "test")} for r in cv.get("per_fold") or []])
    pats = pg.table([{"patient": q, **r} for q, r in sorted((cv.get("per_patient") or {}).items(),
                                                           key=lambda kv: -kv[1]["disease_score"])])
    sections = [("Pooled out-of-fold", intro + summary_html(pooled)),
                ("ROC curve (pooled out-of-fold)", pg.img(roc_png(pooled.get("roc_curve"),
                                                                   auc=pooled.get("roc_auc_disease")), "ROC curve")),
                ("Folds", folds), ("Patients", pats)]
    return atomic_write_text(path, pg.page(title, sections))
