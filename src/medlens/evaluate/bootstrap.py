"""Bootstrap confidence intervals of classification metrics, vectorised.

Each resample is a row of multiplicity weights over the evaluated items, so every metric
of a chunk of resamples is a matrix product; AUC uses a weighted Mann-Whitney count with
ties (:func:`weighted_auc`). See :mod:`medlens.evaluate.metrics` for the definitions.

The resampled unit is the patient when patient ids are known (a cluster bootstrap: all
images of a drawn patient enter together). Images of one patient are correlated — same
tissue, scanner, stain — so resampling images as if independent gives intervals that are
far too narrow (an AUC interval over 17 patients came out 0.686–0.712). Images without
a patient id are units of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medlens.errors import BadInputError


def weighted_auc(score: np.ndarray, is_pos: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC for each row of multiplicity weights ``w`` (B, N) — Mann-Whitney with ties."""
    sp, sn = score[is_pos], score[~is_pos]
    wp, wn = w[:, is_pos], w[:, ~is_pos]
    order = np.argsort(sn, kind="stable")
    sn_sorted = sn[order]
    cum = np.zeros((w.shape[0], len(sn) + 1))
    np.cumsum(wn[:, order], axis=1, out=cum[:, 1:])
    lo = np.searchsorted(sn_sorted, sp, side="left")
    hi = np.searchsorted(sn_sorted, sp, side="right")
    less = cum[:, lo]
    eq = cum[:, hi] - less
    num = np.sum(wp * (less + 0.5 * eq), axis=1)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def cluster_codes(clusters: Sequence[Any] | None, n: int) -> tuple[np.ndarray, int, str, int]:
    """Unit index per item, number of units, the unit's name (``patient`` / ``image``) and
    the number of items without a patient id.

    Items whose id is ``None`` or ``""`` become units of their own; with no id at all the
    unit is the image.
    """
    if clusters is None:
        return np.arange(n), n, "image", n
    ids = [None if c is None or str(c) == "" else str(c) for c in clusters]
    if len(ids) != n:
        raise BadInputError(f"patients has {len(ids)} entries but there are {n} items")
    if all(c is None for c in ids):
        return np.arange(n), n, "image", n
    codes: dict[str, int] = {}
    out = np.empty(n, dtype=np.int64)
    for j, c in enumerate(ids):
        key = f"\x00image{j}" if c is None else c
        out[j] = codes.setdefault(key, len(codes))
    return out, len(codes), "patient", sum(c is None for c in ids)


def _strata(
    unit: np.ndarray, n_units: int, y: np.ndarray, is_pos: np.ndarray | None, kind: str, stratified: bool
) -> tuple[list[np.ndarray], str]:
    """Groups of unit indices drawn separately (class counts, or diseased-patient counts, fixed)."""
    if not stratified:
        return [np.arange(n_units)], "plain"
    if kind == "image":
        return [np.flatnonzero(y == c) for c in np.unique(y)], "stratified by class"
    if is_pos is None:  # no negative class: a patient's stratum is its most frequent class
        k = int(y.max()) + 1
        major = np.bincount(unit * k + y, minlength=n_units * k).reshape(n_units, k).argmax(1)
        return [np.flatnonzero(major == c) for c in np.unique(major)], \
            "stratified by each patient's most frequent class (no negative class)"
    diseased = np.zeros(n_units, dtype=bool)
    np.logical_or.at(diseased, unit, is_pos)
    groups = [np.flatnonzero(diseased), np.flatnonzero(~diseased)]
    return [g for g in groups if g.size], "stratified by whether the patient has disease images"


def _method(kind: str, n_units: int, n_lone: int, how: str) -> str:
    if kind == "image":
        return f"percentile bootstrap resampling the {n_units} images, {how}"
    rough = "; few patients, so the intervals are rough" if n_units - n_lone < 10 else ""
    lone = f" (and {n_lone} images without a patient id, each on its own)" if n_lone else ""
    return (
        f"percentile bootstrap resampling the {n_units - n_lone} patients{lone}, {how}; "
        "cluster bootstrap: all images of a drawn patient enter together" + rough
    )


def bootstrap_cis(
    y: np.ndarray,
    p: np.ndarray,
    pred: np.ndarray,
    negative_class: int | None,
    *,
    clusters: Sequence[Any] | None = None,
    n_bootstrap: int,
    seed: int,
    level: float,
    stratified: bool,
) -> dict[str, Any]:
    """Percentile CIs of every metric of the call ``pred`` and of ROC-AUC.

    ``pred`` is the (N,) class prediction at the report's operating point; accuracy,
    balanced accuracy, sensitivity, specificity, PPV, NPV and F1 are computed from it on
    each resample. ``clusters`` (patient ids, ``None`` for unknown) switches to the
    patient (cluster) bootstrap. Resamples are multiplicity counts per unit, drawn in
    chunks, so no resampled copy of the data is ever built. ``negative_class=None`` (argmax,
    no healthy class): the disease-vs-negative rates are ``None`` and no interval is dropped
    for lack of "negative" patients (class 0 is not a negative class there).
    """
    rng = np.random.default_rng(seed)
    n, k = p.shape
    no_neg = negative_class is None
    is_pos = y != (0 if no_neg else negative_class)  # no_neg: a placeholder, its rates are dropped
    unit, n_units, kind, n_lone = cluster_codes(clusters, n)
    groups, how = _strata(unit, n_units, y, None if no_neg else is_pos, kind, stratified)
    present = [c for c in range(k) if np.any(y == c)]
    correct = (pred == y).astype(np.float64)
    called = (pred != (0 if no_neg else negative_class)).astype(np.float64)
    keys = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")
    out: dict[str, list[np.ndarray]] = {key: [] for key in (*keys, "roc_auc")}
    chunk = max(1, 2_000_000 // max(n, n_units))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = np.concatenate([g[rng.integers(0, len(g), size=(b, len(g)))] for g in groups], axis=1)
        flat = (np.arange(b)[:, None] * n_units + idx).ravel()
        wu = np.bincount(flat, minlength=b * n_units).reshape(b, n_units).astype(np.float64)
        w = wu[:, unit]  # every image carries its unit's multiplicity
        out["accuracy"].append(_ratio(w @ correct, w.sum(1)))
        recalls = [_ratio(w[:, y == c] @ correct[y == c], w[:, y == c].sum(1)) for c in present]
        with np.errstate(invalid="ignore"):
            out["balanced_accuracy"].append(np.nanmean(np.stack(recalls), axis=0))
        tp = w[:, is_pos] @ called[is_pos]
        fn = w[:, is_pos].sum(1) - tp
        fp = w[:, ~is_pos] @ called[~is_pos]
        tn = w[:, ~is_pos].sum(1) - fp
        out["sensitivity"].append(_ratio(tp, tp + fn))
        out["specificity"].append(_ratio(tn, tn + fp))
        out["ppv"].append(_ratio(tp, tp + fp))
        out["npv"].append(_ratio(tn, tn + fn))
        out["f1"].append(_ratio(2 * tp, 2 * tp + fp + fn))
        if k == 2:
            out["roc_auc"].append(weighted_auc(p[:, 1], y == 1, w))
        else:
            per = [weighted_auc(p[:, c], y == c, w) for c in present]
            with np.errstate(invalid="ignore"):
                out["roc_auc"].append(
                    np.nanmean(np.stack(per), axis=0) if per else np.full(b, np.nan)
                )
    alpha = (1.0 - level) / 2.0
    result: dict[str, Any] = {
        "level": level,
        "method": _method(kind, n_units, n_lone, how),
        "unit": kind,
        "n_units": int(n_units),
        "n_patients": n_units - n_lone if kind == "patient" else None,
        "n_images_without_patient": n_lone,
        "n_images": int(n),
        "stratified": how,
        "n_bootstrap": int(n_bootstrap),
        "seed": int(seed),
    }
    few = _too_few_units(unit, None if no_neg else is_pos, called.astype(bool), y, present) \
        if kind == "patient" else {}
    result["not_estimable"] = few
    for key, parts in out.items():
        if no_neg and key in _RATES:
            result[key] = None
            continue
        vals = np.concatenate(parts)
        vals = vals[np.isfinite(vals)]
        if key in few or vals.size < max(10, n_bootstrap // 2):
            result[key] = None
            continue
        lo, hi = np.quantile(vals, [alpha, 1.0 - alpha])
        result[key] = {"low": float(lo), "high": float(hi)}
    return result


_RATES = ("sensitivity", "specificity", "ppv", "npv", "f1")


def _too_few_units(
    unit: np.ndarray, is_pos: np.ndarray | None, called: np.ndarray, y: np.ndarray, present: list[int]
) -> dict[str, str]:
    """Metrics whose denominator comes from fewer than two patients: no interval for them.

    Resampling one patient always draws that patient, so its images' variation would be
    reported as certainty (a "0.773–0.773" specificity interval from one negative patient).
    ``is_pos=None`` (no negative class): only accuracy, balanced accuracy and the
    one-vs-rest AUC are checked, each class against the rest.
    """

    def units(mask: np.ndarray) -> int:
        return len(np.unique(unit[mask]))

    if is_pos is None:
        one_vs_rest = min(min(units(y == c), units(y != c)) for c in present)
        need = {
            "roc_auc": ("patients on each side of some class's one-vs-rest split", one_vs_rest),
            "balanced_accuracy": ("patients for every class", min(units(y == c) for c in present)),
            "accuracy": ("patients", units(np.ones_like(y, dtype=bool))),
        }
        return {key: f"only {n} {what}: a patient bootstrap needs at least 2" for key, (what, n) in need.items()
                if n < 2}

    need = {
        "sensitivity": ("patients with disease images", units(is_pos)),
        "specificity": ("patients with negative images", units(~is_pos)),
        "ppv": ("patients with images called diseased", units(called)),
        "npv": ("patients with images called negative", units(~called)),
        "f1": ("patients with disease images or images called diseased", units(is_pos | called)),
        "roc_auc": ("patients on each side (disease / negative images)", min(units(is_pos), units(~is_pos))),
        "balanced_accuracy": ("patients for every class", min(units(y == c) for c in present)),
        "accuracy": ("patients", units(np.ones_like(is_pos))),
    }
    return {
        key: f"only {n} {what}: a patient bootstrap needs at least 2"
        for key, (what, n) in need.items()
        if n < 2
    }
