"""Evaluation glue: logits → temperature → operating point (on validation) → test metrics.

The threshold and the temperature are chosen on the validation split only; the test
split is touched once, to report. The threshold, how it was chosen and the alternatives
(other target sensitivities, the 0.5 call) go into the package so ``evaluate`` and
``predict`` use and state the same operating point.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from medlens.data.cache import ImageCache
from medlens.pipelines.config import RunConfig
from medlens.train.classify import ClassificationTask
from medlens.train.loader import BatchLoader

log = logging.getLogger(__name__)


def negative_class_index(classes: list[str], name: str | None) -> int:
    from medlens.evaluate.operating_point import guess_negative_class
    from medlens.options import look_up_option

    if name is None:
        return guess_negative_class(classes)
    return classes.index(look_up_option(name, classes, what="negative class"))


def cache_logits(model: torch.nn.Module, task: ClassificationTask, images: np.ndarray,
                 device: torch.device, batch_size: int = 256) -> np.ndarray:
    model.to(device).eval()
    loader = BatchLoader({"image": images}, batch_size=batch_size, shuffle=False)
    return task.logits(model, loader, device).numpy()


def evaluate_cache(model: torch.nn.Module, task: ClassificationTask, cache: ImageCache, classes: list[str],
                   cfg: RunConfig, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics for the test split (validation when there is no test split)."""
    from medlens.evaluate.calibration import apply_temperature, fit_temperature
    from medlens.evaluate.metrics import classification_metrics
    from medlens.evaluate.operating_point import (
        alternative_thresholds,
        apply_threshold,
        choose_threshold,
        selection_record,
    )

    splits = np.array([r.split for r in cache.records])
    labels = cache.labels
    neg = negative_class_index(classes, cfg.eval.negative_class)
    val_m = splits == "val"
    eval_split = "test" if (splits == "test").any() else "val"
    eval_m = splits == eval_split
    z_val = cache_logits(model, task, cache.images[val_m], device)
    y_val = labels[val_m]
    temperature = float(fit_temperature(z_val, y_val)) if len(np.unique(y_val)) > 1 else 1.0
    p_val = apply_temperature(z_val, temperature)
    op = choose_threshold(y_val, p_val, negative_class=neg, target_sensitivity=cfg.eval.target_sensitivity)
    selection = selection_record(op, chosen_on="val")
    alternatives = alternative_thresholds(y_val, p_val, negative_class=neg)
    z = z_val if eval_split == "val" else cache_logits(model, task, cache.images[eval_m], device)
    y = labels[eval_m]
    probs = apply_temperature(z, temperature)
    patients = [r.patient for r in np.array(cache.records, dtype=object)[eval_m]]
    has_patients = any(p is not None for p in patients)
    metrics = classification_metrics(
        y, probs, classes, negative_class=neg, threshold=op["threshold"], selection=selection,
        alternatives=alternatives, patients=patients if has_patients else None, n_bootstrap=cfg.eval.n_bootstrap, seed=cfg.train.seed,
        patient_aggregate=cfg.eval.patient_aggregate, patient_k=cfg.eval.topk,
        logits=z, val_logits=z_val, val_y=y_val,
    )
    metrics["split"] = eval_split
    extras = {"temperature": temperature, "threshold": op["threshold"], "negative_class": neg,
              "selection": selection, "alternatives": alternatives,
              "eval_mask": eval_m, "eval_probs": probs, "eval_labels": y,
              "eval_pred": apply_threshold(probs, op["threshold"], negative_class=neg)}
    return metrics, extras


def package_metadata(cfg: RunConfig, classes: list[str], metrics: dict[str, Any], mean: list[float],
                     std: list[float], extras: dict[str, Any]) -> dict[str, Any]:
    headline = {k: metrics.get(k) for k in ("accuracy", "balanced_accuracy", "sensitivity", "specificity",
                                            "ppv", "npv", "roc_auc", "pr_auc") if k in metrics}
    return {
        "task": "classify",
        "classes": list(classes),
        "negative_class": int(extras["negative_class"]),
        "input": {"size": cfg.preprocess.size, "channels": cfg.preprocess.channels, "layout": "CHW",
                  "dtype": "float32", "value_range": "uint8 image /255, then (x-mean)/std"},
        "preprocess": cfg.preprocess.model_dump(),
        "normalize": {"mean": mean, "std": std},
        "threshold": extras["threshold"],
        "target_sensitivity": cfg.eval.target_sensitivity,
        "operating_point": {"threshold": extras["threshold"], "call": "disease score = 1 - p(negative class) "
                            ">= threshold, then the most probable disease class",
                            "selection": extras["selection"], "alternatives": extras["alternatives"]},
        "temperature": extras["temperature"],
        "config": cfg.model_dump(mode="json"),  # the typed run config (medlens.tasks.config)
        "metrics": {"split": metrics.get("split"), "at": "the operating point", **headline},
    }
