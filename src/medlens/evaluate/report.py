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

from medlens.evaluate import figures, page
from medlens.evaluate.model_card import CARD_ORDER as _CARD_ORDER
from medlens.evaluate.model_card import (
    NOT_FOR_CLINICAL_USE,
    ci_text,
    evaluated_text,
    has_negative_class,
    headline,
    operating_point_text,
)
from medlens.evaluate.model_card import fmt_value as _fmt
from medlens.evaluate.operating_point import ARGMAX_NOTE
from medlens.io.atomic import atomic_write_text

SECTIONS = (
    "Summary",
    "Data summary",
    "Splits",
    "Training curves",
    "ROC curve and operating point",
    "Alternative operating points",
    "Confusion matrix",
    "Calibration",
    "Per-class metrics",
    "Per-patient results",
    "Sample predictions",
    "Model card",
)
_MAX_PATIENT_ROWS = 500

_CSS = page.CSS  # one look for every medlens page (evaluate/page.py)


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


def _at_op(text: str) -> str:
    return f'<p class="muted">{_e(text)}</p>'


_AT_OP = "At the operating point stated in the summary."


def _summary(metrics: dict[str, Any]) -> str:
    """Headline numbers, all at the one operating point, which is stated with its threshold."""
    ci = metrics.get("ci") or {}
    cards = []
    for key, label in headline(metrics):
        v, c = _with_ci(metrics, key, ci)
        cards.append((label, v, c))
    html_cards = "".join(
        f'<div class="card"><div>{_e(label)}</div><div class="v">{_e(v)}</div>'
        f'<div class="ci">{_e(c)}</div></div>'
        for label, v, c in cards
    )
    counts = metrics.get("counts") or {}
    neg = (metrics.get("negative_class") or {}).get("name")
    notes = [
        (
            f"{evaluated_text(metrics)}: {_fmt(counts.get('n'))} ({_fmt(counts.get('n_positive'))} disease, "
            f"{_fmt(counts.get('n_negative'))} negative; negative class: {neg})."
        ),
        ci_text(metrics),
        "Every sensitivity, specificity, PPV, NPV, accuracy and confusion count in this report "
        "(summary, ROC section, confusion matrix, per-class table, per-patient results, model card) "
        "is at this one operating point; other thresholds appear only under "
        "\u201cAlternative operating points\u201d.",
    ]
    if not has_negative_class(metrics):
        per = ", ".join(f"{c} {_fmt(m)}" for c, m in zip(metrics.get("classes") or [], counts.get("per_class") or []))
        notes[0] = f"{evaluated_text(metrics)}: {_fmt(counts.get('n'))} ({per}); {ARGMAX_NOTE}."
        notes[2] = ("Every accuracy, confusion count and per-class number in this report is at this one call "
                    "(the most probable class); per-class recall and specificity are one-vs-rest.")
    und = {k: v for k, v in (metrics.get("undefined") or {}).items()
           if has_negative_class(metrics) or not str(v).startswith("no negative class")}  # argmax: said above
    if und:
        notes.append("Undefined: " + "; ".join(f"{k}: {v}" for k, v in und.items()))
    statement = f'<p id="operating-point"><strong>{_e(operating_point_text(metrics))}</strong></p>'
    return (
        statement
        + f'<div class="cards">{html_cards}</div>'
        + "".join(f"<p>{_e(n)}</p>" for n in notes)
    )


def _roc_section(metrics: dict[str, Any]) -> str:
    if not has_negative_class(metrics):  # no disease side: no disease ROC, no 2×2
        return _at_op(f"No disease-vs-negative ROC curve or 2×2 table: {ARGMAX_NOTE}. The macro one-vs-rest "
                      "ROC AUC is in the summary; see the K×K confusion matrix and the per-class table.")
    op = metrics.get("operating_point")
    # a point on the curve only for one threshold (per-fold thresholds or argmax: no single point)
    marked = op if op and op.get("threshold") is not None else None
    parts = [
        _img(
            figures.roc_png(
                metrics.get("roc_curve"), auc=metrics.get("roc_auc_disease"), operating_point=marked
            ),
            "ROC curve",
        ),
        _img(figures.pr_png(metrics.get("pr_curve"), ap=metrics.get("pr_auc")), "PR curve"),
    ]
    if op:
        parts.append(_at_op(_AT_OP + " Disease (any non-negative class) against negative."))
        cols = ("threshold", "sensitivity", "specificity", "ppv", "npv", "f1")
        parts.append(_table([{k: op.get(k) for k in cols}]))
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


def _alternatives_section(metrics: dict[str, Any]) -> str:
    """The only place other thresholds appear: labelled as alternatives, not what is used."""
    alt = metrics.get("alternative_operating_points") or {}
    rows = alt.get("rows") or []
    if not has_negative_class(metrics):
        return _at_op(f"None: an argmax run has no threshold to move ({ARGMAX_NOTE}).")
    if not rows:
        return '<p class="muted">Not available for this run.</p>'
    table = [
        {
            "alternative": r.get("name"),
            "threshold": r.get("threshold"),
            "chosen on": r.get("chosen_on") or "not chosen on data",
            "validation sensitivity": r.get("chosen_split_sensitivity"),
            "test sensitivity": r.get("sensitivity"),
            "test specificity": r.get("specificity"),
            "test PPV": r.get("ppv"),
            "test NPV": r.get("npv"),
            "test balanced accuracy": r.get("balanced_accuracy"),
            "note": "= the operating point" if r.get("same_as_operating_point") else "",
        }
        for r in rows
    ]
    note = alt.get("note") or ""
    return f"<p><strong>{_e(note)}</strong></p>" + _table(table)


def _confusion_section(metrics: dict[str, Any]) -> str:
    """The K×K confusion matrix at the operating point; its counts as a table too for an
    argmax run, where it is the only confusion matrix the report has."""
    cm = metrics.get("confusion_matrix") or {}
    if not cm.get("matrix"):
        return '<p class="muted">Not available.</p>'
    body = _at_op(_AT_OP) + _img(figures.confusion_png(cm["matrix"], cm["labels"]), "Confusion matrix")
    if not has_negative_class(metrics):
        rows = [{"true \\ predicted": t, **dict(zip(cm["labels"], row))} for t, row in zip(cm["labels"], cm["matrix"])]
        body += _table(rows, ["true \\ predicted", *cm["labels"]])
    return body


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
        for k in (
            "n_patients", "threshold", "sensitivity", "specificity", "ppv", "npv",
            "balanced_accuracy", "roc_auc",
        )
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
    # "markdown" is the same card as text (model_card.md), rendered here from its fields; the
    # banner and the operating-point sentence are printed once each, above and below
    seen = {"markdown", "not_for_clinical_use", "operating_point"}
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
    numbers = {label: metrics.get(key) for key, label in headline(metrics)}
    parts.append(
        "<h3>Metrics (test set, at the operating point)</h3>"
        + f"<p>{_e(operating_point_text(metrics))}</p>"
        + _kv_table(numbers)
    )
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
    per_class_cols = ["class", "support", "precision", "recall", "specificity", "f1", "roc_auc"]
    bodies = [
        _summary(metrics),
        _kv_table(data_summary),
        _split_table(split_table),
        _img(
            figures.training_curves_png(
                history,
                best_epoch=(metrics.get("training") or {}).get("best_epoch"),
                monitor=(metrics.get("training") or {}).get("monitor"),
            ),
            "Training curves",
        ),
        _roc_section(metrics),
        _alternatives_section(metrics),
        _confusion_section(metrics),
        _calibration_section(metrics),
        _at_op(_AT_OP) + _table(metrics.get("per_class") or [], per_class_cols),
        _patient_section(patient_table, metrics),
        _img(figures.image_grid_png(samples), "Sample predictions"),
        _model_card_html(model_card or {}, metrics),
    ]
    sections = list(zip(SECTIONS, bodies)) + [
        (str(t), str(body)) for t, body in (extra_sections or [])
    ]
    return atomic_write_text(target, page.page(title, sections))


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
