"""LUNA16 FROC/CPM on hand-made detections whose answers are worked out by hand."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from medlens.ct.findings import Finding
from medlens.ct.froc import FP_RATES, evaluate_froc, froc_curve, match_scan, sensitivity_at
from medlens.errors import BadInputError


@dataclass(frozen=True)
class Nod:
    """Stand-in with the fields of ``medlens.ct.annotations.Nodule`` that FROC reads."""

    seriesuid: str
    center_xyz: tuple[float, float, float]
    diameter_mm: float


def fd(uid: str, xyz: tuple[float, float, float], p: float) -> Finding:
    return Finding(uid, xyz, (0.0, 0.0, 0.0), 6.0, p)


def test_hit_is_strictly_within_the_radius_in_mm():
    n = [Nod("s", (10.0, -20.0, 30.0), 10.0)]
    m = match_scan([fd("s", (14.9, -20.0, 30.0), 0.9), fd("s", (10.0, -20.0, 35.0), 0.8),
                    fd("s", (10.0, -23.0, 34.0), 0.7), fd("s", (10.0, -14.9, 30.0), 0.6)], n)
    # 4.9 mm: hit; exactly 5 mm: not (LUNA16 uses <); (0,3,4) is 5 mm: not; 5.1 mm: not
    assert m.status == ("tp", "fp", "fp", "fp")
    assert m.fp_probs == (0.8, 0.7, 0.6)
    assert m.nodule_best_prob == (0.9,) and m.finding_nodule == (0, None, None, None)


def test_duplicate_hits_of_one_nodule_count_once_with_the_best_probability():
    ref = {"s": [Nod("s", (0.0, 0.0, 0.0), 12.0)]}
    fs = [fd("s", (1.0, 0.0, 0.0), 0.3), fd("s", (0.0, 2.0, 0.0), 0.9), fd("s", (0.0, 0.0, -3.0), 0.5)]
    res = evaluate_froc(fs, ref)
    assert res.matches["s"].nodule_hits == (3,)
    assert res.n_detected == 1 and res.n_false_positives == 0
    assert res.nodules[0]["best_prob"] == 0.9 and res.nodules[0]["hits"] == 3
    # one curve step of one true positive, at 0.9; the duplicates add no point and no FP
    assert res.thresholds.tolist() == [np.inf, 0.9]
    assert res.sensitivity.tolist() == [0.0, 1.0] and res.fp_per_scan.tolist() == [0.0, 0.0]
    assert res.at_threshold(0.5) == {"threshold": 0.5, "true_positives": 1, "false_positives": 0,
                                     "n_nodules": 1, "n_scans": 1, "sensitivity": 1.0,
                                     "fp_per_scan": 0.0}
    assert res.at_threshold(0.95)["sensitivity"] == 0.0


def test_detections_on_irrelevant_nodules_are_neither_tp_nor_fp():
    ref = {"s": [Nod("s", (0.0, 0.0, 0.0), 8.0)]}
    excl = {"s": [Nod("s", (50.0, 0.0, 0.0), 2.0),     # < 3 mm mark: radius 1 mm
                  Nod("s", (0.0, 60.0, 0.0), -1.0)]}    # unknown diameter: LUNA16's 10 mm
    fs = [fd("s", (50.5, 0.0, 0.0), 0.99), fd("s", (0.0, 64.0, 0.0), 0.98),
          fd("s", (52.0, 0.0, 0.0), 0.97), fd("s", (1.0, 1.0, 1.0), 0.4)]
    res = evaluate_froc(fs, ref, excluded=excl)
    assert res.matches["s"].status == ("ignored", "ignored", "fp", "tp")
    assert res.n_nodules == 1 and res.n_false_positives == 1 and res.to_dict()["n_ignored"] == 2
    assert res.at_threshold(0.0)["false_positives"] == 1
    # without the exclusions the same two detections are false positives
    assert evaluate_froc(fs, ref).n_false_positives == 3


def test_a_reference_nodule_without_diameter_is_refused():
    with pytest.raises(BadInputError, match="no usable diameter"):
        match_scan([fd("s", (0.0, 0.0, 0.0), 0.5)], [Nod("s", (0.0, 0.0, 0.0), float("nan"))])


def _ref(n_scans: int = 3, per_scan: int = 2) -> dict[str, list[Nod]]:
    return {f"s{k}": [Nod(f"s{k}", (20.0 * j, 5.0 * k, -10.0), 6.0 + j) for j in range(per_scan)]
            for k in range(n_scans)}


def test_perfect_detector_has_cpm_1_and_no_detections_cpm_0():
    ref = _ref()
    perfect = [fd(u, n.center_xyz, 0.9) for u, ns in ref.items() for n in ns]
    res = evaluate_froc(perfect, ref)
    assert res.cpm == 1.0 and all(v == 1.0 for v in res.sensitivity_at.values())
    assert list(res.sensitivity_at) == list(FP_RATES)
    none = evaluate_froc([], ref)
    assert none.cpm == 0.0 and none.n_nodules == 6 and none.n_detected == 0
    assert [r["detected"] for r in none.nodules] == [False] * 6


def test_cpm_worked_by_hand_and_fp_per_scan_counts_scans_without_nodules():
    ref = {"a": [Nod("a", (0.0, 0.0, 0.0), 10.0)], "b": [Nod("b", (0.0, 0.0, 0.0), 10.0)]}
    fs = [fd("a", (0.0, 0.0, 1.0), 0.9), fd("c", (0.0, 0.0, 0.0), 0.8),
          fd("d", (0.0, 0.0, 0.0), 0.7), fd("b", (1.0, 0.0, 0.0), 0.6), fd("d", (9.0, 9.0, 9.0), 0.5)]
    # scans c and d have no nodules: 4 scans, the FP rate divides by 4
    res = evaluate_froc(fs, ref, seriesuids=["a", "b", "c", "d"])
    assert res.n_scans == 4
    assert res.fp_per_scan.tolist() == [0.0, 0.0, 0.25, 0.5, 0.5, 0.75]
    assert res.sensitivity.tolist() == [0.0, 0.5, 0.5, 0.5, 1.0, 1.0]
    assert res.sensitivity_at[0.125] == 0.5 and res.sensitivity_at[0.25] == 0.5
    assert res.sensitivity_at[0.5] == 1.0 and res.sensitivity_at[8.0] == 1.0
    assert res.cpm == pytest.approx(6 / 7)
    op = res.at_threshold(0.65)
    assert (op["true_positives"], op["false_positives"]) == (1, 2)
    assert op["sensitivity"] == 0.5 and op["fp_per_scan"] == 0.5
    # counting only the scans with nodules would double the FP rate: not what LUNA16 does
    assert evaluate_froc(fs, ref, seriesuids="abcd").fp_per_scan[-1] == 0.75


def test_interpolation_between_points_is_linear():
    fps = np.array([0.0, 0.0, 2.0])
    sens = np.array([0.0, 0.5, 1.0])
    assert sensitivity_at(fps, sens, (1.0, 0.5, 8.0)).tolist() == [0.75, 0.625, 1.0]


def _random_case(seed: int, n_scans: int = 7):
    rng = np.random.default_rng(seed)
    ref = {f"s{k}": [Nod(f"s{k}", tuple(rng.uniform(-100, 100, 3)), float(rng.uniform(4, 20)))
                     for _ in range(int(rng.integers(0, 3)))] for k in range(n_scans)}
    fs = []
    for u, ns in ref.items():
        for n in ns:
            if rng.random() < 0.7:
                fs.append(fd(u, tuple(np.add(n.center_xyz, rng.normal(0, 1, 3))), float(rng.random())))
        fs += [fd(u, tuple(rng.uniform(-100, 100, 3)), float(rng.random()))
               for _ in range(int(rng.integers(0, 12)))]
    return ref, fs


def test_froc_is_monotone_and_matches_the_luna16_formula():
    from sklearn.metrics import roc_curve

    ref, fs = _random_case(1)
    res = evaluate_froc(fs, ref)
    assert np.all(np.diff(res.thresholds) < 0)
    assert np.all(np.diff(res.sensitivity) >= 0) and np.all(np.diff(res.fp_per_scan) >= 0)
    assert 0 < res.cpm < 1
    # LUNA16's computeFROC: ROC over (hit nodules' best prob, FPs), rescaled
    tp = [p for m in res.matches.values() for p in m.nodule_best_prob if p is not None]
    fp = [p for m in res.matches.values() for p in m.fp_probs]
    fpr, tpr, _ = roc_curve([1] * len(tp) + [0] * len(fp), tp + fp, drop_intermediate=False)
    fps, sens = fpr * len(fp) / res.n_scans, tpr * len(tp) / res.n_nodules
    itp = np.interp(np.asarray(FP_RATES), fps, sens)
    assert res.cpm == pytest.approx(float(np.mean(itp)), abs=1e-12)


def test_bootstrap_ci_over_scans_brackets_the_cpm_and_is_reproducible():
    ref, fs = _random_case(2, n_scans=12)
    a = evaluate_froc(fs, ref, n_boot=200, seed=3)
    b = evaluate_froc(fs, ref, n_boot=200, seed=3)
    assert a.cpm_ci == b.cpm_ci and a.ci_level == 0.95
    lo, hi = a.cpm_ci
    assert 0 <= lo <= a.cpm <= hi <= 1 and hi > lo
    json.dumps(a.to_dict())  # JSON-ready


def test_weighted_curve_equals_the_curve_of_duplicated_items():
    scores, tp = np.array([0.9, 0.4, 0.7, 0.4]), np.array([True, False, True, True])
    w = np.array([[2.0, 1.0, 0.0, 1.0]])
    _, s_w, f_w = froc_curve(scores, tp, np.array([3.0]), 2, w)
    thr, s, f = froc_curve(np.array([0.9, 0.9, 0.4, 0.4]), np.array([True, True, False, True]), 3, 2)
    # the weight-0 item at 0.7 leaves a point equal to its predecessor; the rest coincide
    assert s_w[0][2] == s_w[0][1] and f_w[0][2] == f_w[0][1]
    keep = [0, 1, 3]
    assert np.allclose(s_w[0][keep], s) and np.allclose(f_w[0][keep], f) and thr[-1] == 0.4


def test_findings_of_a_scan_not_evaluated_are_refused():
    ref = _ref(1)
    with pytest.raises(BadInputError, match="s9"):
        evaluate_froc([fd("s9", (0.0, 0.0, 0.0), 0.5)], ref, seriesuids=["s0"])
    with pytest.raises(BadInputError, match="at least one scan"):
        evaluate_froc([], {})
