"""Run report: gathers a run's artefacts into the HTML report and the model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.cache import ImageCache
from medlens.data.records import DatasetIndex, Problem
from medlens.pipelines.config import RunConfig

INTENDED_USE = ("Research and teaching: screening-style triage experiments on images like the training data. "
                "Not a medical device.")


def model_card(cfg: RunConfig, index: DatasetIndex, metrics: dict[str, Any]) -> dict[str, Any]:
    from medlens.evaluate.model_card import model_card_markdown, operating_point_text

    card = {
        "model": cfg.model.name if cfg.ensemble == 1 else (
            f"{cfg.model.name} × {cfg.ensemble}, probabilities averaged ("
            + ("cross-validation ensemble: member k validated on fold k of the training and validation "
               "patients; the temperature and the operating point chosen on the members' out-of-fold "
               "predictions, the temperature applied to each member before the average)"
               if cfg.ensemble_by == "folds" else "members from seeds seed, seed+1, …)")),
        "task": "image classification",
        "classes": list(index.classes),
        "intended_use": INTENDED_USE,
        "data": f"{index.layout} layout at {cfg.data.path}: {len(index.records)} images"
                + (", patient ids known (patient-grouped split)" if index.has_patients else ""),
        "training": f"{cfg.train.epochs} epochs max, lr {cfg.train.lr}, batch {cfg.train.batch_size}, "
                    f"seed {cfg.train.seed}, input {cfg.preprocess.size}px×{cfg.preprocess.channels}",
        "operating_point": operating_point_text(metrics),
        "limitations": [
            "Evaluated on a single data source; performance on other scanners, stains or populations is unknown.",
            "Small test sets give wide confidence intervals; read the CIs, not only the point estimates.",
            "Synthetic or public benchmark data do not represent clinical prevalence.",
        ],
        "not_for_clinical_use": True,
    }
    card["markdown"] = model_card_markdown(card, metrics)
    return card


def summarize_data(index: DatasetIndex, cache: ImageCache, problems: list[Problem]) -> dict[str, Any]:
    """The report's data table: layout, counts of images, classes, patients and problems."""
    counts = index.class_counts()
    return {
        "layout": index.layout,
        "root": index.root,
        "images indexed": len(index.records),
        "images usable": len(cache.records),
        "classes": ", ".join(f"{c}: {n}" for c, n in counts.items()),
        "patients": len({r.patient for r in index.records if r.patient is not None}) or "unknown",
        "problems (files left out)": len([p for p in problems if p.severity == "error"]),
    }


def sample_images(cache: ImageCache, extras: dict[str, Any], classes: list[str], n: int) -> list[tuple[np.ndarray, str]]:
    """Up to ``n`` evaluated images (half of them errors if there are) with captions."""
    idx = np.flatnonzero(extras["eval_mask"])
    probs, y = extras["eval_probs"], extras["eval_labels"]
    pred = extras["eval_pred"] if "eval_pred" in extras else probs.argmax(1)  # the operating point's call
    neg = extras.get("negative_class")
    right, wrong = np.flatnonzero(pred == y), np.flatnonzero(pred != y)
    rng = np.random.default_rng(0)
    pick = list(rng.permutation(wrong)[: n // 2]) + list(rng.permutation(right)[: n - min(len(wrong), n // 2)])
    out = []
    for j in pick[:n]:
        img = cache.images[idx[j]].transpose(1, 2, 0)
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        ok = "✓" if pred[j] == y[j] else "✗"
        score = f"disease score {1 - probs[j, neg]:.2f}" if neg is not None else f"p {probs[j, pred[j]]:.2f}"
        out.append((img, f"{ok} true {classes[y[j]]} / pred {classes[pred[j]]} ({score})"))
    return out


def write_run_report(run_dir: Path, cfg: RunConfig, index: DatasetIndex, cache: ImageCache,
                     history: list[dict[str, Any]], metrics: dict[str, Any], extras: dict[str, Any],
                     card: dict[str, Any], audit: dict[str, Any] | None, problems: list[Problem],
                     extra_sections: list[tuple[str, str]] | None = None) -> Path:
    from medlens.data.splits import split_table
    from medlens.evaluate.report import write_report

    sections = list(extra_sections or [])
    if problems:
        import html

        rows = "".join(f"<tr><td>{html.escape(p.path)}</td><td>{html.escape(p.reason)}</td></tr>"
                       for p in problems[:200])
        sections.append(("Files left out", f"<table><tr><th>file</th><th>reason</th></tr>{rows}</table>"))
    patient = (metrics.get("patient_level") or {}).get("table") if metrics.get("patient_level") else None
    return write_report(
        run_dir, title=f"medlens — {Path(cfg.data.path).name} — {cfg.model.name}",
        data_summary=summarize_data(index, cache, problems),
        split_table=split_table(index.subset(cache.records)),
        history=history, metrics=metrics, patient_table=patient,
        samples=sample_images(cache, extras, index.classes, cfg.eval.samples_in_report),
        model_card=card, extra_sections=sections,
    )
