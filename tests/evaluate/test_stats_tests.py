"""DeLong's AUC covariance and McNemar's test against hand-computed and published values."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.errors import BadInputError
from medlens.evaluate.stats_tests import delong, delong_covariance, mcnemar, mcnemar_from_counts


def _direct_covariance(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """DeLong (1988) by definition: the O(m·n) kernel psi and its structural components."""
    pos, neg = scores[:, y], scores[:, ~y]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    return np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]


def test_hand_computed_case() -> None:
    # positives 0.9, 0.6; negatives 0.5, 0.7: psi = [[1, 1], [1, 0]] → AUC 3/4,
    # V10 = [1, 1/2], V01 = [1, 1/2], each with variance 1/8 → var = 1/8/2 + 1/8/2 = 1/8
    aucs, cov = delong_covariance([1, 1, 0, 0], [0.9, 0.6, 0.5, 0.7])
    assert aucs[0] == pytest.approx(0.75) and cov[0, 0] == pytest.approx(0.125)


def test_fast_algorithm_equals_the_definition_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(60) < 0.4
    s = np.round(np.stack([y + rng.normal(0, 1, 60), y + rng.normal(0, 1.5, 60), rng.random(60)]), 1)  # ties
    aucs, cov = delong_covariance(y, s)
    np.testing.assert_allclose(cov, _direct_covariance(y, s), atol=1e-12)
    from sklearn.metrics import roc_auc_score

    np.testing.assert_allclose(aucs, [roc_auc_score(y, r) for r in s])


def test_variance_of_the_difference_matches_a_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    n = 400
    y = rng.random(n) < 0.5
    common = rng.normal(0, 1, n)  # correlated models, as two networks on the same images
    a = 1.2 * y + common + rng.normal(0, 0.6, n)
    b = 0.8 * y + common + rng.normal(0, 0.6, n)
    res = delong(y, a, b)
    from medlens.evaluate.bootstrap import weighted_auc

    idx = rng.integers(0, n, size=(2000, n))  # the same resampled cases for both models
    w = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(float)
    diffs = weighted_auc(a, y, w) - weighted_auc(b, y, w)
    assert res["se"] == pytest.approx(np.std(diffs), rel=0.15)
    assert res["cov"] > 0  # correlated: the paired test is sharper than two separate intervals
    assert res["difference"] > 0 and res["p_value"] < 0.05


def test_identical_models_and_bad_input() -> None:
    y = np.array([1, 0, 1, 0, 1])
    s = np.array([0.9, 0.2, 0.6, 0.4, 0.3])
    res = delong(y, s, s)
    assert res["p_value"] == 1.0 and res["z"] is None
    with pytest.raises(BadInputError, match="positive and negative"):
        delong([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])


def test_mcnemar_on_the_published_example() -> None:
    # Fagerland, Lydersen & Laake 2013 (BMC Med Res Methodol 13:91), Table 1: 1 and 7
    # discordant pairs → exact conditional p = 0.070, mid-p = 0.039
    res = mcnemar_from_counts(1, 7)
    assert res["p_exact"] == pytest.approx(0.0703, abs=5e-4)
    assert res["p_mid"] == pytest.approx(0.0391, abs=5e-4)
    assert mcnemar_from_counts(0, 0)["p_exact"] == 1.0


def test_mcnemar_table_from_decisions() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    a = np.array([1, 1, 0, 0, 0, 1, 1, 0])  # wrong on cases 2 and 5
    b = np.array([1, 0, 0, 0, 1, 0, 1, 0])  # wrong on cases 1, 2 and 4
    res = mcnemar(y, a, b)
    assert res["table"] == [[4, 2], [1, 1]] and (res["b"], res["c"]) == (2, 1)
