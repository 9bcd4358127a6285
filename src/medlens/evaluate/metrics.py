"""Classification metrics for ``metrics.json``: point estimates, bootstrap CIs, curves.

Definitions (also written into the result so a reader of ``metrics.json`` need not guess):

* ONE call per image, the operating point, is behind every thresholded number
  (accuracy, balanced accuracy, sensitivity, specificity, PPV, NPV, F1, confusion
  matrix, per-class table, CIs): with a ``threshold`` an image is called diseased when
  ``1 - p(negative) >= threshold`` and then gets its most probable disease class
  (:func:`~medlens.evaluate.operating_point.apply_threshold`); without one it gets its
  argmax class. ``operating_point`` says which call it is, how its threshold was chosen
  and the metrics at it. Other thresholds appear only in ``alternative_operating_points``.
* balanced accuracy is the mean per-class recall (scikit-learn's definition).
* sensitivity, specificity, PPV, NPV, F1 are "disease vs negative": truth is
  ``y != negative_class``, the call is ``predicted != negative_class``.
* ``roc_auc`` follows MedMNIST's ``getAUC``: binary → AUC of ``probs[:, 1]`` for
  ``y == 1``; multi-class → unweighted mean of one-vs-rest AUCs (classes absent from
  ``y_true`` are skipped and named in ``undefined``). ``roc_auc_disease`` is the AUC of
  the disease score (the curve plotted in the report; equal to ``roc_auc`` for binary).
* ``pr_auc`` is average precision: binary → of the disease score; multi-class → macro
  mean of one-vs-rest APs.
* Bootstrap CIs are percentile intervals, vectorised through per-resample multiplicity
  counts. With patient ids the patients are resampled (cluster bootstrap), stratified by
  whether a patient has disease images; without them the images, stratified by class.
  ``ci["unit"]`` and ``ci["n_units"]`` say which.

A metric that cannot be computed (e.g. AUC with one class present) is ``None`` and its
reason is given in ``result["undefined"]``; nothing crashes on such data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError
from medlens.evaluate.bootstrap import bootstrap_cis
from medlens.evaluate.operating_point import (
    ARGMAX_NOTE,
    alternative_points,
    binary_rates,
    check_inputs,
    disease_score,
    guess_negative_class,
    operating_call,
    two_by_two,
)

__all__ = ["classification_metrics", "guess_negative_class", "roc_auc_medmnist", "to_jsonable"]


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy types to Python ones and NaN/inf to ``None``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _auc(is_pos: np.ndarray, score: np.ndarray) -> tuple[float | None, str | None]:
    from sklearn.metrics import roc_auc_score

    if is_pos.all() or not is_pos.any():
        return None, "only one class present in y_true"
    return float(roc_auc_score(is_pos, score)), None


def _ap(is_pos: np.ndarray, score: np.ndarray) -> tuple[float | None, str | None]:
    from sklearn.metrics import average_precision_score

    if not is_pos.any():
        return None, "no positive case in y_true"
    return float(average_precision_score(is_pos, score)), None


def roc_auc_medmnist(y_true: Any, probs: Any) -> tuple[float | None, str | None]:
    """MedMNIST AUC: binary → AUC of ``probs[:, 1]``; multi-class → mean one-vs-rest AUC."""
    y, p = check_inputs(y_true, probs)
    if p.shape[1] == 2:
        return _auc(y == 1, p[:, 1])
    aucs, skipped = [], []
    for c in range(p.shape[1]):
        value, _ = _auc(y == c, p[:, c])
        (skipped.append(c) if value is None else aucs.append(value))
    if not aucs:
        return None, "no class has both positive and negative cases"
    why = f"classes {skipped} absent from y_true; mean over the others" if skipped else None
    return float(np.mean(aucs)), why


def _downsample(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))


def _curves(is_pos: np.ndarray, score: np.ndarray, max_points: int) -> dict[str, Any]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    if is_pos.all() or not is_pos.any():
        return {"roc_curve": None, "pr_curve": None}
    fpr, tpr, thr = roc_curve(is_pos, score)
    keep = _downsample(len(fpr), max_points)
    prec, rec, _ = precision_recall_curve(is_pos, score)
    keep_pr = _downsample(len(prec), max_points)
    return {
        "roc_curve": {"fpr": fpr[keep], "tpr": tpr[keep], "thresholds": thr[keep]},
        "pr_curve": {
            "precision": prec[keep_pr],
            "recall": rec[keep_pr],
            "prevalence": float(is_pos.mean()),
        },
    }


# ------------------------------------------------------------------------ main entry
def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Mean recall over the classes present in ``y`` (scikit-learn's definition)."""
    support = np.bincount(y, minlength=k)
    hits = np.bincount(y[pred == y], minlength=k)
    present = support > 0
    return float(np.mean(hits[present] / support[present]))


def _per_class(y: np.ndarray, p: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> list:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    k = p.shape[1]
    labels = list(range(k))
    prec, rec, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=np.nan
    )
    cm = confusion_matrix(y, pred, labels=labels)
    rows = []
    for c in labels:
        fp = cm[:, c].sum() - cm[c, c]
        tn = cm.sum() - cm[c, :].sum() - fp
        auc, _ = _auc(y == c, p[:, c])
        rows.append(
            {
                "class": str(classes[c]),
                "index": c,
                "precision": prec[c],
                "recall": rec[c],
                "specificity": tn / (tn + fp) if tn + fp else None,
                "f1": f1[c],
                "support": int(support[c]),
                "roc_auc": auc,
            }
        )
    return rows


_RATE_KEYS = ("sensitivity", "specificity", "ppv", "npv", "f1")
def classification_metrics(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    *,
    negative_class: int | None,
    threshold: float | Sequence[float] | np.ndarray | None = None,
    selection: dict[str, Any] | None = None,
    alternatives: list[dict[str, Any]] | None = None,
    patients: Sequence[str | None] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    stratified: bool = True,
    patient_aggregate: str = "mean",
    patient_k: int = 5,
    logits: Any = None,
    val_logits: Any = None,
    val_y: Any = None,
    max_curve_points: int = 200,
) -> dict[str, Any]:
    """All classification metrics of one split, JSON-serialisable.

    Args:
        y_true: (N,) int class indices.
        probs: (N, K) softmax probabilities, K == len(classes) >= 2.
        classes: class names.
        negative_class: index of the healthy/normal class (see
            :func:`~medlens.evaluate.operating_point.operating_negative_class`); ``None``
            (multi-class, no healthy class) → argmax call, and the disease-vs-negative
            numbers (sensitivity … F1, disease ROC/PR curves, patient level) are ``None``
            with the reason in ``undefined``; ``per_class`` has one-vs-rest recall and
            specificity.
        threshold: disease-score operating point chosen on validation data
            (:func:`medlens.evaluate.operating_point.choose_threshold`), or one per image
            (pooled cross-validation); ``None`` → the argmax call. Every thresholded
            metric is at this one call.
        selection: how the threshold was chosen
            (:func:`medlens.evaluate.operating_point.selection_record`), kept in
            ``operating_point["selection"]``.
        alternatives: rows from :func:`medlens.evaluate.operating_point.alternative_thresholds`
            → ``alternative_operating_points`` with test metrics at each (default: the 0.5
            call only); a row's threshold may be one per image (pooled cross-validation).
        patients: N patient ids (``None`` allowed) → adds ``patient_level`` and makes the
            bootstrap resample patients.
        n_bootstrap: resamples for CIs (0 disables them).
        seed, ci, stratified: bootstrap settings.
        patient_aggregate, patient_k: see :func:`medlens.evaluate.patients.patient_metrics`.
        logits, val_logits, val_y: test logits plus validation logits/labels → temperature
            scaling results in ``calibration``.
        max_curve_points: ROC/PR curves are down-sampled to at most this many points.
    """
    y, p = check_inputs(y_true, probs, negative_class=negative_class)
    classes = [str(c) for c in classes]
    n, k = p.shape
    if len(classes) != k:
        raise BadInputError(f"classes has {len(classes)} names but probs has {k} columns")
    if not 0.0 < float(ci) < 1.0:
        raise ConfigError(f"ci must be in (0, 1), got {ci}")
    if int(n_bootstrap) < 0:
        raise ConfigError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    from sklearn.metrics import confusion_matrix

    from medlens.evaluate.calibration import (
        calibration_summary,
        expected_calibration_error,
        reliability_curve,
    )

    if negative_class is None and threshold is not None:
        raise ConfigError("a threshold needs a negative class: pass --negative-class (the healthy class) "
                          "or use the argmax call (threshold None)")
    no_neg = negative_class is None
    neg = 0 if no_neg else int(negative_class)  # no_neg: only a placeholder, its numbers are dropped
    pred, call = operating_call(p, neg, threshold)
    is_pos = y != neg
    score = disease_score(p, neg)
    undefined: dict[str, str] = {}
    rates = binary_rates(is_pos, pred != neg)
    for key in _RATE_KEYS:
        if rates[key] is None:
            undefined[key] = "denominator is zero (no case of the needed kind)"
    auc, why = roc_auc_medmnist(y, p)
    if why:
        undefined["roc_auc"] = why
    auc_d, why_d = _auc(is_pos, score)
    if why_d:
        undefined["roc_auc_disease"] = why_d
    if no_neg:
        call["note"] = ARGMAX_NOTE
        why_none = "no negative class (argmax operating point); per_class has one-vs-rest recall and specificity"
        rates = {key: None for key in rates}
        auc_d = None
        undefined.update({key: why_none for key in (*_RATE_KEYS, "roc_auc_disease")})
    if k == 2:
        pr_auc, why_pr = _ap(is_pos, score)
    else:
        aps = [_ap(y == c, p[:, c])[0] for c in range(k)]
        aps = [a for a in aps if a is not None]
        pr_auc, why_pr = (float(np.mean(aps)), None) if aps else (None, "no class present")
    if why_pr:
        undefined["pr_auc"] = why_pr

    at_op = {
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": _balanced_accuracy(y, pred, k),
        **{key: rates[key] for key in _RATE_KEYS},
    }
    if selection is None:
        selection = (
            {"rule": "none: argmax call"}
            if threshold is None
            else {"rule": "given by the caller (how it was chosen is not recorded)"}
        )
    result: dict[str, Any] = {
        "task": "binary" if k == 2 else "multiclass",
        "classes": classes,
        "negative_class": {"index": None, "name": None, "note": ARGMAX_NOTE}
        if no_neg
        else {"index": neg, "name": classes[neg]},
        "counts": {
            "n": n,
            "per_class": np.bincount(y, minlength=k),
            "n_positive": None if no_neg else int(is_pos.sum()),
            "n_negative": None if no_neg else int((~is_pos).sum()),
        },
        **at_op,
        "roc_auc": auc,
        "roc_auc_disease": auc_d,
        "pr_auc": pr_auc,
        "definitions": {
            "operating_point": "accuracy, balanced_accuracy, sensitivity, specificity, ppv, npv, "
            "f1, confusion_matrix, per_class and their CIs are all at operating_point (one call)",
            "roc_auc": "MedMNIST: binary AUC of probs[:,1]; multi-class mean one-vs-rest AUC",
            "sensitivity": "disease (any non-negative class) vs negative class, at the operating point",
            "disease_score": "1 - p(negative class)",
            "pr_auc": "average precision (multi-class: macro one-vs-rest)",
        },
        "operating_point": {
            **call,
            "selection": selection,
            **at_op,
            "confusion_matrix": {**two_by_two({"tn": None, "fp": None, "fn": None, "tp": None}), "note": ARGMAX_NOTE}
            if no_neg
            else two_by_two(rates),
            "ci": None,
        },
        "confusion_matrix": {
            "labels": classes,
            "rows": "true",
            "columns": "predicted (at the operating point)",
            "matrix": confusion_matrix(y, pred, labels=list(range(k))),
        },
        "per_class": _per_class(y, p, pred, classes),
        "alternative_operating_points": {"note": ARGMAX_NOTE, "rows": []}
        if no_neg
        else alternative_points(is_pos, score, alternatives, threshold),
    }
    if n_bootstrap > 0:
        boot = bootstrap_cis(
            y,
            p,
            pred,
            None if no_neg else neg,
            clusters=patients,
            n_bootstrap=int(n_bootstrap),
            seed=int(seed),
            level=float(ci),
            stratified=stratified,
        )
        if no_neg:
            boot.update({key: None for key in _RATE_KEYS})
        result["operating_point"]["ci"] = {key: boot[key] for key in _RATE_KEYS}
        result["ci"] = boot
    else:
        result["ci"] = None
    result.update({"roc_curve": None, "pr_curve": None} if no_neg else _curves(is_pos, score, int(max_curve_points)))
    calib: dict[str, Any] = {
        "ece": expected_calibration_error(y, p),
        "reliability": reliability_curve(y, p),
    }
    if logits is not None and val_logits is not None and val_y is not None:
        calib.update(calibration_summary(val_logits, val_y, logits, y))
    result["calibration"] = calib
    if patients is not None and no_neg:
        result["patient_level"] = None
        undefined["patient_level"] = f"patient results are disease-vs-negative; {ARGMAX_NOTE}"
    elif patients is not None:
        from medlens.evaluate.patients import patient_metrics

        result["patient_level"] = patient_metrics(
            y,
            p,
            patients,
            negative_class=neg,
            aggregate=patient_aggregate,
            k=patient_k,
            threshold=threshold,
        )
    else:
        result["patient_level"] = None
    result["undefined"] = undefined
    return to_jsonable(result)
