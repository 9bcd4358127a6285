"""Folds into one cross-validation result: pooled out-of-fold metrics, mean ± sd over
folds and the two AUC intervals (see :mod:`medlens.pipelines.crossval`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from medlens.data.cache import ImageCache
from medlens.data.records import DatasetIndex
from medlens.errors import ConfigError
from medlens.pipelines.config import RunConfig

# per-fold metrics; all but roc_auc at the fold's operating point (its validation threshold)
FOLD_KEYS = (
    "roc_auc",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "balanced_accuracy",
    "accuracy",
)
POOLED_RULE = (
    "each image called at its own fold's threshold, chosen on a validation split carved from "
    "that fold's training part as the largest threshold with sensitivity >= {target:g}"
)


@dataclasses.dataclass
class FoldResult:
    """One fold's out-of-fold predictions (positions index the cache) and summary row."""

    test_idx: np.ndarray
    probs: np.ndarray
    threshold: float | None  # None: argmax call (no negative class)
    row: dict[str, Any]
    history: list[dict[str, Any]]
    # name → threshold of each rule, chosen on this fold's validation split as its
    # ``metrics.json`` lists them (``alternative_thresholds``); empty for argmax folds
    alternatives: dict[str, float] = dataclasses.field(default_factory=dict)


def fold_t_interval(values: list[float], level: float = 0.95) -> dict[str, Any] | None:
    """Student-t interval of the mean over folds (optimistic: folds share training data)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) < 2:
        return None
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return {
        "low": max(0.0, float(v.mean()) - half),
        "high": min(1.0, float(v.mean()) + half),
        "level": level,
        "n_folds": len(v),
        "method": "mean ± t(k-1)·sd/√k over folds, clipped to [0, 1]",
    }


def summarise(
    results: list[FoldResult], usable: DatasetIndex, cache: ImageCache, cfg: RunConfig
) -> dict[str, Any]:
    """``cv_metrics.json``: every image's out-of-fold prediction pooled, per-fold rows and stats."""
    from medlens.evaluate.metrics import classification_metrics, to_jsonable
    from medlens.evaluate.operating_point import ARGMAX_NOTE, binary_rates, disease_score
    from medlens.pipelines.evaluation import negative_class_index

    classes = usable.classes
    neg = negative_class_index(classes, cfg.eval.negative_class)
    idx = np.concatenate([r.test_idx for r in results])
    if len(idx) != len(usable.records) or len(np.unique(idx)) != len(idx):
        raise ConfigError(
            "the held-out folds do not cover every image exactly once; start a new run"
        )
    if neg is None and any(r.threshold is not None for r in results):
        raise ConfigError("these folds were called at thresholds but this run has no negative class "
                          "(e.g. --negative-class changed on resume); start a new run in another --out")
    probs = np.empty((len(idx), len(classes)))
    thr = np.empty(len(idx))
    for r in results:
        probs[r.test_idx] = r.probs
        thr[r.test_idx] = np.nan if r.threshold is None else r.threshold
    if neg is not None and not np.all(np.isfinite(thr)):
        raise ConfigError("some folds were called by argmax but this run has a negative class "
                          "(e.g. --negative-class changed on resume); start a new run in another --out")
    y = cache.labels
    patients = [r.patient for r in usable.records]
    pooled = classification_metrics(
        y,
        probs,
        classes,
        negative_class=neg,
        threshold=None if neg is None else thr,
        alternatives=None if neg is None else pooled_alternatives(results, len(idx)),
        selection={"rule": ARGMAX_NOTE + "; every fold's call is argmax", "target_sensitivity": None,
                   "chosen_on": None}
        if neg is None
        else {
            "rule": POOLED_RULE.format(target=cfg.eval.target_sensitivity),
            "target_sensitivity": cfg.eval.target_sensitivity,
            "chosen_on": "val (one per fold)",
        },
        patients=patients if usable.has_patients else None,
        n_bootstrap=cfg.eval.n_bootstrap,
        seed=cfg.train.seed,
        patient_aggregate=cfg.eval.patient_aggregate,
        patient_k=cfg.eval.topk,
    )
    pooled["split"] = "out-of-fold (every image predicted by the model that did not train on it)"
    if neg is None:
        pooled_op = {"rule": ARGMAX_NOTE, "accuracy": pooled.get("accuracy"),
                     **{k: None for k in ("sensitivity", "specificity", "ppv", "npv")}}
    else:
        rates = binary_rates(y != neg, disease_score(probs, neg) >= thr)
        pooled_op = {"rule": "each image called with its own fold's validation threshold",
                     **{k: rates[k] for k in ("sensitivity", "specificity", "ppv", "npv")}}
    rows = [r.row for r in results]
    summary = {}
    for key in FOLD_KEYS:
        v = [x[key] for x in rows if x.get(key) is not None]
        summary[key] = {
            "mean": float(np.mean(v)) if v else None,
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
            "n_folds": len(v),
        }
    boot = (pooled.get("ci") or {}).get("roc_auc")
    return to_jsonable(
        {
            "folds": len(results),
            "grouping": "patient" if usable.has_patients and cfg.data.group_by_patient else "image",
            "per_fold": rows,
            "summary": summary,
            "auc": {
                "mean": summary["roc_auc"]["mean"],
                "std": summary["roc_auc"]["std"],
                "pooled_oof": pooled.get("roc_auc"),
                "ci_fold_t": fold_t_interval([x["roc_auc"] for x in rows]),
                "ci_pooled_bootstrap": None
                if boot is None
                else {
                    **boot,
                    "level": pooled["ci"]["level"],
                    "method": pooled["ci"]["method"] + "; pools the models of all folds",
                },
            },
            "pooled": pooled,
            "pooled_operating_point": pooled_op,  # the same call as every thresholded number of "pooled"
            "config": cfg.model_dump(),
        }
    )


def pooled_alternatives(results: list[FoldResult], n: int) -> list[dict[str, Any]] | None:
    """The rules a fold did not use, pooled: each out-of-fold image at its own fold's threshold for
    the rule (chosen on that fold's validation split as the real one is), so changing a recipe's
    operating rule is judged on held-out patients. ``None`` when a fold lacks them (older folds)."""
    names = [k for k in (results[0].alternatives if results else {}) if all(k in r.alternatives for r in results)]
    rows = []
    for name in names:
        thr = np.empty(n)
        for r in results:
            thr[r.test_idx] = r.alternatives[name]
        rows.append({"name": name, "threshold": thr, "chosen_on": "val (each fold's own threshold)"})
    return rows or None


def binary_cv_table(cv: dict[str, Any], *, threshold_note: str, pooled: str = "pooled out-of-fold AUC",
                    bootstrap: str = "bootstrap") -> tuple[list[list[str]], list[str]]:
    """The per-fold rows (AUC and the rates at each fold's operating point), the mean ± sd row
    and the two AUC intervals as notes: what a binary task's ``cv_summary`` shows (classify,
    patient); ``threshold_note`` says how each fold chose its threshold."""

    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    keys = ("roc_auc", "sensitivity", "specificity", "balanced_accuracy")
    rows = [[str(r["fold"]), str(r["n_test"]), *(f(r.get(k)) for k in keys)] for r in cv["per_fold"]]
    s = cv["summary"]
    rows.append(["mean ± sd", "", *(f"{f(s[k]['mean'])} ± {f(s[k]['std'])}" for k in keys)])
    auc = cv["auc"]
    ci_t, ci_b = auc.get("ci_fold_t") or {}, auc.get("ci_pooled_bootstrap") or {}
    argmax = ((cv.get("pooled") or {}).get("negative_class") or {}).get("index", 0) is None
    if argmax:  # no negative class: no threshold, no disease-vs-negative rates
        from medlens.evaluate.operating_point import ARGMAX_NOTE

        threshold_note = f"{ARGMAX_NOTE}; sensitivity and specificity per class are in cv_metrics.json"
    notes = [f"sensitivity, specificity, balanced acc: at each fold's operating point ({threshold_note})",
             f"AUC {f(auc.get('mean'))} ± {f(auc.get('std'))} over folds, 95% CI (t over folds) "
             f"{f(ci_t.get('low'))}–{f(ci_t.get('high'))}",
             f"{pooled} {f(auc.get('pooled_oof'))}, 95% CI ({bootstrap}) {f(ci_b.get('low'))}–{f(ci_b.get('high'))}"]
    alt = ((cv.get("pooled") or {}).get("alternative_operating_points") or {}).get("rows") or []
    if alt and not argmax:
        notes.append("operating rules, pooled, each fold's own threshold: " + "; ".join(
            f"{r['name']}{' (used)' if r.get('same_as_operating_point') else ''}: sens {f(r['sensitivity'])} "
            f"spec {f(r['specificity'])} balanced acc {f(r['balanced_accuracy'])}" for r in alt))
    if argmax:
        acc, ci_a = cv["pooled"].get("accuracy"), (cv["pooled"].get("ci") or {}).get("accuracy") or {}
        notes.append(f"pooled out-of-fold accuracy (argmax) {f(acc)}, 95% CI ({bootstrap}) "
                     f"{f(ci_a.get('low'))}–{f(ci_a.get('high'))}; accuracy {f(s['accuracy']['mean'])} ± "
                     f"{f(s['accuracy']['std'])} over folds")
    return rows, notes
