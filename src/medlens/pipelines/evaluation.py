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


def negative_class_index(classes: list[str], name: str | None) -> int | None:
    """The run's negative class (``--negative-class`` or a healthy-sounding name; the first
    class of a binary task), or ``None``: multi-class without one → argmax operating point
    (:func:`~medlens.evaluate.operating_point.operating_negative_class`)."""
    from medlens.evaluate.operating_point import operating_negative_class
    from medlens.options import look_up_option

    named = None if name is None else classes.index(look_up_option(name, classes, what="negative class"))
    return operating_negative_class(classes, named)


def choose_operating_point(y_val: np.ndarray, p_val: np.ndarray, neg: int | None, cfg: RunConfig,
                           chosen_on: str = "val") -> tuple[dict[str, Any], dict[str, Any], list | None]:
    """The operating point on validation data: ``(choice, selection, alternatives)``; with no
    negative class the argmax call (threshold ``None``, no alternatives)."""
    from medlens.evaluate.operating_point import (
        alternative_thresholds,
        argmax_choice,
        choose_threshold,
        selection_record,
    )

    if neg is None:
        op = argmax_choice()
        return op, selection_record(op, chosen_on=chosen_on), None
    op = choose_threshold(y_val, p_val, negative_class=neg, target_sensitivity=cfg.eval.target_sensitivity)
    return op, selection_record(op, chosen_on=chosen_on), alternative_thresholds(y_val, p_val, negative_class=neg,
                                                                                  chosen_on=chosen_on)


def package_negative_class(pkg: Any) -> int | None:
    """The negative class metrics of ``pkg`` are built on: ``None`` for an argmax package whose
    operating point records no negative class (``metadata["negative_class"]`` stays an index
    there, 0, for readers that need one: the disease-score column of ``predict``)."""
    op = pkg.metadata.get("operating_point") or {}
    if pkg.threshold is None and "negative_class" in op and op["negative_class"] is None:
        return None
    return pkg.negative_class


def cache_logits(model: torch.nn.Module, task: ClassificationTask, images: np.ndarray,
                 device: torch.device, batch_size: int = 256) -> np.ndarray:
    model.to(device).eval()
    loader = BatchLoader({"image": images}, batch_size=batch_size, shuffle=False)
    return task.logits(model, loader, device).numpy()


#: Where a fold ensemble's operating point is chosen (the report's "chosen on").
OUT_OF_FOLD = "pooled out-of-fold (training and validation patients)"


def fitted_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling fitted on ``logits``; 1 where they hold one class (nothing to fit)."""
    from medlens.evaluate.calibration import fit_temperature

    return float(fit_temperature(logits, labels)) if len(np.unique(labels)) > 1 else 1.0


def output_temperature(op_logits: np.ndarray, labels: np.ndarray, chosen_on: str) -> float:
    """The temperature applied to the model's output: fitted on the operating-point logits, or 1
    for a fold ensemble (``chosen_on`` :data:`OUT_OF_FOLD`), whose members already apply theirs,
    fitted on their out-of-fold logits (:func:`~medlens.pipelines.classifier_fit.train_model`)."""
    return 1.0 if chosen_on == OUT_OF_FOLD else fitted_temperature(op_logits, labels)


def evaluate_cache(model: torch.nn.Module, task: ClassificationTask, cache: ImageCache, classes: list[str],
                   cfg: RunConfig, device: torch.device,
                   op_data: tuple[np.ndarray, np.ndarray] | None = None, chosen_on: str = "val"
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics for the test split (validation when there is no test split).

    ``op_data`` (cache rows, their logits): what the temperature and the operating point are
    chosen on, default the validation rows through ``model``. A fold ensemble passes every
    pooled row's out-of-fold logits (``chosen_on`` :data:`OUT_OF_FOLD`); with no test split those
    are then also what is reported, every pooled row, as split ``out_of_fold`` (each scored by the
    member that did not train on it — the ensemble itself trained on them all).
    """
    from medlens.evaluate.calibration import apply_temperature
    from medlens.evaluate.metrics import classification_metrics
    from medlens.evaluate.operating_point import operating_call

    splits = np.array([r.split for r in cache.records])
    labels = cache.labels
    neg = negative_class_index(classes, cfg.eval.negative_class)
    val_m = splits == "val"
    eval_split = "test" if (splits == "test").any() else "val"
    eval_m = splits == eval_split
    if op_data is None:
        op_data = (np.flatnonzero(val_m), cache_logits(model, task, cache.images[val_m], device))
    op_rows, z_val = op_data
    if eval_split == "val" and chosen_on == OUT_OF_FOLD:
        eval_split, eval_m = "out_of_fold", np.isin(np.arange(len(splits)), op_rows)
    y_val = labels[op_rows]
    temperature = output_temperature(z_val, y_val, chosen_on)
    p_val = apply_temperature(z_val, temperature)
    op, selection, alternatives = choose_operating_point(y_val, p_val, neg, cfg, chosen_on=chosen_on)
    z = z_val[np.isin(op_rows, np.flatnonzero(eval_m))] if eval_split != "test" else \
        cache_logits(model, task, cache.images[eval_m], device)
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
              "eval_pred": operating_call(probs, 0 if neg is None else neg, op["threshold"])[0]}
    return metrics, extras


def package_metadata(cfg: RunConfig, classes: list[str], metrics: dict[str, Any], mean: list[float],
                     std: list[float], extras: dict[str, Any]) -> dict[str, Any]:
    headline = {k: metrics.get(k) for k in ("accuracy", "balanced_accuracy", "sensitivity", "specificity",
                                            "ppv", "npv", "roc_auc", "pr_auc") if k in metrics}
    return {
        "task": "classify",
        "classes": list(classes),
        "negative_class": int(extras["negative_class"] or 0),  # an index for readers that need one
        "input": {"size": cfg.preprocess.size, "channels": cfg.preprocess.channels, "layout": "CHW",
                  "dtype": "float32", "value_range": "uint8 image /255, then (x-mean)/std"},
        "preprocess": cfg.preprocess.model_dump(),
        "normalize": {"mean": mean, "std": std},
        "threshold": extras["threshold"],
        "target_sensitivity": None if extras["negative_class"] is None else cfg.eval.target_sensitivity,
        "operating_point": _package_operating_point(extras),
        "temperature": extras["temperature"],
        "config": cfg.model_dump(mode="json"),  # the typed run config (medlens.tasks.config)
        "metrics": {"split": metrics.get("split"), "at": "the operating point", **headline},
    }


def _package_operating_point(extras: dict[str, Any]) -> dict[str, Any]:
    from medlens.evaluate.operating_point import ARGMAX_CALL, ARGMAX_NOTE

    if extras["negative_class"] is None:  # read back by package_negative_class
        return {"threshold": None, "negative_class": None, "call": ARGMAX_CALL, "note": ARGMAX_NOTE,
                "selection": extras["selection"], "alternatives": None}
    return {"threshold": extras["threshold"], "call": "disease score = 1 - p(negative class) >= threshold, "
            "then the most probable disease class", "selection": extras["selection"],
            "alternatives": extras["alternatives"]}
