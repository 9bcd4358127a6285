"""Disease score, negative-class guessing and the validation-chosen operating point.

Every metric in :mod:`medlens.evaluate` sees a problem as "negative" (healthy, normal,
benign, no-IDC: the class at ``negative_class``) against "disease" (every other class).
The disease score of an image is ``1 - probs[:, negative_class]``; for a binary problem
this equals the probability of the positive class. An image is called diseased at a
threshold ``t`` when its disease score is ``>= t``.

The threshold is chosen on VALIDATION data only (choosing it on the test set would
report an optimistic sensitivity) and then applied unchanged to the test set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError

_NEGATIVE_NAMES = (
    "0",
    "normal",
    "healthy",
    "benign",
    "nevus",
    "negative",
    "no",
    "no_idc",
    "noidc",
    "non_idc",
    "no_finding",
    "no_tumor",
    "notumor",
    "no_tumour",
    "control",
    "absent",
    "false",
)


def find_negative_class(classes: Sequence[str]) -> int | None:
    """Index of the class whose name means "no disease", or ``None`` when none does.

    Names are compared case-insensitively with spaces/dashes folded to underscores, so
    ``"No IDC"``, ``"no-idc"`` and ``"NORMAL"`` are all recognised.
    """
    folded = [re.sub(r"[\s\-]+", "_", str(c).strip().lower()) for c in classes]
    for name in _NEGATIVE_NAMES:
        if name in folded:
            return folded.index(name)
    return None


def guess_negative_class(classes: Sequence[str]) -> int:
    """Index of the class that most likely means "no disease", else 0 (see
    :func:`find_negative_class`; :func:`operating_negative_class` decides whether to use it)."""
    found = find_negative_class(classes)
    return 0 if found is None else found


#: What metrics.json, the package and the report say when a run has no negative class.
ARGMAX_NOTE = "operating point: argmax (no healthy class named; pass --negative-class to set one)"


def operating_negative_class(classes: Sequence[str], named: int | None = None) -> int | None:
    """The negative class the operating point is built on, or ``None`` for an argmax call.

    The one rule every pipeline uses: a class the user named (``named``) or a class whose
    name means healthy; otherwise the first class of a binary task (a two-class threshold
    on ``1 - p(class 0)`` is the threshold on ``p(class 1)``); otherwise none. A
    multi-class set without a healthy class (cell types, tissue types) must not get a
    threshold on "1 - p(first class)": each image gets its most probable class.
    """
    if named is not None:
        return int(named)
    found = find_negative_class(classes)
    if found is not None:
        return found
    return 0 if len(classes) == 2 else None


def argmax_choice() -> dict[str, Any]:
    """The operating point of a run without a negative class, shaped like a
    :func:`choose_threshold` result so callers store and report it the same way."""
    return {"threshold": None, "sensitivity": None, "specificity": None, "target_sensitivity": None,
            "n_positive": None, "n_negative": None, "warning": None}


def check_inputs(
    y_true: Any, probs: Any, *, negative_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``y_true`` (N,) and ``probs`` (N, K); raise naming the fault."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1:  # MedMNIST labels come as (N, 1)
        y = y[:, 0]
    if y.ndim != 1:
        raise BadInputError(f"y_true must have shape (N,), got {y.shape}")
    if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
        raise BadInputError("y_true must hold integer class indices")
    y = y.astype(np.int64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise BadInputError(f"probs must have shape (N, K) with K >= 2, got {p.shape}")
    if p.shape[0] != y.shape[0]:
        raise BadInputError(f"y_true has {y.shape[0]} items but probs has {p.shape[0]} rows")
    if y.size == 0:
        raise BadInputError("y_true and probs are empty: nothing to evaluate")
    if not np.all(np.isfinite(p)):
        raise BadInputError("probs contains NaN or infinite values")
    k = p.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise BadInputError(f"y_true holds class indices outside 0..{k - 1}")
    if negative_class is not None and not 0 <= int(negative_class) < k:
        raise ConfigError(f"negative_class={negative_class} is not a class index in 0..{k - 1}")
    return y, p


def disease_score(probs: Any, negative_class: int) -> np.ndarray:
    """``1 - probs[:, negative_class]``: the probability of any disease class."""
    p = np.asarray(probs, dtype=np.float64)
    return 1.0 - p[:, int(negative_class)]


def binary_rates(is_pos: np.ndarray, called_pos: np.ndarray) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV, F1 and the 2×2 counts; undefined → None."""
    is_pos = np.asarray(is_pos, dtype=bool)
    called_pos = np.asarray(called_pos, dtype=bool)
    tp = int(np.sum(is_pos & called_pos))
    fn = int(np.sum(is_pos & ~called_pos))
    fp = int(np.sum(~is_pos & called_pos))
    tn = int(np.sum(~is_pos & ~called_pos))

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    sens, ppv = ratio(tp, tp + fn), ratio(tp, tp + fp)
    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "sensitivity": sens,
        "specificity": ratio(tn, tn + fp),
        "ppv": ppv,
        "npv": ratio(tn, tn + fn),
        "f1": f1,
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "tn": tn,
    }


def choose_threshold(
    y_true: Any,
    probs: Any,
    *,
    negative_class: int,
    target_sensitivity: float = 0.95,
) -> dict[str, Any]:
    """Pick the largest disease-score threshold whose sensitivity is ``>= target``.

    Use on validation data. Specificity never decreases as the threshold rises, so the
    largest qualifying threshold also has the highest specificity among them (ties are
    settled that way by construction).

    Returns:
        ``{"threshold", "sensitivity", "specificity", "target_sensitivity", "n_positive",
        "n_negative", "warning"}``. ``warning`` is ``None`` normally. Fallbacks: with no
        positive case the threshold is 0.5 (sensitivity undefined → ``None``); with no
        negative case the rule still applies and specificity is ``None``.
    """
    if not 0.0 < float(target_sensitivity) <= 1.0:
        raise ConfigError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    y, p = check_inputs(y_true, probs, negative_class=negative_class)
    score = disease_score(p, negative_class)
    is_pos = y != negative_class
    n_pos, n_neg = int(is_pos.sum()), int((~is_pos).sum())
    warning = None
    if n_pos == 0:
        threshold = 0.5
        warning = "no positive (disease) case in the validation data; threshold falls back to 0.5"
    else:
        pos_sorted = np.sort(score[is_pos])[::-1]
        need = max(1, math.ceil(float(target_sensitivity) * n_pos - 1e-9))
        threshold = float(pos_sorted[need - 1])
        if n_neg == 0:
            warning = "no negative case in the validation data; specificity is undefined"
    rates = binary_rates(is_pos, score >= threshold)
    return {
        "threshold": float(threshold),
        "sensitivity": rates["sensitivity"],
        "specificity": rates["specificity"],
        "target_sensitivity": float(target_sensitivity),
        "n_positive": n_pos,
        "n_negative": n_neg,
        "warning": warning,
    }


def apply_threshold(probs: Any, threshold: Any, *, negative_class: int) -> np.ndarray:
    """Class predictions at an operating point, shape (N,).

    ``threshold`` is one number, or one per image (pooled cross-validation, where each
    image is called at its own fold's threshold).

    An image whose disease score is ``>= threshold`` is assigned the most probable
    disease class (for binary problems: the positive class); otherwise ``negative_class``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise BadInputError(f"probs must have shape (N, K) with K >= 2, got {p.shape}")
    if not 0 <= int(negative_class) < p.shape[1]:
        raise ConfigError(f"negative_class={negative_class} is not a class index")
    masked = p.copy()
    masked[:, negative_class] = -np.inf
    disease_class = masked.argmax(axis=1)
    called = disease_score(p, negative_class) >= np.asarray(threshold, dtype=np.float64)
    return np.where(called, disease_class, int(negative_class)).astype(np.int64)


def selection_record(
    chosen: dict[str, Any], *, chosen_on: str, rule: str | None = None
) -> dict[str, Any]:
    """How a threshold from :func:`choose_threshold` was chosen, as the report states it.

    ``chosen_on`` names the data the threshold was picked on (e.g. ``"val"``); the
    validation sensitivity/specificity are kept so a reader can compare them with test.
    """
    target = chosen.get("target_sensitivity")
    if chosen.get("threshold") is None and rule is None:
        rule = ARGMAX_NOTE + "; nothing was chosen on data"
    return {
        "rule": rule
        or f"largest disease-score threshold with sensitivity >= {target:g} on the {chosen_on} split",
        "target_sensitivity": target,
        "chosen_on": chosen_on,
        "n_positive": chosen.get("n_positive"),
        "n_negative": chosen.get("n_negative"),
        "sensitivity_on_chosen_split": chosen.get("sensitivity"),
        "specificity_on_chosen_split": chosen.get("specificity"),
        "warning": chosen.get("warning"),
    }


ALTERNATIVE_TARGETS = (0.90, 0.95, 0.99)


def alternative_thresholds(
    y_val: Any,
    probs_val: Any,
    *,
    negative_class: int,
    targets: Sequence[float] = ALTERNATIVE_TARGETS,
    chosen_on: str = "val",
) -> list[dict[str, Any]]:
    """Thresholds the package does NOT use, for the report's "Alternative operating points".

    One row per target sensitivity (chosen on ``chosen_on`` data exactly as the real
    operating point is) plus the plain 0.5 call, so a reader can see other trade-offs.
    Each row: ``name``, ``threshold``, ``rule``, ``chosen_on``, ``target_sensitivity`` and
    the sensitivity/specificity on the ``chosen_on`` data.
    """
    y, p = check_inputs(y_val, probs_val, negative_class=negative_class)
    score, is_pos = disease_score(p, negative_class), y != negative_class
    rows = []
    for target in targets:
        op = choose_threshold(y, p, negative_class=negative_class, target_sensitivity=float(target))
        rows.append(
            {
                "name": f"sensitivity >= {float(target):.2f}",
                "threshold": op["threshold"],
                "rule": selection_record(op, chosen_on=chosen_on)["rule"],
                "chosen_on": chosen_on,
                "target_sensitivity": float(target),
                "chosen_split_sensitivity": op["sensitivity"],
                "chosen_split_specificity": op["specificity"],
            }
        )
    half = binary_rates(is_pos, score >= 0.5)
    rows.append(
        {
            "name": "0.5 call",
            "threshold": 0.5,
            "rule": "fixed at 0.5 (disease score >= 0.5), not chosen on data",
            "chosen_on": None,
            "target_sensitivity": None,
            "chosen_split_sensitivity": half["sensitivity"],
            "chosen_split_specificity": half["specificity"],
        }
    )
    return rows


# --- the call of a package and the alternatives a report lists beside it ----------
ARGMAX_CALL = "argmax: each image gets its most probable class (no threshold)"
THRESHOLD_CALL = (
    "disease score = 1 - p(negative class); diseased when score >= threshold, then the most "
    "probable disease class"
)
ALTERNATIVES_NOTE = (
    "Alternatives for comparison only: the package does not use them. Every other number in "
    "this report is at the operating point."
)


def operating_call(
    p: np.ndarray, neg: int, threshold: Any
) -> tuple[np.ndarray, dict[str, Any]]:
    """The (N,) class call behind every thresholded metric, and how it is made."""
    n = p.shape[0]
    if threshold is None:
        return p.argmax(axis=1), {"threshold": None, "call": ARGMAX_CALL}
    thr = np.asarray(threshold, dtype=np.float64)
    if thr.ndim == 0:
        info = {"threshold": float(thr), "call": THRESHOLD_CALL}
    elif thr.shape == (n,):
        info = {
            "threshold": None,
            "threshold_range": [float(thr.min()), float(thr.max())],
            "call": THRESHOLD_CALL + "; each image at its own threshold",
        }
    else:
        raise BadInputError(f"threshold must be one number or one per image, got shape {thr.shape}")
    if not np.all(np.isfinite(thr)):
        raise ConfigError("threshold must be a finite number")
    return apply_threshold(p, thr, negative_class=neg), info


def two_by_two(rates: dict[str, Any]) -> dict[str, Any]:
    """The 2×2 confusion matrix (rows true, columns predicted) of :func:`binary_rates`."""
    return {
        "labels": ["negative", "disease"],
        "rows": "true",
        "columns": "predicted",
        "matrix": [[rates["tn"], rates["fp"]], [rates["fn"], rates["tp"]]],
    }


def alternative_points(
    is_pos: np.ndarray, score: np.ndarray, rows: list[dict[str, Any]] | None, threshold: Any
) -> dict[str, Any]:
    """Test metrics at thresholds the package does not use (see ``ALTERNATIVES_NOTE``).

    A row's ``threshold`` (and the operating ``threshold``) is one number, or one per image —
    pooled cross-validation calls each image at its own fold's threshold; such a row is written
    back with ``threshold`` ``None`` (the per-fold values are in each fold's ``metrics.json``).
    """
    rows = rows or [{"name": "0.5 call", "threshold": 0.5, "chosen_on": None,
                     "rule": "fixed at 0.5 (disease score >= 0.5), not chosen on data"}]
    op = None if threshold is None else np.asarray(threshold, dtype=np.float64)
    out = []
    for row in rows:
        t = np.asarray(row["threshold"], dtype=np.float64)
        rates = binary_rates(is_pos, score >= t)
        sens, spec = rates["sensitivity"], rates["specificity"]
        out.append(
            {
                **row,
                "threshold": float(t) if t.ndim == 0 else None,
                **{key: rates[key] for key in ("sensitivity", "specificity", "ppv", "npv")},
                "balanced_accuracy": None if sens is None or spec is None else (sens + spec) / 2,
                "same_as_operating_point": op is not None and bool(np.all(np.abs(t - op) < 1e-12)),
            }
        )
    return {"note": ALTERNATIVES_NOTE, "rows": out}
