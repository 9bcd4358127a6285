"""Metrics, operating point, calibration and patient aggregation on hand-checkable data."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from medlens.errors import BadInputError, ConfigError
from medlens.evaluate import (
    alternative_thresholds,
    apply_temperature,
    apply_threshold,
    calibration_summary,
    choose_threshold,
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    guess_negative_class,
    patient_metrics,
    reliability_curve,
    selection_record,
)
from medlens.evaluate.bootstrap import weighted_auc

# 4 positives, 6 negatives; p(positive) chosen so every count can be checked by hand
Y10 = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
S10 = np.array([0.9, 0.8, 0.4, 0.6, 0.3, 0.2, 0.7, 0.1, 0.45, 0.55])
P10 = np.stack([1 - S10, S10], axis=1)


def _binary(n: int, seed: int = 0, sep: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + sep * y, 0.2), 0, 1)
    return y, np.stack([1 - s, s], axis=1)


def _multiclass(n: int, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), y] += 1.0
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return y, p


def test_ten_sample_binary_by_hand() -> None:
    m = classification_metrics(Y10, P10, ["normal", "pneumonia"], negative_class=0, n_bootstrap=200)
    # no threshold → the argmax call: TP=3 (0.9,0.8,0.6) FN=1 (0.4) FP=2 (0.7,0.55) TN=4
    assert m["operating_point"]["threshold"] is None
    assert "argmax" in m["operating_point"]["call"]
    assert m["confusion_matrix"]["matrix"] == [[4, 2], [1, 3]]
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["ppv"] == pytest.approx(3 / 5)
    assert m["npv"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(6 / 9)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    # 20 of 24 positive/negative pairs are ordered correctly
    assert m["roc_auc"] == pytest.approx(20 / 24)
    assert m["roc_auc_disease"] == pytest.approx(20 / 24)
    pc = {r["class"]: r for r in m["per_class"]}
    assert pc["pneumonia"]["precision"] == pytest.approx(3 / 5)
    assert pc["pneumonia"]["recall"] == pytest.approx(3 / 4)
    assert pc["normal"]["specificity"] == pytest.approx(3 / 4)
    assert pc["normal"]["support"] == 6
    assert m["counts"] == {"n": 10, "per_class": [6, 4], "n_positive": 4, "n_negative": 6}
    json.dumps(m, allow_nan=False)  # strict JSON: no NaN/inf anywhere
    assert len(m["roc_curve"]["fpr"]) == len(m["roc_curve"]["tpr"]) <= 200


def test_ten_sample_at_threshold_every_number_uses_it() -> None:
    m = classification_metrics(
        Y10, P10, ["normal", "pneumonia"], negative_class=0, threshold=0.4, n_bootstrap=200
    )
    # score >= 0.4: all 4 positives, negatives 0.7/0.55/0.45 → TP=4 FN=0 FP=3 TN=3
    op = m["operating_point"]
    assert op["threshold"] == 0.4 and op["confusion_matrix"]["matrix"] == [[3, 3], [0, 4]]
    assert m["confusion_matrix"]["matrix"] == [[3, 3], [0, 4]]  # the K×K matrix agrees
    for mm in (m, op):
        assert (mm["sensitivity"], mm["specificity"]) == (1.0, 0.5)
        assert mm["ppv"] == pytest.approx(4 / 7) and mm["npv"] == 1.0
        assert mm["accuracy"] == pytest.approx(0.7)
        assert mm["balanced_accuracy"] == pytest.approx(0.75)
        assert mm["f1"] == pytest.approx(8 / 11)
    pc = {r["class"]: r for r in m["per_class"]}
    assert pc["pneumonia"]["recall"] == 1.0 and pc["pneumonia"]["precision"] == pytest.approx(4 / 7)
    assert pc["normal"]["recall"] == 0.5
    assert "given by the caller" in op["selection"]["rule"]
    # the CIs are of the thresholded call too, and contain its point estimates
    for key in ("sensitivity", "specificity", "ppv", "npv"):
        band = m["ci"][key]
        assert band == op["ci"][key] and band["low"] <= m[key] <= band["high"], key
    alt = m["alternative_operating_points"]
    assert "not use" in alt["note"] and [r["threshold"] for r in alt["rows"]] == [0.5]
    # 0.5 call: TP=3 (0.9,0.8,0.6) FP=2 (0.7,0.55)
    assert alt["rows"][0]["sensitivity"] == 0.75 and alt["rows"][0]["ppv"] == pytest.approx(3 / 5)
    assert alt["rows"][0]["same_as_operating_point"] is False


def test_alternatives_are_chosen_on_validation_and_marked() -> None:
    op = choose_threshold(Y10, P10, negative_class=0, target_sensitivity=0.95)
    rows = alternative_thresholds(Y10, P10, negative_class=0, targets=(0.75, 0.95))
    m = classification_metrics(
        Y10, P10, ["normal", "x"], negative_class=0, threshold=op["threshold"],
        selection=selection_record(op, chosen_on="val"), alternatives=rows, n_bootstrap=0,
    )
    got = m["alternative_operating_points"]["rows"]
    assert [r["name"] for r in got] == ["sensitivity >= 0.75", "sensitivity >= 0.95", "0.5 call"]
    assert [r["threshold"] for r in got] == pytest.approx([0.6, 0.4, 0.5])
    assert [r["same_as_operating_point"] for r in got] == [False, True, False]
    assert got[0]["specificity"] == pytest.approx(5 / 6) and got[0]["chosen_on"] == "val"
    sel = m["operating_point"]["selection"]
    assert sel["chosen_on"] == "val" and sel["target_sensitivity"] == 0.95
    assert "sensitivity >= 0.95" in sel["rule"]


def test_per_image_thresholds_multiclass_call() -> None:
    p = np.array([[0.5, 0.2, 0.3], [0.9, 0.06, 0.04], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    y = np.array([2, 0, 1, 0])
    m = classification_metrics(
        y, p, ["normal", "a", "b"], negative_class=0, threshold=[0.4, 0.4, 0.9, 0.6],
        n_bootstrap=0,
    )
    # calls: 2 (0.5>=0.4), 0, 0 (0.8<0.9), 2 (0.7>=0.6)
    assert m["confusion_matrix"]["matrix"] == [[1, 0, 1], [1, 0, 0], [0, 0, 1]]
    assert m["operating_point"]["threshold"] is None
    assert m["operating_point"]["threshold_range"] == [0.4, 0.9]
    with pytest.raises(BadInputError, match="one per image"):
        classification_metrics(y, p, ["n", "a", "b"], negative_class=0, threshold=[0.4, 0.5])


def test_negative_class_one_flips_disease_but_keeps_medmnist_auc() -> None:
    m = classification_metrics(Y10, P10, ["tumour", "normal"], negative_class=1, n_bootstrap=0)
    # disease is now class 0: truth y==0 (6), argmax call pred==0 (5: TN of before)
    assert m["sensitivity"] == pytest.approx(4 / 6)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(Y10, S10))
    assert m["roc_auc_disease"] == pytest.approx(roc_auc_score(Y10 == 0, 1 - S10))
    assert m["ci"] is None


def test_multiclass_auc_matches_sklearn_ovr_macro_and_medmnist() -> None:
    y, p = _multiclass(600, k=4, seed=1)
    m = classification_metrics(y, p, ["normal", "a", "b", "c"], negative_class=0, n_bootstrap=0)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    medmnist = np.mean([roc_auc_score(y == c, p[:, c]) for c in range(4)])
    assert m["roc_auc"] == pytest.approx(medmnist)
    assert np.array(m["confusion_matrix"]["matrix"]).sum() == 600
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))
    assert [r["class"] for r in m["per_class"]] == ["normal", "a", "b", "c"]


def test_binary_auc_is_medmnist_definition() -> None:
    y, p = _binary(500, seed=2)
    m = classification_metrics(y, p, ["0", "1"], negative_class=0, n_bootstrap=0)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p[:, -1]))


def test_weighted_auc_equals_sklearn_on_resampled_data_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    s = np.round(rng.random(80), 1)  # many ties
    w = rng.integers(0, 4, size=(5, 80)).astype(float)
    got = weighted_auc(s, y == 1, w)
    for b in range(5):
        idx = np.repeat(np.arange(80), w[b].astype(int))
        assert got[b] == pytest.approx(roc_auc_score(y[idx], s[idx]))


def test_bootstrap_ci_contains_estimate_narrows_and_is_seeded() -> None:
    widths = []
    for n in (200, 5000):
        y, p = _binary(n, seed=4)
        m = classification_metrics(
            y, p, ["normal", "x"], negative_class=0, threshold=0.5, n_bootstrap=300, seed=7
        )
        for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc"):
            band = m["ci"][key]
            assert band["low"] <= m[key] <= band["high"], key
        op_band = m["operating_point"]["ci"]["sensitivity"]
        assert op_band["low"] <= m["operating_point"]["sensitivity"] <= op_band["high"]
        widths.append(m["ci"]["roc_auc"]["high"] - m["ci"]["roc_auc"]["low"])
    assert widths[1] < widths[0] / 2
    again = classification_metrics(y, p, ["normal", "x"], negative_class=0, n_bootstrap=300, seed=7)
    assert again["ci"]["roc_auc"] == m["ci"]["roc_auc"]
    plain = classification_metrics(
        y, p, ["normal", "x"], negative_class=0, n_bootstrap=300, stratified=False
    )
    assert "plain" in plain["ci"]["method"]


def test_bootstrap_is_fast() -> None:
    y, p = _binary(10_000, seed=5)
    t0 = time.perf_counter()
    classification_metrics(y, p, ["normal", "x"], negative_class=0, threshold=0.5)
    # measured ~0.3 s on an idle 2-core machine; the bound leaves room for a busy one
    assert time.perf_counter() - t0 < 8.0


def test_undefined_metrics_are_null_with_reason() -> None:
    y = np.zeros(8, dtype=int)
    p = np.tile([0.7, 0.3], (8, 1))
    m = classification_metrics(
        y,
        p,
        ["normal", "x"],
        negative_class=0,
        threshold=0.5,
        patients=list("aabbccdd"),
        n_bootstrap=50,
    )
    assert m["roc_auc"] is None and "one class" in m["undefined"]["roc_auc"]
    assert m["sensitivity"] is None and "sensitivity" in m["undefined"]
    assert m["roc_curve"] is None
    assert m["ci"]["roc_auc"] is None and m["ci"]["accuracy"] is not None
    assert m["patient_level"]["roc_auc"] is None
    json.dumps(m, allow_nan=False)
    # multi-class with an absent class: mean over the others, reason given
    y3, p3 = _multiclass(90, k=3, seed=6)
    y3[y3 == 2] = 1
    m3 = classification_metrics(y3, p3, ["n", "a", "b"], negative_class=0, n_bootstrap=20)
    expected = np.mean([roc_auc_score(y3 == c, p3[:, c]) for c in (0, 1)])
    assert m3["roc_auc"] == pytest.approx(expected)
    assert "absent" in m3["undefined"]["roc_auc"]


def test_bad_inputs_raise() -> None:
    with pytest.raises(BadInputError):
        classification_metrics(Y10[:5], P10, ["a", "b"], negative_class=0)
    with pytest.raises(BadInputError):
        classification_metrics(Y10, P10, ["a", "b", "c"], negative_class=0)
    with pytest.raises(ConfigError):
        classification_metrics(Y10, P10, ["a", "b"], negative_class=2)
    with pytest.raises(BadInputError):
        classification_metrics(Y10, P10 * np.nan, ["a", "b"], negative_class=0)
    with pytest.raises(ConfigError):
        choose_threshold(Y10, P10, negative_class=0, target_sensitivity=1.5)


def test_choose_threshold_by_hand_and_largest() -> None:
    op = choose_threshold(Y10, P10, negative_class=0, target_sensitivity=0.95)
    assert op["threshold"] == pytest.approx(0.4) and op["sensitivity"] == 1.0
    assert op["specificity"] == pytest.approx(0.5) and op["warning"] is None
    op = choose_threshold(Y10, P10, negative_class=0, target_sensitivity=0.75)
    assert op["threshold"] == pytest.approx(0.6)
    assert op["sensitivity"] == 0.75 and op["specificity"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_choose_threshold_is_largest_reaching_target(seed: int, target: float) -> None:
    y, p = _multiclass(300, k=3, seed=seed)
    op = choose_threshold(y, p, negative_class=0, target_sensitivity=target)
    score, pos = 1 - p[:, 0], y != 0
    assert np.mean(score[pos] >= op["threshold"]) >= target
    higher = np.unique(score[score > op["threshold"]])
    assert all(np.mean(score[pos] >= t) < target for t in higher)


def test_choose_threshold_fallbacks() -> None:
    op = choose_threshold(np.zeros(5, int), np.tile([0.6, 0.4], (5, 1)), negative_class=0)
    assert op["threshold"] == 0.5 and op["sensitivity"] is None and op["warning"]
    op = choose_threshold(np.ones(5, int), np.tile([0.6, 0.4], (5, 1)), negative_class=0)
    assert op["specificity"] is None and op["sensitivity"] == 1.0 and op["warning"]


def test_apply_threshold_multiclass() -> None:
    p = np.array([[0.5, 0.2, 0.3], [0.9, 0.06, 0.04], [0.2, 0.7, 0.1]])
    assert apply_threshold(p, 0.4, negative_class=0).tolist() == [2, 0, 1]
    assert apply_threshold(p, 0.9, negative_class=0).tolist() == [0, 0, 0]


def test_guess_negative_class() -> None:
    assert guess_negative_class(["pneumonia", "normal"]) == 1
    assert guess_negative_class(["IDC", "No IDC"]) == 1
    assert guess_negative_class(["melanoma", "Nevus", "bcc"]) == 1
    assert guess_negative_class(["1", "0"]) == 1
    assert guess_negative_class(["cat", "dog"]) == 0


def test_ece_hand_case_and_calibrated_data() -> None:
    y = np.array([0, 1] * 50)
    p = np.tile([0.8, 0.2], (100, 1))  # confidence 0.8, accuracy 0.5
    assert expected_calibration_error(y, p) == pytest.approx(0.3)
    rng = np.random.default_rng(8)
    conf = rng.uniform(0.5, 1.0, 40_000)
    correct = rng.random(40_000) < conf
    y = np.where(correct, 0, 1)
    p = np.stack([conf, 1 - conf], axis=1)
    assert expected_calibration_error(y, p) < 0.015
    curve = reliability_curve(y, p, n_bins=10)
    assert sum(curve["count"]) == 40_000 and curve["confidence"][0] is None


def test_temperature_scaling_fixes_overconfidence() -> None:
    rng = np.random.default_rng(9)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        z = rng.normal(size=(n, 3)) * 1.5
        pz = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        y = np.array([rng.choice(3, p=row) for row in pz])
        return 3.0 * z, y  # logits 3x too sharp

    zv, yv = draw(3000)
    zt, yt = draw(3000)
    t = fit_temperature(zv, yv)
    assert 2.5 < t < 3.5
    before = expected_calibration_error(yt, apply_temperature(zt, 1.0))
    after = expected_calibration_error(yt, apply_temperature(zt, t))
    assert after < before / 2
    summary = calibration_summary(zv, yv, zt, yt)
    assert summary["ece_after_temperature"] < summary["ece"]
    assert summary["nll_after_temperature"] < summary["nll"]
    m = classification_metrics(
        yt,
        apply_temperature(zt, 1.0),
        ["n", "a", "b"],
        negative_class=0,
        n_bootstrap=0,
        logits=zt,
        val_logits=zv,
        val_y=yv,
    )
    assert m["calibration"]["temperature"] == pytest.approx(t)


def test_patient_aggregation_mean_max_topk() -> None:
    y = np.array([1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.8])
    p = np.stack([1 - s, s], axis=1)
    pats = ["A", "A", "A", "B", "B", None]
    rows = {}
    for agg in ("mean", "max", "topk"):
        r = patient_metrics(y, p, pats, negative_class=0, aggregate=agg, k=2)
        rows[agg] = {row["patient"]: row for row in r["table"]}
        assert r["n_patients"] == 2 and r["n_images_without_patient"] == 1
    assert rows["mean"]["A"]["score"] == pytest.approx(0.4)
    assert rows["max"]["A"]["score"] == pytest.approx(0.9)
    assert rows["topk"]["A"]["score"] == pytest.approx(0.55)
    assert rows["mean"]["B"]["score"] == pytest.approx(0.35)
    assert rows["mean"]["A"]["n_images"] == 3 and rows["mean"]["A"]["true"] == 1
    r = patient_metrics(y, p, pats, negative_class=0, aggregate="max")
    assert r["sensitivity"] == 1.0 and r["specificity"] == 1.0 and r["roc_auc"] == 1.0
    r = patient_metrics(y, p, pats, negative_class=0, aggregate="mean")
    assert r["sensitivity"] == 0.0 and r["balanced_accuracy"] == 0.5
    assert r["table"][0]["correct"] is False
    r = patient_metrics(y, p, pats, negative_class=0, truth="majority")
    assert r["n_positive"] == 0 and r["sensitivity"] is None and r["roc_auc"] is None
    r = patient_metrics(y, p, ["p10", "p2", "p2", "x", "p1", "p10"], negative_class=0)
    assert [row["patient"] for row in r["table"]] == ["p1", "p2", "p10", "x"]
    with pytest.raises(ConfigError, match="Did you mean"):
        patient_metrics(y, p, pats, negative_class=0, aggregate="maxx")
