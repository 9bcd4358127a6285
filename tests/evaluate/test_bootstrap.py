"""Patient-clustered bootstrap: intervals honest about correlated images of one patient."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medlens.evaluate import classification_metrics
from medlens.evaluate.bootstrap import bootstrap_cis, cluster_codes


def _clustered(n_patients: int = 20, per: int = 30, seed: int = 0):
    """Every image of a patient shares the patient's label and a score offset."""
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(n_patients) % 2, per)
    offset = np.repeat(rng.normal(0, 1.2, n_patients), per)
    logit = 1.0 * label + offset + rng.normal(0, 0.2, n_patients * per)
    s = 1 / (1 + np.exp(-logit))
    patients = [f"p{i}" for i in np.repeat(np.arange(n_patients), per)]
    return label, np.stack([1 - s, s], axis=1), patients


def _width(band: dict) -> float:
    return band["high"] - band["low"]


def test_patient_bootstrap_is_wider_than_image_bootstrap() -> None:
    y, p, patients = _clustered()
    kw = dict(negative_class=0, threshold=0.5, n_bootstrap=400, seed=1)
    by_patient = classification_metrics(y, p, ["normal", "x"], patients=patients, **kw)
    by_image = classification_metrics(y, p, ["normal", "x"], **kw)
    cp, ci = by_patient["ci"], by_image["ci"]
    assert (cp["unit"], cp["n_units"], cp["n_patients"]) == ("patient", 20, 20)
    assert (ci["unit"], ci["n_units"]) == ("image", 600)
    assert "20 patients" in cp["method"] and "600 images" in ci["method"]
    for key in ("roc_auc", "sensitivity", "specificity", "ppv", "npv"):
        assert _width(cp[key]) > 2 * _width(ci[key]), key
        assert cp[key]["low"] <= by_patient[key] <= cp[key]["high"], key


def test_without_patient_ids_falls_back_to_images() -> None:
    y, p, _ = _clustered(seed=2)
    kw = dict(negative_class=0, threshold=0.5, n_bootstrap=200, seed=3)
    none_known = classification_metrics(y, p, ["n", "x"], patients=[None] * len(y), **kw)
    no_column = classification_metrics(y, p, ["n", "x"], **kw)
    assert none_known["ci"]["unit"] == "image"
    assert none_known["ci"]["roc_auc"] == no_column["ci"]["roc_auc"]
    assert none_known["ci"]["ppv"] == no_column["ci"]["ppv"]


def test_images_without_id_are_their_own_units() -> None:
    codes, n_units, kind, lone = cluster_codes(["a", "a", None, "b", "", "b"], 6)
    assert kind == "patient" and n_units == 4 and lone == 2
    assert codes[0] == codes[1] and codes[3] == codes[5] and len({codes[2], codes[4]}) == 2


def test_ppv_npv_auc_cis_match_resampling_patients_by_hand() -> None:
    """The vectorised patient bootstrap equals copying drawn patients' images (same draws)."""
    y, p, patients = _clustered(n_patients=8, per=5, seed=4)
    pred = (p[:, 1] >= 0.5).astype(int)
    b = 40
    got = bootstrap_cis(y, p, pred, 0, clusters=patients, n_bootstrap=b, seed=9, level=0.8,
                        stratified=False)
    unit, n_units, _, _ = cluster_codes(patients, len(y))
    draws = np.random.default_rng(9).integers(0, n_units, size=(b, n_units))
    vals: dict[str, list[float]] = {"ppv": [], "npv": [], "roc_auc": []}
    for draw in draws:
        idx = np.concatenate([np.flatnonzero(unit == u) for u in draw])
        yy, cc = y[idx] == 1, pred[idx] == 1
        if cc.any():
            vals["ppv"].append(np.mean(yy[cc]))
        if (~cc).any():
            vals["npv"].append(np.mean(~yy[~cc]))
        if 0 < yy.mean() < 1:
            vals["roc_auc"].append(roc_auc_score(yy, p[idx, 1]))
    for key, v in vals.items():
        lo, hi = np.quantile(v, [0.1, 0.9])
        assert (got[key]["low"], got[key]["high"]) == pytest.approx((lo, hi)), key


def test_one_negative_patient_gives_no_specificity_interval() -> None:
    """One patient holds every negative image: its spread is not a between-patient interval."""
    rng = np.random.default_rng(5)
    y = np.array([1] * 40 + [0] * 20)
    s = np.clip(0.6 * y + rng.uniform(0, 0.5, 60), 0, 1)
    patients = [f"d{i % 4}" for i in range(40)] + ["healthy"] * 20
    m = classification_metrics(y, np.stack([1 - s, s], 1), ["normal", "x"], negative_class=0,
                               threshold=0.5, patients=patients, n_bootstrap=200)
    ci = m["ci"]
    assert ci["specificity"] is None and ci["roc_auc"] is None and ci["npv"] is None
    assert "only 1 patients with negative images" in ci["not_estimable"]["specificity"]
    assert ci["sensitivity"] is not None and "rough" in ci["method"]
