"""On real data: a fingerprint of a few IDC patients' patches passes other IDC patients'
patches and flags an LGG MRI slice, a LIDC CT DICOM slice and an ISIC dermoscopy photo."""

from __future__ import annotations

import numpy as np

from medlens.data.fingerprint import check, compute_fingerprint, file_stats

TRAIN_PATIENTS = ("8863", "8864", "8913", "8950", "8956", "8980", "9022")


def test_idc_fingerprint_on_real_data(shared_data):
    idc = sorted((shared_data / "idc_breast_histopathology").glob("*/*/*.png"))
    train = [p for p in idc if p.parts[-3] in TRAIN_PATIENTS]
    held = [p for p in idc if p.parts[-3] not in TRAIN_PATIENTS]
    rng = np.random.default_rng(0)
    fp = compute_fingerprint([file_stats(train[i]) for i in rng.choice(len(train), 200, replace=False)],
                             modality="histopathology (H&E)")
    sample = [held[i] for i in rng.choice(len(held), 300, replace=False)]
    flagged = [p for p in sample if check(file_stats(p), fp).ood]
    assert len({p.parts[-3] for p in sample}) >= 8  # patients the fingerprint never saw
    assert len(flagged) <= 3, flagged  # measured on all 2,690 held-out patches: 0 flagged

    lgg = next((shared_data / "lgg_brain_mri").glob("*/*_10.tif"))
    ct = sorted((shared_data / "lidc_lung_ct").rglob("*.dcm"))[60]
    isic = sorted((shared_data / "isic_skin_lesions" / "images").glob("*.jpg"))[0]
    reasons = {p.suffix: check(file_stats(p), fp).reasons for p in (lgg, ct, isic)}
    assert all(reasons.values()), reasons
    assert any(r.startswith("size 256×256") for r in reasons[".tif"])
    assert "modality CT, trained on histopathology (H&E)" in reasons[".dcm"]
    assert "16-bit input, trained on 8-bit" in reasons[".dcm"] and "1 channel, trained on 3" in reasons[".dcm"]
    assert any(r.startswith("size ") for r in reasons[".jpg"])
