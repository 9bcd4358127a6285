"""The segmentation model card comes from the data; the report has the shared look, the
banner, integer counts and units."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from medlens.segment.card import describe_data, model_card
from medlens.segment.layouts import load_segmentation_dataset
from medlens.segment.report import write_report

META = {"task": "segment", "classes": ["background", "lesion"], "threshold": 0.5, "loss": "dice_bce",
        "postprocess": "none", "input": {"channels": 3, "spatial_dims": 2}, "preprocess": {"resize": 32}}
METRICS = {"split": "test", "patient_ids": ["A"], "patients": 1, "mean_dice": 0.8, "mean_hd95": 2.5}


def _card(index, splits, **metrics):
    meta = {**META, "data": describe_data(index, splits)}
    return model_card(meta, {**METRICS, **metrics}), meta["data"]


def test_card_of_kaggle_brain_mri_says_what_the_layout_fixes(kaggle_set):
    index = load_segmentation_dataset(kaggle_set)
    pats = sorted({r.patient for r in index.records})
    card, data = _card(index, {"train": pats[:2], "val": pats[2:3], "test": pats[3:]})
    assert data["modality"] == "MR" and data["channel_names"][1] == "FLAIR"
    assert "axial brain MRI" in card and "pre-contrast, FLAIR, post-contrast" in card
    assert "Patients: 4 (train 2, val 1, test 1); slices: 24 (train 12, val 6, test 6)" in card
    assert "layout `kaggle_3m`" in card and "TIFF" in card


def test_card_of_volumes_without_a_modality_claims_none(nifti_set):
    index = load_segmentation_dataset(nifti_set)
    pats = sorted({r.patient for r in index.records})
    card, data = _card(index, {"train": pats[:1], "val": pats[1:2], "test": pats[2:]},
                       units={"hd95": "mm", "volume": "mm³", "note": "spacing read from the files"})
    assert "FLAIR" not in card and "brain" not in card
    assert data["modality"] is None and "not recorded in the files" in card
    assert "NIfTI" in card and "volumes: 3 (train 1, val 1, test 1)" in card
    assert "Mean HD95: 2.500 mm (spacing read from the files)" in card


def _slices(spacing):
    rng = np.random.default_rng(0)
    n = 6
    masks = np.zeros((n, 1, 16, 16), np.uint8)
    masks[:, 0, 4:9, 4:9] = 1
    return SimpleNamespace(images=rng.integers(0, 255, (n, 3, 16, 16), dtype=np.uint8), masks=masks,
                           patients=np.array(["A"] * 3 + ["B"] * 3), slice_index=np.array([0, 1, 2] * 2),
                           spacing=spacing)


def _report(tmp_path, spacing, card=None):
    from medlens.segment.metrics import per_patient, summarise

    sl = _slices(spacing)
    probs = sl.masks[:, 0].astype(np.float32) * 0.9
    rows = {}
    for pid in ("A", "B"):
        sel = sl.patients == pid
        rows.update(per_patient(probs[sel] >= 0.5, sl.masks[sel, 0], sl.patients[sel], spacing=spacing.get(pid)))
    metrics = {"split": "test", **summarise(rows), "best_epoch": 1}
    hist = [{"epoch": e, "train_loss": 1 - 0.1 * e, "val_dice": 0.5 + 0.1 * e, "items_per_s": 90.0} for e in range(3)]
    path = write_report(tmp_path / "report.html", sl, probs, rows, metrics, history=hist, card=card)
    return path.read_text(encoding="utf-8")


def test_report_banner_integer_counts_and_units(tmp_path):
    html = _report(tmp_path, {"A": (3.0, 1.0, 1.0), "B": (3.0, 1.0, 1.0)},
                   card="# Model card\n\n- **Data**: `x`\n")
    assert "Not for clinical use" in html
    assert '<th>patients</th><td class="n">2</td>' in html and "2.000" not in html.split("Per patient")[0]
    assert "HD95 (mm)" in html and "true volume (mm³)" in html and "mean HD95</th><td class=\"n\">0.000 mm" in html
    assert "<h1>Model card</h1>" in html and "<pre>" not in html  # rendered, not pasted
    assert "Training curves" in html


def test_report_says_px_without_spacing(tmp_path):
    html = _report(tmp_path, {})
    assert "HD95 (px)" in html and "true volume (voxels)" in html and "no spacing in the files" in html
