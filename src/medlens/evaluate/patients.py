"""Patient-level metrics: a diagnosis is made per patient, not per image patch.

Rules (stated in every result under ``"rules"``):

* Patient score = an aggregate of the patient's image disease scores
  (``1 - p(negative class)``): ``"mean"``, ``"max"`` or ``"topk"`` (mean of the k highest).
* Patient truth: ``"any"`` (default) — a patient is positive if ANY of their images is
  positive, the usual rule for "does this patient have disease"; ``"majority"`` — positive
  if more than half of the images are. For data labelled per patient (every image of a
  patient shares the label) both rules agree.
* A patient is predicted positive when the score is ``>= threshold``: the run's operating
  point (0.5 when there is none). With one threshold per image (pooled cross-validation)
  a patient is compared with the mean threshold of their images.
* Images with no patient id (``None`` or ``""``) are left out and counted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError
from medlens.evaluate.operating_point import binary_rates, check_inputs, disease_score
from medlens.options import look_up_option

AGGREGATES = ("mean", "max", "topk")
TRUTH_RULES = ("any", "majority")


def _natural_key(text: str) -> list[Any]:
    """Sort "p2" before "p10"."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


def _safe_auc(is_pos: np.ndarray, score: np.ndarray) -> tuple[float | None, str | None]:
    from sklearn.metrics import roc_auc_score

    if is_pos.all() or not is_pos.any():
        return None, "only one class present among patients"
    return float(roc_auc_score(is_pos, score)), None


def patient_metrics(
    y_true: Any,
    probs: Any,
    patients: Sequence[str | None],
    *,
    negative_class: int,
    aggregate: str = "mean",
    k: int = 5,
    threshold: Any = None,
    truth: str = "any",
) -> dict[str, Any]:
    """Aggregate image predictions per patient and score the patients.

    Args:
        y_true: (N,) class indices.
        probs: (N, K) probabilities.
        patients: N patient ids (``None`` for unknown).
        negative_class: index of the healthy/normal class.
        aggregate: ``"mean"``, ``"max"`` or ``"topk"`` (mean of the ``k`` largest scores).
        k: images used by ``"topk"``.
        threshold: disease-score threshold for the patient call (default 0.5), or one
            per image.
        truth: ``"any"`` or ``"majority"`` (see module docstring).

    Returns:
        JSON-ready dict: ``table`` (one row per patient: patient, n_images,
        n_positive_images, true, score, predicted, correct), ``n_patients``, counts,
        ``accuracy``, ``sensitivity``, ``specificity``, ``balanced_accuracy``, ``roc_auc``
        (``None`` when undefined; reasons in ``undefined``), and ``rules``.
    """
    aggregate = look_up_option(aggregate, AGGREGATES, what="patient aggregate")
    truth = look_up_option(truth, TRUTH_RULES, what="patient truth rule")
    if int(k) < 1:
        raise ConfigError(f"k must be >= 1 for topk aggregation, got {k}")
    y, p = check_inputs(y_true, probs, negative_class=negative_class)
    pats = list(patients)
    if len(pats) != len(y):
        raise BadInputError(f"patients has {len(pats)} entries but y_true has {len(y)}")
    thr_all = np.broadcast_to(np.asarray(0.5 if threshold is None else threshold, float), y.shape)
    known = np.array([q is not None and str(q) != "" for q in pats], dtype=bool)
    score_img = disease_score(p, negative_class)[known]
    thr_img = thr_all[known]
    pos_img = (y != negative_class)[known]
    ids = np.array([str(q) for q, ok in zip(pats, known) if ok], dtype=object)

    rows: list[dict[str, Any]] = []
    if ids.size:
        uniq, inv = np.unique(ids.astype(str), return_inverse=True)
        order = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
        for j, pid in enumerate(uniq):
            sel = order[bounds[j] : bounds[j + 1]]
            s = score_img[sel]
            if aggregate == "mean":
                agg = float(s.mean())
            elif aggregate == "max":
                agg = float(s.max())
            else:
                agg = float(np.sort(s)[::-1][: int(k)].mean())
            n_pos = int(pos_img[sel].sum())
            is_pos = n_pos > 0 if truth == "any" else n_pos * 2 > len(sel)
            pred = agg >= float(thr_img[sel].mean())
            rows.append(
                {
                    "patient": str(pid),
                    "n_images": len(sel),
                    "n_positive_images": n_pos,
                    "true": int(is_pos),
                    "score": agg,
                    "predicted": int(pred),
                    "correct": bool(pred == is_pos),
                }
            )

    rows.sort(key=lambda r: _natural_key(r["patient"]))
    truth_arr = np.array([r["true"] for r in rows], dtype=bool)
    pred_arr = np.array([r["predicted"] for r in rows], dtype=bool)
    score_arr = np.array([r["score"] for r in rows], dtype=np.float64)
    undefined: dict[str, str] = {}
    rates = binary_rates(truth_arr, pred_arr)
    if not rows:
        undefined["all"] = "no image has a patient id"
    if rates["sensitivity"] is None:
        undefined["sensitivity"] = "no positive patient"
    if rates["specificity"] is None:
        undefined["specificity"] = "no negative patient"
    bal = None
    if rates["sensitivity"] is not None and rates["specificity"] is not None:
        bal = (rates["sensitivity"] + rates["specificity"]) / 2
    else:
        undefined["balanced_accuracy"] = "needs positive and negative patients"
    auc, why = _safe_auc(truth_arr, score_arr) if rows else (None, "no patients")
    if why:
        undefined["roc_auc"] = why
    return {
        "n_patients": len(rows),
        "n_positive": int(np.sum(truth_arr)),
        "n_negative": int((~truth_arr).sum()),
        "n_images_without_patient": int((~known).sum()),
        "accuracy": float(np.mean(truth_arr == pred_arr)) if rows else None,
        "sensitivity": rates["sensitivity"],
        "specificity": rates["specificity"],
        "balanced_accuracy": bal,
        "ppv": rates["ppv"],
        "npv": rates["npv"],
        "roc_auc": auc,
        "confusion": {key: rates[key] for key in ("tp", "fn", "fp", "tn")},
        "threshold": float(thr_all[0]) if np.ndim(threshold) == 0 else None,
        "rules": {
            "aggregate": aggregate,
            "k": int(k) if aggregate == "topk" else None,
            "truth": truth,
            "score": "1 - p(negative class), aggregated per patient",
        },
        "undefined": undefined,
        "table": rows,
    }
