"""The model card of a run: what the package ships as ``model_card.md`` and what the
HTML report shows in its "Model card" section (same fields, same order)."""

from __future__ import annotations

from typing import Any

import numpy as np

NOT_FOR_CLINICAL_USE = (
    "Not for clinical use. This model and report are research and education outputs; "
    "they have not been validated for diagnosis or treatment decisions."
)

CARD_ORDER = (
    ("name", "Model"),
    ("version", "Version"),
    ("intended_use", "Intended use"),
    ("out_of_scope", "Out-of-scope uses"),
    ("data", "Data"),
    ("training", "Training"),
    ("evaluation", "Evaluation"),
    ("limitations", "Limitations"),
    ("ethical_considerations", "Ethical considerations"),
)


def fmt_value(value: Any, digits: int = 3) -> str:
    """A metric value as text: ``n/a`` for missing/NaN, thousands separators for counts."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}" if np.isfinite(value) else "n/a"
    return str(value)


HEADLINE = (
    ("roc_auc", "ROC AUC"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("ppv", "PPV"),
    ("npv", "NPV"),
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
)
#: The headline of a run without a negative class (argmax): no disease-vs-negative rates exist.
ARGMAX_HEADLINE = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("roc_auc", "ROC AUC (macro one-vs-rest)"),
    ("pr_auc", "PR AUC (macro one-vs-rest)"),
)


def has_negative_class(metrics: dict[str, Any]) -> bool:
    """False for an argmax run (``negative_class.index`` is ``None``): no 2×2, no sensitivity."""
    neg = metrics.get("negative_class")
    return not (isinstance(neg, dict) and neg.get("index") is None)


def headline(metrics: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The ``(key, label)`` headline metrics of a run: :data:`HEADLINE`, or
    :data:`ARGMAX_HEADLINE` when it has no negative class."""
    return HEADLINE if has_negative_class(metrics) else ARGMAX_HEADLINE


def operating_point_text(metrics: dict[str, Any]) -> str:
    """One sentence: the call behind every thresholded number and how its threshold was chosen.

    The report summary, the model card and the CLI table all print this same sentence.
    """
    op = metrics.get("operating_point") or {}
    neg = (metrics.get("negative_class") or {}).get("name", "negative")
    multi = metrics.get("task") == "multiclass"
    if not has_negative_class(metrics):
        from medlens.evaluate.operating_point import ARGMAX_NOTE

        return (f"Operating point: {ARGMAX_NOTE.removeprefix('operating point: ')}. Each image gets its most "
                "probable class; there is no threshold and no disease-vs-negative sensitivity or specificity.")
    if op.get("threshold") is None and op.get("threshold_range") is None:
        return (
            "Operating point: none — no threshold; each image gets its most probable class "
            "(argmax)" + (" (a multi-class argmax run has no threshold)." if multi else ".")
        )
    if op.get("threshold") is not None:
        head = (
            f"Operating point: an image is called diseased when its disease score "
            f"(1 − p({neg})) is ≥ {op['threshold']:.4f}"
        )
    else:
        lo, hi = op["threshold_range"]
        head = (
            f"Operating point: each image is called diseased when its disease score "
            f"(1 − p({neg})) reaches its own fold's threshold ({lo:.4f}–{hi:.4f})"
        )
    if multi:
        head += "; a diseased image is given its most probable disease class"
    sel = op.get("selection") or {}
    how = f". Chosen by: {sel.get('rule', 'not recorded')}"
    there = [
        f"{name} {fmt_value(sel.get(key))}"
        for name, key in (
            ("sensitivity", "sensitivity_on_chosen_split"),
            ("specificity", "specificity_on_chosen_split"),
        )
        if sel.get(key) is not None
    ]
    if there:
        how += f" (there: {', '.join(there)})"
    if sel.get("warning"):
        how += f"; warning: {sel['warning']}"
    return head + how + "."


#: What a training run's metrics were computed on, by split.
EVALUATED = {
    "test": "Test images",
    "val": ("Validation images (no test split: the operating point was chosen on them, so its figures are "
            "optimistic)"),
    "out_of_fold": ("Out-of-fold images (no test split: every patient, each image scored by the ensemble member that "
                    "did not train on it; the operating point was chosen on these scores, so its figures are "
                    "optimistic — `medlens cv` gives held-out ones)"),
}


def evaluated_text(metrics: dict[str, Any]) -> str:
    """What the metrics were computed on: a training run's split (:data:`EVALUATED`), or the
    split of the data ``medlens evaluate`` was given (``metrics["data"]``), by name."""
    split = str(metrics.get("split") or "test")
    if "data" in metrics:
        return f"{split.capitalize()} images"
    return EVALUATED.get(split, f"{split.capitalize()} images")


def no_split_text(split: str, splits_file: object, what_to_do: str) -> str:
    """Why a run's own data has no images in ``split`` (appended to that error): a recipe's fold
    ensemble trains on every patient (``splits_file`` lists none held out), and ``what_to_do``."""
    return (f"; {splits_file} holds out no {split} split (a fold ensemble trains on every patient and its "
            f"report is out of fold): {what_to_do}")


def ci_text(metrics: dict[str, Any]) -> str:
    """How the confidence intervals were made: unit resampled, how many, how often."""
    ci = metrics.get("ci")
    if not ci:
        return "No confidence intervals (bootstrap disabled)."
    text = (
        f"{100 * float(ci.get('level', 0.95)):.0f}% CIs: {ci.get('method')}, "
        f"{ci.get('n_bootstrap')} resamples."
    )
    few = ci.get("not_estimable") or {}
    if few:
        text += " No interval for " + "; ".join(f"{k} ({why})" for k, why in few.items()) + "."
    return text


def model_card_markdown(model_card: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The model card as Markdown (for the exported model package)."""
    card = model_card or {}
    lines = [
        f"# Model card: {card.get('name', 'medlens model')}",
        "",
        f"> **{NOT_FOR_CLINICAL_USE}**",
        "",
    ]
    # printed once below (the banner, the operating-point sentence) or not card content
    seen = {"name", "not_for_clinical_use", "operating_point", "markdown"}
    for key, label in CARD_ORDER + tuple((k, k.replace("_", " ").capitalize()) for k in card):
        if key in seen or key not in card:
            continue
        seen.add(key)
        value = card[key]
        lines += [f"## {label}", ""]
        if isinstance(value, (list, tuple)):
            lines += [f"- {v}" for v in value]
        elif isinstance(value, dict):
            lines += [f"- **{k}**: {v}" for k, v in value.items()]
        else:
            lines.append(str(value))
        lines.append("")
    ci = metrics.get("ci") or {}
    lines += [
        "## Metrics (test set, at the operating point)",
        "",
        operating_point_text(metrics),
        "",
        "| metric | value | 95% CI |",
        "|---|---|---|",
    ]
    for key, label in headline(metrics):
        band = ci.get(key) if isinstance(ci, dict) else None
        rng = f"{band['low']:.3f}–{band['high']:.3f}" if band else ""
        lines.append(f"| {label} | {fmt_value(metrics.get(key))} | {rng} |")
    lines += ["", ci_text(metrics)]
    return "\n".join(lines) + "\n"
