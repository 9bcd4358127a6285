"""Bootstrap confidence intervals of classification metrics, vectorised.

Each resample is a row of multiplicity weights over the evaluated items, so every metric
of a chunk of resamples is a matrix product; AUC uses a weighted Mann-Whitney count with
ties (:func:`weighted_auc`). See :mod:`medlens.evaluate.metrics` for the definitions.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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


def bootstrap_cis(
    y: np.ndarray,
    p: np.ndarray,
    pred: np.ndarray,
    negative_class: int,
    op_called: np.ndarray | None,
    *,
    n_bootstrap: int,
    seed: int,
    level: float,
    stratified: bool,
) -> dict[str, Any]:
    """Percentile CIs of accuracy, balanced accuracy, sensitivity, specificity, ROC-AUC (and
    the operating point's sensitivity/specificity when ``op_called`` is given).

    Resamples are drawn as multiplicity counts per item (stratified by true class when
    ``stratified``), in chunks, so no resampled copy of the data is ever built.
    """
    rng = np.random.default_rng(seed)
    n, k = p.shape
    present = [c for c in range(k) if np.any(y == c)]
    groups = [np.flatnonzero(y == c) for c in present] if stratified else [np.arange(n)]
    correct = (pred == y).astype(np.float64)
    is_pos = y != negative_class
    called = (pred != negative_class).astype(np.float64)
    out: dict[str, list[np.ndarray]] = {
        key: []
        for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc")
    }
    if op_called is not None:
        out["op_sensitivity"], out["op_specificity"] = [], []
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = np.concatenate([g[rng.integers(0, len(g), size=(b, len(g)))] for g in groups], axis=1)
        flat = (np.arange(b)[:, None] * n + idx).ravel()
        w = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        out["accuracy"].append(w @ correct / n)
        recalls = [_ratio(w[:, y == c] @ correct[y == c], w[:, y == c].sum(1)) for c in present]
        with np.errstate(invalid="ignore"):
            out["balanced_accuracy"].append(np.nanmean(np.stack(recalls), axis=0))
        n_pos, n_neg = w[:, is_pos].sum(1), w[:, ~is_pos].sum(1)
        out["sensitivity"].append(_ratio(w[:, is_pos] @ called[is_pos], n_pos))
        out["specificity"].append(_ratio(w[:, ~is_pos] @ (1 - called[~is_pos]), n_neg))
        if op_called is not None:
            oc = op_called.astype(np.float64)
            out["op_sensitivity"].append(_ratio(w[:, is_pos] @ oc[is_pos], n_pos))
            out["op_specificity"].append(_ratio(w[:, ~is_pos] @ (1 - oc[~is_pos]), n_neg))
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
        "method": "percentile bootstrap, " + ("stratified by class" if stratified else "plain"),
        "n_bootstrap": int(n_bootstrap),
        "seed": int(seed),
    }
    for key, parts in out.items():
        vals = np.concatenate(parts)
        vals = vals[np.isfinite(vals)]
        if vals.size < max(10, n_bootstrap // 2):
            result[key] = None
            continue
        lo, hi = np.quantile(vals, [alpha, 1.0 - alpha])
        result[key] = {"low": float(lo), "high": float(hi)}
    return result
