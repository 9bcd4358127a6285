"""Evaluation of classifiers: metrics.json content, calibration, patients, HTML report.

Typical use (``probs`` are softmax outputs, the threshold comes from validation data)::

    neg = guess_negative_class(classes)
    op = choose_threshold(y_val, probs_val, negative_class=neg, target_sensitivity=0.95)
    m = classification_metrics(y_test, probs_test, classes, negative_class=neg,
                               threshold=op["threshold"],
                               selection=selection_record(op, chosen_on="val"),
                               alternatives=alternative_thresholds(y_val, probs_val,
                                                                   negative_class=neg),
                               patients=patients_test)
    write_report(run_dir, title=..., metrics=m, ...)
"""

from __future__ import annotations

from medlens.evaluate.calibration import (
    apply_temperature,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from medlens.evaluate.metrics import classification_metrics, roc_auc_medmnist, to_jsonable
from medlens.evaluate.model_card import NOT_FOR_CLINICAL_USE, model_card_markdown
from medlens.evaluate.operating_point import (
    alternative_thresholds,
    apply_threshold,
    choose_threshold,
    disease_score,
    guess_negative_class,
    selection_record,
)
from medlens.evaluate.patients import patient_metrics
from medlens.evaluate.report import select_samples, write_report

__all__ = [
    "NOT_FOR_CLINICAL_USE",
    "alternative_thresholds",
    "apply_temperature",
    "apply_threshold",
    "calibration_summary",
    "choose_threshold",
    "classification_metrics",
    "disease_score",
    "expected_calibration_error",
    "fit_temperature",
    "guess_negative_class",
    "model_card_markdown",
    "patient_metrics",
    "reliability_curve",
    "roc_auc_medmnist",
    "select_samples",
    "selection_record",
    "to_jsonable",
    "write_report",
]
