"""``probes.html``: the bias probes of ``medlens probe`` as a page a reader can judge.

Every probe gets a caption saying what it did to the images, the scores before and after
(mean probability of the originally predicted class; accuracy when labels are known), how
many images of each class it saw, and its largest changes as original | perturbed pictures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medlens.evaluate import page
from medlens.io.atomic import atomic_write_text


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * float(v):.0f} %"


def _arrow(entry: dict[str, Any], key: str, pct: bool = False) -> str:
    b, a = entry.get(f"{key}_before"), entry.get(f"{key}_after")
    if b is None or a is None:
        return "n/a"
    f = _pct if pct else (lambda v: f"{float(v):.3f}")
    return f"{f(b)} → {f(a)}"


def caption(name: str, entry: dict[str, Any]) -> str:
    """One line: probe, what it does, scores before → after, n per class."""
    per = entry.get("per_class") or {}
    counts = ", ".join(f"{c}: n = {v['n']}" for c, v in per.items())
    acc = f"; accuracy {_arrow(entry, 'accuracy', pct=True)}" if "accuracy_before" in entry else ""
    return (f"{name}: {entry.get('description', '')} Flip rate {_pct(entry['flip_rate'])}; "
            f"mean probability of the original answer {_arrow(entry, 'p')}{acc}; {counts}.")


def _bag_columns(entry: dict[str, Any]) -> dict[str, Any]:
    """A bag-level probe's extra summary columns: per-cell effects on the patient score."""
    cell = entry.get("per_cell")
    if not cell:
        return {}
    return {"max |Δ score|": entry.get("max_abs_dscore"), "flips": entry.get("flips"),
            "one cell: mean |Δ score|": cell["mean_abs_dscore"], "one cell: max |Δ score|": cell["max_abs_dscore"],
            "patients flipped by one cell": cell["patients_flipped_by_one_cell"]}


def _patient_table(entry: dict[str, Any]) -> str:
    rows = [
        {"patient": r["patient"], **({"diagnosis": r["diagnosis"]} if "diagnosis" in r else {}),
         "cells": r["cells"], "score before → after": f"{r['score_before']:.3f} → {r['score_after']:.3f}",
         "decision": f"{r['before']} → {r['after']}" + (" (flipped)" if r["flipped"] else ""),
         "one cell: mean |Δ|": r["per_cell_mean_abs_dscore"], "one cell: max |Δ|": r["per_cell_max_abs_dscore"],
         "cells that flip it alone": r["cells_that_flip_alone"], "most effective cell": Path(r["top_cell"]).name}
        for r in entry.get("per_patient") or []
    ]
    return "<h3>Per patient</h3>" + page.table(rows) if rows else ""


def _probe_section(name: str, entry: dict[str, Any]) -> str:
    rows = [
        {"class": c, "n": v["n"], "flip rate": _pct(v["flip_rate"]),
         "p before → after": _arrow(v, "p"),
         **({"accuracy before → after": _arrow(v, "accuracy", pct=True)} if "accuracy_before" in v else {}),
         ("mean |Δ score|" if "per_cell" in entry else "mean |Δp|"): v["mean_abs_dprob"]}
        for c, v in (entry.get("per_class") or {}).items()
    ]
    figs = []
    for ex in entry.get("examples") or []:
        png = Path(ex["image"]).read_bytes() if ex.get("image") and Path(ex["image"]).is_file() else None
        who = f"patient {ex['patient']}, " if "patient" in ex else ""
        delta = "|Δ patient score| with this cell alone perturbed" if "patient" in ex else "|Δp|"
        cap = (f"{who}{Path(str(ex.get('input', ex['index']))).name}: {ex['before']} → {ex['after']}, "
               f"{delta} {ex['abs_dprob']:.3f} (left original, right perturbed)")
        figs.append(page.figure(png, cap, width=256))
    return (f"<p>{page.e(caption(name, entry))}</p>" + page.table(rows) + _patient_table(entry)
            + (f"<h3>Largest changes</h3><div>{''.join(figs)}</div>" if figs else ""))


def write_probe_page(path: str | os.PathLike[str], result: dict[str, Any], *,
                     title: str = "Bias probes") -> Path:
    """Write the page for a :func:`medlens.explain.probes.probe` result (atomically)."""
    probes = result.get("probes") or {}
    summary = [
        {"probe": name, "what it does": entry.get("description", ""), "flip rate": _pct(entry["flip_rate"]),
         "p before → after": _arrow(entry, "p"),
         **({"accuracy before → after": _arrow(entry, "accuracy", pct=True)}
            if "accuracy_before" in entry else {}),
         ("mean |Δ score|" if "per_cell" in entry else "mean |Δp|"): entry["mean_abs_dprob"],
         **_bag_columns(entry)}
        for name, entry in probes.items()
    ]
    first = next(iter(probes.values()), {})
    per = ", ".join(f"{c}: {v['n']}" for c, v in (first.get("per_class") or {}).items())
    intro = (
        f"<p>{page.e(result.get('n_images'))} images of {page.e(result.get('data', 'the data'))}: "
        f"{page.e(result.get('images_from', ''))}. Per class by {page.e(result.get('grouped_by', ''))} "
        f"({page.e(per)}). Pixels: {page.e(result.get('scale', ''))}.</p>"
        "<p>A probe changes every image one way and asks the model again. The flip rate is the "
        "share of answers that change; p is the mean probability of the answer the model gave "
        "before the change. A model that flips when only the background or the stain changes, "
        "or keeps its answer when the region it relies on is hidden, may rely on a shortcut.</p>"
    )
    if "n_patients" in result:  # a bag-level (per patient) probe result
        intro = (
            f"<p>{page.e(result.get('n_patients'))} patients ({page.e(result.get('n_images'))} cells) of "
            f"{page.e(result.get('data', 'the data'))}: {page.e(result.get('images_from', ''))}. Per class by "
            f"{page.e(result.get('grouped_by', ''))} ({page.e(per)}). Score: {page.e(result.get('score', ''))}; "
            f"decision threshold {page.e(result.get('threshold'))}. Pixels: {page.e(result.get('scale', ''))}.</p>"
            "<p>The model answers per patient from a bag of cells. Each probe changes every cell of a "
            "patient's bag and asks again (flip rate: share of patients whose decision changes; |Δ score|: "
            "change of the patient's disease score), and changes each cell on its own with the rest of "
            "the bag untouched (one cell: the per-cell effect on the patient score). A diagnosis that "
            "moves when only the background or the stain changes, or stays when the cells are hidden, "
            "may rest on a shortcut such as the hospital the smear came from.</p>"
        )
    sections = [("Summary", page.table(summary))]
    sections += [(name, _probe_section(name, entry)) for name, entry in probes.items()]
    return atomic_write_text(path, page.page(title, sections, intro=intro))
