"""The HTML report of a cross-validation run: pooled out-of-fold metrics, per-fold table,
mean training curves (see :mod:`medlens.pipelines.crossval`)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.cache import ImageCache
from medlens.data.records import DatasetIndex
from medlens.evaluate.operating_point import ARGMAX_NOTE
from medlens.pipelines.config import RunConfig
from medlens.pipelines.crossval_summary import FOLD_KEYS, FoldResult


def _mean_history(results: list[FoldResult]) -> list[dict[str, Any]]:
    """Per-epoch mean over the folds that ran that epoch (the report's training curves)."""
    out = []
    for e in range(max((len(r.history) for r in results), default=0)):
        rows = [r.history[e] for r in results if len(r.history) > e]
        keys = [
            k
            for k in ("train_loss", "val_loss", "val_auc", "val_balanced_acc")
            if all(k in h for h in rows)
        ]
        out.append({"epoch": e, **{k: float(np.nanmean([h[k] for h in rows])) for k in keys}})
    return out


def write_cv_report(
    path: Path,
    cfg: RunConfig,
    index: DatasetIndex,
    cache: ImageCache,
    problems: list,
    results: list[FoldResult],
    cv: dict[str, Any],
) -> Path:
    """Write the cross-validation page at ``path`` (``OUT/cv_report.html``); a folder gets
    ``report.html`` in it."""
    from medlens.evaluate.operating_point import operating_call
    from medlens.evaluate.report import write_report
    from medlens.pipelines.reporting import model_card, sample_images, summarize_data

    pooled = cv["pooled"]
    order = np.argsort(np.concatenate([r.test_idx for r in results]))
    probs = np.concatenate([r.probs for r in results])[order]
    neg = pooled["negative_class"]["index"]  # None: argmax folds (no negative class)
    thr = None if neg is None else np.concatenate(
        [np.full(len(r.test_idx), r.threshold) for r in results])[order]
    extras = {
        "eval_mask": np.ones(len(cache.records), bool),
        "eval_probs": probs,
        "eval_labels": cache.labels,
        "eval_pred": operating_call(probs, 0 if neg is None else int(neg), thr)[0],  # each fold's call
        "negative_class": neg,
    }
    split_table = {}
    for r in results:
        yy = cache.labels[r.test_idx]
        split_table[f"fold {r.row['fold']} (held out)"] = {
            **{c: int((yy == j).sum()) for j, c in enumerate(index.classes)},
            "total": len(yy),
            "patients": len(
                {cache.records[j].patient for j in r.test_idx if cache.records[j].patient}
            ),
        }
    card = model_card(cfg, index, pooled)
    patient = (pooled.get("patient_level") or {}).get("table")
    return write_report(
        path,
        title=f"medlens cross-validation — {Path(cfg.data.path).name} — {cfg.model.name}",
        data_summary={
            **summarize_data(index, cache, problems),
            "folds": cv["folds"],
            "grouped by": cv["grouping"],
        },
        split_table=split_table,
        history=_mean_history(results),
        metrics=pooled,
        patient_table=patient,
        samples=sample_images(cache, extras, index.classes, cfg.eval.samples_in_report),
        model_card=card,
        extra_sections=[("Cross-validation folds", _fold_table_html(cv))],
    )


def _fold_table_html(cv: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

    cols = ["fold", "n_train", "n_val", "n_test", *FOLD_KEYS, "threshold", "best_epoch"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{f(r.get(c))}</td>" for c in cols) + "</tr>" for r in cv["per_fold"]
    )
    s = cv["summary"]
    body += (
        "<tr><th>mean ± sd</th><td></td><td></td><td></td>"
        + "".join(f"<td>{f(s[k]['mean'])} ± {f(s[k]['std'])}</td>" for k in FOLD_KEYS)
        + "<td></td><td></td></tr>"
    )
    auc = cv["auc"]
    ci_t, ci_b = auc.get("ci_fold_t") or {}, auc.get("ci_pooled_bootstrap") or {}
    how = (ARGMAX_NOTE if cv["pooled"]["negative_class"]["index"] is None
           else cv.get("threshold_note") or "threshold chosen on the fold's validation split for the target sensitivity")
    notes = (
        f"<p>AUC mean over folds {f(auc['mean'])} ± {f(auc['std'])}; 95 % t-interval over folds "
        f"{f(ci_t.get('low'))}–{f(ci_t.get('high'))} (optimistic: folds share training images). "
        f"Pooled out-of-fold AUC {f(auc['pooled_oof'])}, bootstrap 95 % CI {f(ci_b.get('low'))}–"
        f"{f(ci_b.get('high'))}.</p><p>sensitivity, specificity, PPV, NPV, balanced accuracy, accuracy: at "
        f"the fold's operating point ({how}), the same call as the pooled numbers above.</p>"
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"
