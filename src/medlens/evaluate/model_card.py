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


def model_card_markdown(model_card: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The model card as Markdown (for the exported model package)."""
    card = model_card or {}
    lines = [
        f"# Model card: {card.get('name', 'medlens model')}",
        "",
        f"> **{NOT_FOR_CLINICAL_USE}**",
        "",
    ]
    seen = {"name"}
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
    lines += ["## Metrics (test set)", "", "| metric | value | 95% CI |", "|---|---|---|"]
    for key in ("roc_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity"):
        band = ci.get(key) if isinstance(ci, dict) else None
        rng = f"{band['low']:.3f}–{band['high']:.3f}" if band else ""
        lines.append(f"| {key} | {fmt_value(metrics.get(key))} | {rng} |")
    op = metrics.get("operating_point")
    if op:
        lines += [
            "",
            (
                f"Operating point (chosen on validation data): threshold {op['threshold']:.4f}, "
                f"sensitivity {fmt_value(op.get('sensitivity'))}, "
                f"specificity {fmt_value(op.get('specificity'))}."
            ),
        ]
    return "\n".join(lines) + "\n"
