"""Bias probes of a bag-level (patient) model: each probe perturbs a patient's cells, all at
once and one at a time, and the change of the patient's disease score is reported.

The perturbations themselves are the image probes' (:data:`medlens.explain.probes.PROBES`);
a task's predictor opts in by offering :class:`BagProbeTarget`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medlens.explain.probes import (
    PROBES,
    ProbeBag,
    ProbeContext,
    canonical_probe,
    describe_probe,
    foreground,
    probe_scores,
    save_example,
)

__all__ = ["BAG_PROBES", "BagProbeTarget", "ProbeBag", "bag_probe_target", "probe_bag_files", "probe_bags"]

#: a bag-level (patient) model's probes: no CAM per cell, so the hidden region is the cell itself
BAG_PROBES = (
    "hide-cell",
    "replace-background",
    "isolate-object",
    "random-shapes",
    "blur",
    "colour-shift",
    "equalize",
)


@runtime_checkable
class BagProbeTarget(Protocol):
    """What a task's predictor offers when its answer belongs to a bag of images (a patient's
    cells) rather than to each image: the probes then perturb cells and watch the patient score.

    ``embed_cells`` and ``bag_probabilities`` are split so that a cell perturbed on its own costs
    one encoder pass, not one pass of the whole bag.
    """

    classes: list[str]
    negative_class: int
    threshold: float | None

    def probe_bags(self, data: str | Path, *, split: str = "test", max_bags: int = 64,
                   seed: int = 0) -> tuple[list[ProbeBag], str]:
        """The bags of ``split`` in ``data`` and a line saying where they come from."""

    def embed_cells(self, cells: np.ndarray) -> Any:
        """Cells ``(n, C, S, S)`` in [0, 1] → per-cell features (rows indexable and replaceable)."""

    def bag_probabilities(self, features: Any) -> np.ndarray:
        """One bag's features → class probabilities ``(K,)``."""


def bag_probe_target(pkg: Any) -> BagProbeTarget | None:
    """The package's predictor when its task answers per bag (patient), else ``None``."""
    predictor = getattr(pkg, "predictor", None)
    return predictor if isinstance(predictor, BagProbeTarget) else None


def probe_bags(
    target: BagProbeTarget,
    bags: Sequence[ProbeBag],
    *,
    probes: Sequence[str] = BAG_PROBES,
    seed: int = 0,
    n_examples: int = 3,
    example_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Bias probes on a bag-level model: each probe is applied to every cell of a patient's bag
    at once, and to each cell on its own, and the change of the patient's disease score
    (1 − probability of the negative class) is reported.

    A patient's decision is the package's (score ≥ threshold; the most probable class without
    one). Per probe the result holds the classify keys (``flip_rate``, ``mean_abs_dprob``,
    ``per_class``, ``examples``: here per patient, Δ of the disease score) plus
    ``max_abs_dscore``, ``flips``, ``per_cell`` (one cell at a time: mean and max |Δ score| over
    patients, patients flipped by one cell) and ``per_patient`` rows.
    """
    if not bags:
        raise ValueError("no bags to probe")
    names = [canonical_probe(p) for p in probes]
    classes, neg, thr = list(target.classes), int(target.negative_class), target.threshold
    label = (lambda c: classes[c]) if classes else (lambda c: str(c))

    def decide(p: np.ndarray) -> int:
        if thr is None:
            return int(p.argmax())
        masked = p.copy()
        masked[neg] = -np.inf
        return int(masked.argmax()) if 1.0 - p[neg] >= thr else neg

    feats0 = [target.embed_cells(b.cells) for b in bags]
    p0 = [target.bag_probabilities(f) for f in feats0]
    score0 = np.array([1.0 - p[neg] for p in p0])
    call0 = np.array([decide(p) for p in p0])
    known = all(b.label is not None for b in bags)
    groups = np.array([b.label for b in bags]) if known else call0
    truth = groups if known else None
    result: dict[str, Any] = {
        "unit": "patient",
        "n_images": int(sum(len(b.cells) for b in bags)),
        "n_patients": len(bags),
        "score": f"disease score: 1 − p({label(neg)})",
        "threshold": thr,
        "scale": "cells in [0, 1] as decoded (the package's normalisation applied after the probe)",
        "probes": {},
    }
    for name in names:
        rng = np.random.default_rng(seed)
        fn = PROBES.get(name)
        score1, call1, rows, cell_best = [], [], [], []
        for i, b in enumerate(bags):
            pert = np.stack([fn(c, ProbeContext(rng, foreground(c))) for c in b.cells]).astype(np.float32)
            f1 = target.embed_cells(pert)
            p1 = target.bag_probabilities(f1)
            # one cell at a time: the bag's features with only row j replaced
            one = []
            for j in range(len(b.cells)):
                f = feats0[i].clone() if hasattr(feats0[i], "clone") else np.array(feats0[i], copy=True)
                f[j] = f1[j]
                one.append(target.bag_probabilities(f))
            d_cell = np.array([(1.0 - p[neg]) - score0[i] for p in one])
            flips_one = int(sum(decide(p) != call0[i] for p in one))
            top = int(np.argmax(np.abs(d_cell)))
            score1.append(1.0 - p1[neg])
            call1.append(decide(p1))
            cell_best.append((float(abs(d_cell[top])), i, top, pert[top]))
            rows.append({
                "patient": b.patient, "cells": len(b.cells),
                **({"diagnosis": label(int(b.label))} if b.label is not None else {}),
                "score_before": float(score0[i]), "score_after": float(score1[-1]),
                "dscore": float(score1[-1] - score0[i]),
                "before": label(int(call0[i])), "after": label(call1[-1]), "flipped": bool(call1[-1] != call0[i]),
                "per_cell_dscore": [float(v) for v in d_cell],
                "per_cell_mean_abs_dscore": float(np.abs(d_cell).mean()),
                "per_cell_max_abs_dscore": float(np.abs(d_cell).max()),
                "top_cell": b.paths[top] if top < len(b.paths) else f"cell[{top}]",
                "cells_that_flip_alone": flips_one,
            })
        s1, c1 = np.array(score1), np.array(call1)
        flips = c1 != call0
        dscore = np.abs(s1 - score0)
        per_class = {
            label(int(c)): {
                "n": int((groups == c).sum()),
                "flip_rate": float(flips[groups == c].mean()),
                "mean_abs_dprob": float(dscore[groups == c].mean()),
                **probe_scores(groups == c, score0, s1, call0, c1, truth),
            }
            for c in np.unique(groups)
        }
        examples = []
        for dval, i, j, after in sorted(cell_best, key=lambda t: -t[0])[:n_examples]:
            ex = {"index": int(i), "patient": bags[i].patient, "cell": int(j),
                  "input": bags[i].paths[j] if j < len(bags[i].paths) else f"cell[{j}]",
                  "before": label(int(call0[i])), "after": rows[i]["after"], "abs_dprob": dval}
            if example_dir is not None:
                ex["image"] = str(save_example(Path(example_dir) / f"{name}_p{i}_c{j}.png", bags[i].cells[j], after))
            examples.append(ex)
        cell_mean = np.array([r["per_cell_mean_abs_dscore"] for r in rows])
        cell_max = np.array([r["per_cell_max_abs_dscore"] for r in rows])
        result["probes"][name] = {
            "description": describe_probe(fn),
            "flip_rate": float(flips.mean()),
            "flips": int(flips.sum()),
            "mean_abs_dprob": float(dscore.mean()),
            "max_abs_dscore": float(dscore.max()),
            "mean_dscore": float((s1 - score0).mean()),
            **probe_scores(np.ones(len(flips), bool), score0, s1, call0, c1, truth),
            "per_cell": {
                "mean_abs_dscore": float(cell_mean.mean()),
                "max_abs_dscore": float(cell_max.max()),
                "patients_flipped_by_one_cell": int(sum(r["cells_that_flip_alone"] > 0 for r in rows)),
            },
            "per_class": per_class,
            "per_patient": rows,
            "examples": examples,
        }
    return result


def probe_bag_files(
    target: BagProbeTarget,
    data: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] = "probes",
    max_bags: int = 64,
    seed: int = 0,
    split: str = "test",
    probes: Sequence[str] = BAG_PROBES,
) -> dict[str, Any]:
    """:func:`probe_bags` on the bags of ``split`` of ``data``; writes ``probes.json``,
    ``probes.html`` and example PNGs (original | perturbed cell) into ``out_dir``."""
    from medlens.explain.probe_page import write_probe_page
    from medlens.io.atomic import atomic_write_json

    bags, chosen = target.probe_bags(data, split=split, max_bags=max_bags, seed=seed)
    out = Path(out_dir)
    result = probe_bags(target, bags, probes=probes, seed=seed, example_dir=out / "examples")
    result["grouped_by"] = "diagnosis" if all(b.label is not None for b in bags) else "original decision"
    result["data"] = str(data)
    result["images_from"] = chosen
    atomic_write_json(out / "probes.json", result)
    write_probe_page(out / "probes.html", result, title=f"Bias probes (per patient) — {Path(str(data)).name}")
    return result
