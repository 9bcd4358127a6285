"""What a patient-level run writes after training: patient metrics with patient bootstrap
CIs, per-patient rows (call, score, highest-attention cells), ``per_patient.csv`` and the
package (one stage ``mil``) with its metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from medlens.mil.bags import Bags, CellInput
from medlens.mil.config import PatientConfig

STAGE = "mil"  # the package's one stage: encoder + pooling + classifier


def patient_metrics(bags: Bags, probs: np.ndarray, classes: list[str], neg: int, threshold: float | None, *,
                    selection: dict[str, Any] | None = None, alternatives: list[dict[str, Any]] | None = None,
                    n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Patient-level metrics at the operating point; each patient is one item and one bootstrap unit."""
    from medlens.evaluate.metrics import classification_metrics, to_jsonable

    m = classification_metrics(bags.labels, probs, classes, negative_class=neg, threshold=threshold,
                               selection=selection, alternatives=alternatives, patients=list(bags.patients),
                               n_bootstrap=n_bootstrap, seed=seed)
    m.pop("patient_level", None)  # every item already is a patient
    m["unit"] = "patient"
    m["patient_ids"] = list(bags.patients)
    return to_jsonable(m)


def patient_rows(bags: Bags, probs: np.ndarray, att: list[np.ndarray], classes: list[str], neg: int,
                 threshold: float | None, *, top: int = 8) -> list[dict[str, Any]]:
    """Per patient: truth, call, disease score, and the highest-attention cells with their types."""
    from collections import Counter

    rows = []
    for i, pid in enumerate(bags.patients):
        p = probs[i]
        score = float(1.0 - p[neg])
        masked = p.copy()
        masked[neg] = -np.inf
        call = int(masked.argmax()) if threshold is not None and score >= threshold else (
            neg if threshold is not None else int(p.argmax()))
        order = np.argsort(-att[i], kind="stable")[:top]
        types, paths = bags.cell_types(i), bags.paths(i)
        top_cells = [{"path": paths[j], "attention": float(att[i][j]), "cell_type": types[j],
                      "row": int(bags.members[i][j])} for j in order]
        rows.append({"patient": pid, "label": classes[int(bags.labels[i])], "predicted": classes[call],
                     "disease_score": score, "correct": int(bags.labels[i]) == call, "cells": len(types),
                     "probabilities": {c: float(v) for c, v in zip(classes, p)}, "top_cells": top_cells,
                     "top_cell_types": dict(Counter(c["cell_type"] for c in top_cells).most_common()),
                     "cell_types": dict(Counter(types).most_common())})
    return rows


def write_per_patient(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    from medlens.io.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["patient", "label", "predicted", "disease_score", "cells", "top_cell_types", "top_cell"])
    for r in rows:
        mix = "; ".join(f"{k} {v}" for k, v in r["top_cell_types"].items())
        w.writerow([r["patient"], r["label"], r["predicted"], f"{r['disease_score']:.4f}", r["cells"], mix,
                    r["top_cells"][0]["path"] if r["top_cells"] else ""])
    atomic_write_text(path, buf.getvalue())


def package_metadata(cfg: PatientConfig, classes: list[str], neg: int, threshold: float, selection: dict[str, Any],
                     cell_input: CellInput, metrics: dict[str, Any]) -> dict[str, Any]:
    """``metadata.json`` of a patient package (what ``predict``/``evaluate`` need to feed cells)."""
    from medlens.transforms.preprocess import PreprocessConfig

    keys = ("roc_auc", "sensitivity", "specificity", "balanced_accuracy", "split", "best_epoch")
    return {"task": "patient", "classes": classes, "negative_class": neg, "threshold": float(threshold),
            "operating_point": {"threshold": float(threshold), "selection": selection},
            "input": {"size": cfg.size, "channels": 3, "spatial_dims": 2, "dtype": "uint8 scaled to [0, 1]",
                      "unit": "a bag: every cell image of one patient"},
            "preprocess": PreprocessConfig(size=cfg.size, channels=3).model_dump(),
            "normalize": cell_input.to_dict(), "pooling": cfg.pooling,
            "metrics": {k: metrics.get(k) for k in keys}, "config": cfg.model_dump(mode="json"),
            "data": {"path": cfg.data, "layout": cfg.layout}}


def save_package(out: Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """A pipeline package with the one stage ``mil`` (rebuilt lazily by the patient predictor)."""
    from medlens.package_io import Stage, save_pipeline_package

    kwargs = {k: v for k, v in model.medlens_config.items() if k != "name"}
    stage = Stage(model, "mil", kwargs, {"role": "patient diagnosis from a bag of cells",
                                         "classes": meta["classes"], "threshold": meta["threshold"],
                                         "input": meta["input"]})
    return save_pipeline_package(out, {STAGE: stage}, metadata=meta)

