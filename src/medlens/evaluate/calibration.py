"""Calibration: top-label ECE, reliability curves and temperature scaling.

A model that says "90 % pneumonia" should be right about 90 % of the time. Deep nets
are usually over-confident; temperature scaling (Guo et al., 2017) divides the logits by
one scalar ``T`` fitted on validation data, which fixes much of this without changing
any prediction's rank (accuracy and AUC are unchanged).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.errors import BadInputError
from medlens.evaluate.operating_point import check_inputs


def _bins(probs: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    if int(n_bins) < 1:
        raise BadInputError(f"n_bins must be >= 1, got {n_bins}")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    # bins are (lo, hi]; a confidence of exactly 0 goes to the first bin
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct, minlength=n_bins)
    return edges, count, sum_conf, sum_acc


def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = 15) -> float:
    """Top-label ECE: ``sum_b (n_b / N) * |accuracy_b - confidence_b|`` over equal-width bins."""
    y, p = check_inputs(y_true, probs)
    _, _, sum_conf, sum_acc = _bins(p, y, n_bins)
    return float(np.sum(np.abs(sum_acc - sum_conf)) / len(y))


def reliability_curve(y_true: Any, probs: Any, n_bins: int = 15) -> dict[str, list[Any]]:
    """Per-bin mean confidence, accuracy and count for a reliability diagram.

    Empty bins have ``None`` confidence and accuracy.
    """
    y, p = check_inputs(y_true, probs)
    edges, count, sum_conf, sum_acc = _bins(p, y, n_bins)
    nz = count > 0
    conf = np.where(nz, sum_conf / np.maximum(count, 1), np.nan)
    acc = np.where(nz, sum_acc / np.maximum(count, 1), np.nan)
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "confidence": [None if np.isnan(v) else float(v) for v in conf],
        "accuracy": [None if np.isnan(v) else float(v) for v in acc],
        "count": [int(c) for c in count],
    }


def _check_logits(logits: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise BadInputError(f"{what} must have shape (N, K) with K >= 2, got {z.shape}")
    if not np.all(np.isfinite(z)):
        raise BadInputError(f"{what} contains NaN or infinite values")
    yy, _ = check_inputs(y, np.zeros_like(z))
    return z, yy


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)``, shape (N, K)."""
    t = float(temperature)
    if not t > 0:
        raise BadInputError(f"temperature must be > 0, got {temperature}")
    return np.exp(_log_softmax(np.asarray(logits, dtype=np.float64) / t))


def nll(logits: Any, y: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``y`` under ``softmax(logits / T)``."""
    z, yy = _check_logits(logits, y, "logits")
    lp = _log_softmax(z / float(temperature))
    return float(-lp[np.arange(len(yy)), yy].mean())


def fit_temperature(logits_val: Any, y_val: Any) -> float:
    """Fit ``T`` minimising validation NLL (L-BFGS-B over ``log T``, T in [0.05, 20])."""
    from scipy.optimize import minimize

    z, y = _check_logits(logits_val, y_val, "logits_val")
    rows = np.arange(len(y))
    zy = z[rows, y]

    def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
        t = float(np.exp(v[0]))
        lp = _log_softmax(z / t)
        loss = float(-lp[rows, y].mean())
        # d loss / dT = mean(z_y - sum_k softmax_k z_k) / T^2 ; chain rule for log T
        expected = (np.exp(lp) * z).sum(axis=1)
        grad_t = float(np.mean(zy - expected)) / t**2
        return loss, np.array([grad_t * t])

    res = minimize(
        objective,
        x0=np.array([0.0]),
        jac=True,
        method="L-BFGS-B",
        bounds=[(np.log(0.05), np.log(20.0))],
    )
    return float(np.exp(res.x[0]))


def calibration_summary(
    logits_val: Any,
    y_val: Any,
    logits_test: Any,
    y_test: Any,
    *,
    n_bins: int = 15,
) -> dict[str, Any]:
    """Fit ``T`` on validation logits; report test ECE/NLL before and after scaling.

    Returns ``{"temperature", "ece", "ece_after_temperature", "nll",
    "nll_after_temperature", "n_bins", "reliability", "reliability_after_temperature"}``.
    """
    t = fit_temperature(logits_val, y_val)
    z, y = _check_logits(logits_test, y_test, "logits_test")
    before = apply_temperature(z, 1.0)
    after = apply_temperature(z, t)
    return {
        "temperature": t,
        "ece": expected_calibration_error(y, before, n_bins),
        "ece_after_temperature": expected_calibration_error(y, after, n_bins),
        "nll": nll(z, y, 1.0),
        "nll_after_temperature": nll(z, y, t),
        "n_bins": int(n_bins),
        "reliability": reliability_curve(y, before, n_bins),
        "reliability_after_temperature": reliability_curve(y, after, n_bins),
    }
