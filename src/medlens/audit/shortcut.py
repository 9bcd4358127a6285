"""Shortcut test: can the label be predicted from acquisition metadata alone?

A small model (gradient boosting and a logistic regression; the better AUC is kept) is
trained on per-image metadata — size, file size, compression, colour moments and
sharpness, never the pixels as an image — with cross-validation grouped by patient when
patients are known. A high ROC-AUC means a network can reach the label without looking
at the pathology (a clinic's camera, a scanner's stain, a resize done for one class).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from medlens.audit.stats import FEATURE_GROUPS, FEATURES

log = logging.getLogger(__name__)

_GROUP_WORDS = {
    "size_and_file": "image size, file size or compression",
    "colour": "colour statistics (stain, camera or lighting — or the pathology itself)",
    "sharpness": "sharpness (focus, resolution or compression)",
    "all": "acquisition metadata (size, file, colour, sharpness)",
}


def univariate_auc(x: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """AUC of one feature alone, direction-free (0.5 = useless, 1 = separates perfectly)."""
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(x)
    x, y = x[ok], y[ok]
    if x.size < 4 or np.ptp(x) == 0:
        return 0.5
    aucs = []
    for k in range(n_classes) if n_classes > 2 else [1]:
        yk = (y == k).astype(int)
        if 0 < yk.sum() < len(yk):
            a = float(roc_auc_score(yk, x))
            aucs.append(max(a, 1.0 - a))
    return float(np.mean(aucs)) if aucs else 0.5


def _cv_auc(X: np.ndarray, y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = np.unique(y)
    if groups is not None:
        cv: Any = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    models = {
        "gradient_boosting": HistGradientBoostingClassifier(
            max_iter=40, max_leaf_nodes=15, learning_rate=0.1, random_state=seed
        ),
        "logistic": make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(max_iter=300),
        ),
    }
    out: dict[str, float] = {}
    for name, model in models.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proba = cross_val_predict(model, X, y, groups=groups, cv=cv, method="predict_proba")
        if len(classes) == 2:
            out[name] = float(roc_auc_score(y, proba[:, 1]))
        else:
            proba = proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)
            out[name] = float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))
    return out


def shortcut_test(
    table: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    groups: np.ndarray | None = None,
    *,
    threshold: float = 0.75,
    folds: int = 5,
    max_samples: int = 3000,
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-validated ROC-AUC of metadata-only models, per feature group and all together.

    Args:
        table: ``(N, len(FEATURES))`` feature table (NaN where unknown).
        labels: ``(N,)`` class indices, ``-1`` for unlabeled rows (ignored).
        groups: ``(N,)`` patient ids (strings) or ``None``: folds never split a patient.
        threshold: AUC at or above which a warning is raised.
        max_samples: larger sets are subsampled (stratified) to keep the test fast.

    Returns:
        ``{"status", "auc", "model", "groups": {...}, "top_features": [...], "warnings": [...]}``
    """
    if not 0.5 <= threshold <= 1.0:
        raise ValueError(f"shortcut threshold must be in [0.5, 1], got {threshold}")
    keep = labels >= 0
    X, y = table[keep], labels[keep]
    g = None if groups is None else np.asarray(groups)[keep]
    present, counts = np.unique(y, return_counts=True)
    if len(present) < 2 or len(y) < 20:
        return {"status": "skipped", "reason": "needs at least 2 classes and 20 labelled images",
                "auc": None, "groups": {}, "top_features": [], "warnings": []}  # fmt: skip
    rng = np.random.default_rng(seed)
    if len(y) > max_samples:
        sel = np.concatenate([
            rng.choice(np.flatnonzero(y == k), size=max(2, round(max_samples * c / len(y))), replace=False)
            for k, c in zip(present, counts, strict=True)
        ])  # fmt: skip
        X, y = X[sel], y[sel]
        g = None if g is None else g[sel]
    n_groups = len(np.unique(g)) if g is not None else 0
    min_count = int(np.unique(y, return_counts=True)[1].min())
    k = min(folds, min_count)
    if g is not None and n_groups < max(k, 3):
        g = None  # too few patients to group folds; say so below
    if g is not None:
        k = min(k, n_groups)
    if k < 2:
        return {"status": "skipped", "reason": "a class has fewer than 2 images",
                "auc": None, "groups": {}, "top_features": [], "warnings": []}  # fmt: skip
    # re-index labels 0..K-1 for sklearn's multi-class AUC
    y_idx = np.searchsorted(np.unique(y), y)
    n_classes = len(np.unique(y))
    result: dict[str, Any] = {"status": "ok", "folds": k, "grouped_by_patient": g is not None,
                              "n_samples": len(y), "threshold": threshold, "groups": {}}  # fmt: skip
    group_cols = dict(FEATURE_GROUPS)
    group_cols["all"] = FEATURES
    for name, cols in group_cols.items():
        idx = [FEATURES.index(c) for c in cols]
        Xg = X[:, idx]
        varying = [j for j in range(Xg.shape[1]) if _varies(Xg[:, j])]
        if not varying:
            result["groups"][name] = {"auc": 0.5, "model": None, "note": "no variation"}
            continue
        aucs = _cv_auc(Xg[:, varying], y_idx, None if g is None else g.astype(str), k, seed)
        best = max(aucs, key=aucs.__getitem__)
        result["groups"][name] = {"auc": aucs[best], "model": best, "by_model": aucs,
                                  "features": [cols[j] for j in varying]}  # fmt: skip
    top = sorted(
        ((c, univariate_auc(X[:, FEATURES.index(c)], y_idx, n_classes)) for c in FEATURES),
        key=lambda t: -t[1],
    )
    result["top_features"] = [{"feature": c, "auc": round(a, 4)} for c, a in top[:8]]
    result["auc"] = result["groups"]["all"]["auc"]
    result["model"] = result["groups"]["all"].get("model")
    flagged = [(name, info["auc"]) for name, info in result["groups"].items()
               if info["auc"] is not None and info["auc"] >= threshold]  # fmt: skip
    warns = []
    if flagged:
        worst = max(flagged, key=lambda t: t[1])[0]
        pool = FEATURES if worst == "all" else FEATURE_GROUPS[worst]
        feats = [t for t in top if t[0] in pool and t[1] >= 0.6][:3]
        feat_txt = ", ".join(f"{c} (AUC {a:.2f} alone)" for c, a in feats) or "no single feature"
        groups_txt = "; ".join(f"{_GROUP_WORDS[n]}: {a:.2f}" for n, a in flagged)
        warns.append(
            f"Labels are predictable without looking at the pathology (cross-validated ROC-AUC "
            f"≥ {threshold:.2f} from {groups_txt}). Most predictive: {feat_txt}. A model may "
            "learn these instead of the disease."
        )
    result["warnings"] = warns
    return result


def _varies(col: np.ndarray) -> bool:
    f = col[np.isfinite(col)]
    return f.size > 0 and np.ptp(f) > 0
