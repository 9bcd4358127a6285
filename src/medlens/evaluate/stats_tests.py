"""Paired significance tests for comparing two models on the same cases.

* :func:`delong` — DeLong, DeLong & Clarke-Pearson (1988) covariance of correlated ROC
  AUCs, computed with the fast midrank algorithm of Sun & Xu (2014, IEEE Signal
  Processing Letters 21:1389): ``O(k·N log N)`` for ``k`` models instead of the
  ``O(N²)`` pairwise kernel. scipy has no DeLong test, so it is written here; the tests
  check it against a hand-computed case and a paired bootstrap.
* :func:`mcnemar` — McNemar's test on the discordant pairs of two models' decisions:
  the exact conditional binomial p-value and the mid-p value, which Fagerland, Lydersen
  & Laake (2013, BMC Med Res Methodol 13:91) recommend (the exact test is conservative).

Both assume independent cases. Images of one patient are not independent: with
image-level cases the patient bootstrap of :mod:`medlens.evaluate.compare` is the
interval to trust; with patient-level cases (one score per patient) they are exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.errors import BadInputError


def _check_binary(y_true: Any, n: int) -> np.ndarray:
    y = np.asarray(y_true).astype(bool).ravel()
    if y.shape[0] != n:
        raise BadInputError(f"y_true has {y.shape[0]} cases but the scores have {n}")
    if y.all() or not y.any():
        raise BadInputError("DeLong's test needs positive and negative cases")
    return y


def delong_covariance(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for ``k`` models scored on the same cases.

    Args:
        y_true: (N,) truth, positive = True/1.
        scores: (k, N) or (N,) scores, higher = more likely positive.

    Returns:
        ``(aucs (k,), covariance (k, k))``. Ties count one half (Mann-Whitney).
    """
    from scipy.stats import rankdata

    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = _check_binary(y_true, s.shape[1])
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    tx = rankdata(pos, axis=1)  # midranks within the positives
    ty = rankdata(neg, axis=1)  # … within the negatives
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # … over all cases
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n  # structural component of each positive: P(score > a negative)
    v01 = 1.0 - (tz[:, m:] - ty) / m  # … of each negative: P(a positive > score)
    sx = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(s), len(s)))
    sy = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(s), len(s)))
    return aucs, sx / m + sy / n


def delong(y_true: Any, scores_a: Any, scores_b: Any) -> dict[str, Any]:
    """DeLong's test of ``AUC(a) = AUC(b)`` on the same cases (two-sided).

    Returns:
        ``{"auc_a", "auc_b", "difference", "se", "z", "p_value", "var_a", "var_b", "cov"}``;
        ``p_value`` is 1 (``z`` ``None``) when the two score vectors rank every pair alike
        (zero variance of the difference).
    """
    from scipy.stats import norm

    aucs, cov = delong_covariance(y_true, np.stack([np.asarray(scores_a, float), np.asarray(scores_b, float)]))
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if var <= 1e-15:
        z, p = None, 1.0
    else:
        z = diff / np.sqrt(var)
        p = float(2 * norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": diff,
            "se": float(np.sqrt(max(var, 0.0))), "z": None if z is None else float(z), "p_value": p,
            "var_a": float(cov[0, 0]), "var_b": float(cov[1, 1]), "cov": float(cov[0, 1])}


def mcnemar_from_counts(b: int, c: int) -> dict[str, Any]:
    """McNemar's test from the discordant counts ``b`` (only a right) and ``c`` (only b right).

    Returns:
        ``{"b", "c", "n_discordant", "p_exact", "p_mid"}``: the exact conditional
        (binomial, two-sided) p-value and the mid-p value; both 1 without discordant pairs.
    """
    from scipy.stats import binom, binomtest

    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise BadInputError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "n_discordant": 0, "p_exact": 1.0, "p_mid": 1.0}
    exact = float(binomtest(b, n, 0.5).pvalue)
    low = min(b, c)
    mid = 2.0 * (float(binom.cdf(low, n, 0.5)) - 0.5 * float(binom.pmf(low, n, 0.5)))
    return {"b": b, "c": c, "n_discordant": n, "p_exact": min(exact, 1.0), "p_mid": min(mid, 1.0)}


def mcnemar(y_true: Any, decisions_a: Any, decisions_b: Any) -> dict[str, Any]:
    """McNemar's test of equal accuracy of two models' decisions on the same cases.

    Args:
        y_true: (N,) truth (disease = True).
        decisions_a, decisions_b: (N,) calls (disease = True) at each model's operating point.

    Returns:
        :func:`mcnemar_from_counts` plus ``table`` ``[[both right, only a right],
        [only b right, both wrong]]``.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    ra = np.asarray(decisions_a).astype(bool).ravel() == y
    rb = np.asarray(decisions_b).astype(bool).ravel() == y
    if not ra.shape == rb.shape == y.shape:
        raise BadInputError("y_true and both decision vectors must have the same length")
    b, c = int(np.sum(ra & ~rb)), int(np.sum(~ra & rb))
    out = mcnemar_from_counts(b, c)
    out["table"] = [[int(np.sum(ra & rb)), b], [c, int(np.sum(~ra & ~rb))]]
    return out
