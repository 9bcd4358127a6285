"""A self-contained HTML report of one run (the Markdown model card: :mod:`medlens.evaluate.model_card`).

The report is one file: inline CSS, figures embedded as base64 PNG data URIs, no
scripts and no external link, so it can be mailed or archived and still render. Every
string that comes from the user or the data (class names, patient ids, captions,
model-card text) is HTML-escaped. ``extra_sections`` lets other modules (explanations,
audit) append sections: their titles are escaped, their bodies are trusted HTML made by
medlens itself and inserted as given.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens.evaluate import figures
from medlens.evaluate.model_card import CARD_ORDER as _CARD_ORDER
from medlens.evaluate.model_card import NOT_FOR_CLINICAL_USE
from medlens.evaluate.model_card import fmt_value as _fmt
from medlens.io.atomic import atomic_write_text

SECTIONS = (
    "Summary",
    "Data summary",
    "Splits",
    "Training curves",
    "ROC curve and operating point",
    "Confusion matrix",
    "Calibration",
    "Per-class metrics",
    "Per-patient results",
    "Sample predictions",
    "Model card",
)
_MAX_PATIENT_ROWS = 500

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
color:#1d2733;background:#f6f7f9;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:1.2em 1.5em 3em}
h1{margin:.4em 0 .2em}h2{border-bottom:2px solid #d8dde3;padding-bottom:.2em;margin-top:1.8em}
section{background:#fff;border:1px solid #e1e5ea;border-radius:6px;padding:.2em 1.2em 1em;
margin:1em 0}
.warn{background:#fdecea;border:2px solid #c0392b;color:#7b1e14;font-weight:700;
padding:.8em 1em;border-radius:6px;margin:1em 0}
.cards{display:flex;flex-wrap:wrap;gap:.8em}
.card{background:#eef3f9;border-radius:6px;padding:.6em 1em;min-width:150px}
.card .v{font-size:1.5em;font-weight:700}.card .ci{color:#56606b;font-size:.85em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #d8dde3;padding:.25em .6em;text-align:left}
th{background:#eef1f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fff3f1}img{max-width:100%;height:auto}.muted{color:#6b7580}
nav a{margin-right:.8em;color:#1f5fa8}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: Any) -> str:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    cls = ' class="n"' if numeric else ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, default=str)
    return f"<td{cls}>{_e(_fmt(value))}</td>"


def _table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, row_class: Any = None
) -> str:
    if not rows:
        return '<p class="muted">No rows.</p>'
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cls = f' class="{row_class(r)}"' if row_class and row_class(r) else ""
        body.append(f"<tr{cls}>" + "".join(_cell(r.get(c)) for c in cols) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv_table(data: dict[str, Any] | None) -> str:
    if not data:
        return '<p class="muted">Not provided.</p>'
    rows = "".join(f"<tr><th>{_e(k)}</th>{_cell(v)}</tr>" for k, v in data.items())
    return f"<table><tbody>{rows}</tbody></table>"


def _split_table(split_table: dict[str, Any] | None) -> str:
    """``{split: {class: n}}`` → a split × class table with totals; else key/value."""
    if not split_table:
        return '<p class="muted">Not provided.</p>'
    if all(isinstance(v, dict) for v in split_table.values()):
        rows = []
        for split, counts in split_table.items():
            row = {"split": split, **counts}
            nums = [v for v in counts.values() if isinstance(v, (int, np.integer))]
            if nums and "total" not in counts:
                row["total"] = int(sum(nums))
            rows.append(row)
        return _table(rows)
    return _kv_table(split_table)


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return f'<p class="muted">{_e(alt)}: not available for this run.</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _band(band: dict[str, Any] | None, level: Any) -> str:
    if not band:
        return ""
    pct = f"{100 * float(level):.0f}" if isinstance(level, (int, float)) else "95"
    return f"{pct}% CI {band['low']:.3f}–{band['high']:.3f}"


def _with_ci(metrics: dict[str, Any], key: str, ci: dict[str, Any] | None) -> tuple[str, str]:
    band = (ci or {}).get(key)
    return _fmt(metrics.get(key)), _band(band, (ci or {}).get("level"))


def _summary(metrics: dict[str, Any]) -> str:
    ci = metrics.get("ci") or {}
    op = metrics.get("operating_point")
    cards = []
    for key, label in (
        ("roc_auc", "ROC AUC"),
        ("accuracy", "Accuracy"),
        ("balanced_accuracy", "Balanced accuracy"),
    ):
        v, c = _with_ci(metrics, key, ci)
        cards.append((label, v, c))
    if op:
        op_ci = op.get("ci") or {}
        for key in ("sensitivity", "specificity"):
            c = _band(op_ci.get(key), ci.get("level"))
            cards.append((f"{key.capitalize()} @ t={op['threshold']:.3f}", _fmt(op.get(key)), c))
    else:
        for key in ("sensitivity", "specificity"):
            v, c = _with_ci(metrics, key, ci)
            cards.append((f"{key.capitalize()} (argmax)", v, c))
    html_cards = "".join(
        f'<div class="card"><div>{_e(label)}</div><div class="v">{_e(v)}</div>'
        f'<div class="ci">{_e(c)}</div></div>'
        for label, v, c in cards
    )
    counts = metrics.get("counts") or {}
    neg = (metrics.get("negative_class") or {}).get("name")
    notes = [
        (
            f"Test images: {_fmt(counts.get('n'))} ({_fmt(counts.get('n_positive'))} disease, "
            f"{_fmt(counts.get('n_negative'))} negative; negative class: {neg})."
        ),
    ]
    if op:
        notes.append(
            "The operating point was chosen on validation data for the target sensitivity "
            "and applied unchanged to the test set."
        )
    und = metrics.get("undefined") or {}
    if und:
        notes.append("Undefined: " + "; ".join(f"{k}: {v}" for k, v in und.items()))
    return f'<div class="cards">{html_cards}</div>' + "".join(f"<p>{_e(n)}</p>" for n in notes)


def _roc_section(metrics: dict[str, Any]) -> str:
    op = metrics.get("operating_point")
    parts = [
        _img(
            figures.roc_png(
                metrics.get("roc_curve"), auc=metrics.get("roc_auc_disease"), operating_point=op
            ),
            "ROC curve",
        ),
        _img(figures.pr_png(metrics.get("pr_curve"), ap=metrics.get("pr_auc")), "PR curve"),
    ]
    if op:
        rows = [
            {k: op.get(k) for k in ("threshold", "sensitivity", "specificity", "ppv", "npv", "f1")}
        ]
        parts.append(_table(rows))
        cm = op["confusion_matrix"]["matrix"]
        parts.append(
            _table(
                [
                    {"true \\ predicted": "negative", "negative": cm[0][0], "disease": cm[0][1]},
                    {"true \\ predicted": "disease", "negative": cm[1][0], "disease": cm[1][1]},
                ]
            )
        )
    return "".join(parts)


def _calibration_section(metrics: dict[str, Any]) -> str:
    cal = metrics.get("calibration") or {}
    png = figures.reliability_png(
        cal.get("reliability"),
        cal.get("reliability_after_temperature"),
        ece=cal.get("ece"),
        ece_after=cal.get("ece_after_temperature"),
    )
    rows = {
        k: cal.get(k)
        for k in ("ece", "temperature", "ece_after_temperature", "nll", "nll_after_temperature")
        if k in cal
    }
    return _img(png, "Reliability diagram") + _kv_table(rows)


def _patient_section(patient_table: list[dict[str, Any]] | None, metrics: dict[str, Any]) -> str:
    pl = metrics.get("patient_level") or {}
    rows = patient_table if patient_table is not None else pl.get("table")
    if not rows:
        return '<p class="muted">No patient identifiers: per-patient results not available.</p>'
    summary = {
        k: pl.get(k)
        for k in ("n_patients", "sensitivity", "specificity", "balanced_accuracy", "roc_auc")
        if k in pl
    }
    rules = pl.get("rules")
    head = _kv_table(summary) if summary else ""
    if rules:
        head += f'<p class="muted">Rules: {_e(json.dumps(rules))}</p>'
    shown = rows[:_MAX_PATIENT_ROWS]
    more = (
        f'<p class="muted">Showing {len(shown)} of {len(rows)} patients.</p>'
        if len(rows) > len(shown)
        else ""
    )
    return (
        head + _table(shown, row_class=lambda r: "bad" if r.get("correct") is False else "") + more
    )


def _model_card_html(card: dict[str, Any], metrics: dict[str, Any]) -> str:
    parts = [f'<div class="warn">{_e(NOT_FOR_CLINICAL_USE)}</div>']
    seen = set()
    for key, label in _CARD_ORDER + tuple((k, k.replace("_", " ").capitalize()) for k in card):
        if key in seen or key not in card:
            continue
        seen.add(key)
        value = card[key]
        if isinstance(value, (list, tuple)):
            body = "<ul>" + "".join(f"<li>{_e(v)}</li>" for v in value) + "</ul>"
        elif isinstance(value, dict):
            body = _kv_table(value)
        else:
            body = f"<p>{_e(value)}</p>"
        parts.append(f"<h3>{_e(label)}</h3>{body}")
    headline = {
        k: metrics.get(k)
        for k in ("roc_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity")
    }
    parts.append("<h3>Metrics (test set)</h3>" + _kv_table(headline))
    return "".join(parts)


def write_report(
    run_dir_or_path: str | os.PathLike[str],
    *,
    title: str,
    data_summary: dict[str, Any],
    split_table: dict[str, Any],
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    patient_table: list[dict[str, Any]] | None,
    samples: list[tuple[np.ndarray, str]],
    model_card: dict[str, Any],
    extra_sections: list[tuple[str, str]] | None = None,
) -> Path:
    """Write ``report.html`` (into a run folder, or to the given ``.html`` path) atomically.

    ``metrics`` is the dict from :func:`medlens.evaluate.metrics.classification_metrics`.
    ``samples`` are (HWC uint8 image, caption) pairs, e.g. correct and incorrect test
    predictions. Returns the path written.
    """
    target = Path(run_dir_or_path)
    if target.suffix.lower() not in (".html", ".htm"):
        target = target / "report.html"
    cm = metrics.get("confusion_matrix") or {}
    per_class_cols = ["class", "support", "precision", "recall", "specificity", "f1", "roc_auc"]
    bodies = [
        _summary(metrics),
        _kv_table(data_summary),
        _split_table(split_table),
        _img(figures.training_curves_png(history), "Training curves"),
        _roc_section(metrics),
        _img(figures.confusion_png(cm["matrix"], cm["labels"]), "Confusion matrix")
        if cm.get("matrix")
        else '<p class="muted">Not available.</p>',
        _calibration_section(metrics),
        _table(metrics.get("per_class") or [], per_class_cols),
        _patient_section(patient_table, metrics),
        _img(figures.image_grid_png(samples), "Sample predictions"),
        _model_card_html(model_card or {}, metrics),
    ]
    sections = list(zip(SECTIONS, bodies)) + [
        (str(t), str(body)) for t, body in (extra_sections or [])
    ]
    anchors = [f"s{i}" for i in range(len(sections))]
    nav = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, (t, _) in zip(anchors, sections))
    content = "".join(
        f'<section id="{a}"><h2>{_e(t)}</h2>{body}</section>'
        for a, (t, body) in zip(anchors, sections)
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f'<h1>{_e(title)}</h1><div class="warn">{_e(NOT_FOR_CLINICAL_USE)}</div>'
        f"<nav>{nav}</nav>{content}</main></body></html>\n"
    )
    return atomic_write_text(target, page)


def select_samples(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    *,
    n_correct: int = 6,
    n_incorrect: int = 6,
    seed: int = 0,
) -> list[tuple[int, str]]:
    """Indices and captions of sample predictions for the report's image grid.

    Correct ones are drawn at random (seeded); incorrect ones are the most confident
    mistakes, the most instructive to look at. Read the images of the returned indices
    and pass ``(image, caption)`` pairs to :func:`write_report` as ``samples``.
    """
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    pred, conf = p.argmax(axis=1), p.max(axis=1)
    right, wrong = np.flatnonzero(pred == y), np.flatnonzero(pred != y)
    rng = np.random.default_rng(seed)
    picked_right = rng.permutation(right)[: max(0, int(n_correct))]
    picked_wrong = wrong[np.argsort(-conf[wrong], kind="stable")][: max(0, int(n_incorrect))]
    out = []
    for tag, idx in (("OK", picked_right), ("WRONG", picked_wrong)):
        for i in idx:
            caption = f"{tag} true {classes[y[i]]} / pred {classes[pred[i]]} {conf[i]:.2f}"
            out.append((int(i), caption))
    return out
