"""``compare.html``: the leaderboard, the selected model with its rule, overlaid ROC curves
and the paired tests, in the look of every medlens page (:mod:`medlens.evaluate.page`)."""

from __future__ import annotations

import io
from typing import Any

from medlens.evaluate import page

_COLOURS = ("#1f5fa8", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#2c3e50")


def roc_overlay_png(result: dict[str, Any]) -> bytes | None:
    """Every model's ROC curve on one axis, each model's operating point marked (the
    selected model drawn thicker). ``None`` when there are no curves (one class only)."""
    curves = result.get("curves") or {}
    if not curves:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = {r["name"]: r for r in result["leaderboard"]}
    for i, (name, c) in enumerate(curves.items()):
        r, colour = rows[name], _COLOURS[i % len(_COLOURS)]
        auc = "n/a" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}"
        label = f"{name}"[:40].replace("$", r"\$") + f" (AUC {auc})" + (" — selected" if r["selected"] else "")
        ax.plot(c["fpr"], c["tpr"], color=colour, lw=2.6 if r["selected"] else 1.4, label=label)
        if r["sensitivity"] is not None and r["specificity"] is not None:
            ax.plot([1 - r["specificity"]], [r["sensitivity"]], "o", color=colour, ms=7, mec="black")
    ax.plot([0, 1], [0, 1], ls="--", color="#999999", lw=1)
    ax.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", xlim=(0, 1), ylim=(0, 1.01),
           title="ROC curves; dots: each model's operating point")
    ax.title.set_fontsize(9)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _ci(band: dict[str, float] | None) -> str:
    return "n/a" if not band else f"{band['low']:.3f}–{band['high']:.3f}"


def leaderboard_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model for the page (and the terminal): the numbers at its operating point."""
    level = f"{100 * float(result.get('ci_level') or 0.95):.0f}% CI"
    if result.get("note"):  # argmax packages (medlens.evaluate.compare_argmax): no disease-side columns
        return [{"model": r["name"] + (" ★" if r["selected"] else ""), "accuracy": r["accuracy"],
                 "balanced accuracy": r["balanced_accuracy"], "ROC-AUC (macro OvR)": r["roc_auc"], "ECE": r["ece"]}
                for r in result["leaderboard"]]
    out = []
    for r in result["leaderboard"]:
        out.append({"model": r["name"] + (" ★" if r["selected"] else ""), "ROC-AUC": r["roc_auc"],
                    level: _ci(r.get("roc_auc_ci")), "sensitivity": r["sensitivity"],
                    "specificity": r["specificity"], "FN": r["fn"], "FP": r["fp"],
                    "balanced accuracy": r["balanced_accuracy"], "ECE": r["ece"], "threshold": r["threshold"]})
    return out


def paired_test_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The paired tests of each model against the selected one."""
    rows = []
    for r in result["leaderboard"]:
        vs = r.get("vs_selected")
        if not vs:
            continue
        d, m = vs.get("delong") or {}, vs["mcnemar"]
        rows.append({"model": r["name"], "AUC difference": d.get("difference"),
                     "difference CI (bootstrap)": _ci(vs.get("auc_difference_ci")), "DeLong z": d.get("z"),
                     "DeLong p": d.get("p_value"), "only this model right": m["b"],
                     "only the selected right": m["c"], "McNemar p (exact)": m["p_exact"],
                     "McNemar p (mid-p)": m["p_mid"]})
    return rows


def compare_html(result: dict[str, Any]) -> str:
    """The whole page as a string (self-contained: inline CSS, the figure as a data URI)."""
    e = page.e
    intro = (f"<p><b>Selected: {e(result['selected'])}</b> — rule <code>{e(result['rule'])}</code>: "
             f"{e(result['selected_because'])}.</p>"
             f"<p class=\"muted\">{e(result.get('n_cases'))} {e(result.get('unit'))}s of {e(result.get('data'))} "
             f"(split {e(result.get('split'))}"
             + (f", as in {e(result['splits_from'])}" if result.get("splits_from") else "")
             + (f"): {e(result['note'])}" if result.get("note") else
                f"): {e(result.get('n_positive'))} disease, {e(result.get('n_negative'))} negative")
             + (f", {e(result['n_patients'])} patients" if result.get("n_patients") else "") + ".</p>")
    how = (result.get("bootstrap") or {}).get("method", "no bootstrap")
    sections = [
        ("Leaderboard", page.table(leaderboard_rows(result))
         + f"<p class=\"muted\">Every number at the model's own packaged operating point (not re-tuned here). "
           f"AUC intervals: {e(how)}. ★ selected.</p>"),
        ("ROC curves", page.figure(roc_overlay_png(result), "ROC curves of every model on the same cases")),
        ("Paired tests against the selected model", page.table(paired_test_rows(result))
         + "<p class=\"muted\">" + e(result["definitions"]["delong"]) + ". " + e(result["definitions"]["mcnemar"])
         + ".</p>"),
        ("Warnings", "".join(f"<p>{e(w)}</p>" for w in result.get("warnings") or []) or "<p>None.</p>"),
    ]
    return page.page("medlens model comparison", sections, intro=intro)
