"""Synthetic generators: exact layouts, determinism, and a class signal set by ``difficulty``."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medlens.data.synthetic import (
    GENERATORS,
    make_blood_like,
    make_dataset,
    make_dermoscopy_like,
    make_idc_like,
)
from medlens.errors import BadInputError, ConfigError
from medlens.io import read_image

IDC_NAME = re.compile(r"^(\d{4,5})_idx5_x(\d+)_y(\d+)_class([01])\.png$")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _dark_fraction(img: np.ndarray, thr: float) -> float:
    """Share of dark (nuclear) pixels: a crude hand-crafted malignancy feature."""
    return float((img.astype(np.float32).mean(-1) < thr).mean())


def _bright_colour(img: np.ndarray) -> np.ndarray:
    """Mean colour of the brightest quarter of pixels: background, i.e. mostly stain/lamp."""
    px = img.reshape(-1, 3).astype(np.float32)
    grey = px.mean(1)
    return px[grey >= np.quantile(grey, 0.75)].mean(0)


def _max_channel_auc(y: np.ndarray, feats: np.ndarray) -> float:
    """Best single-channel AUC, folded so 0.5 = no signal and 1 = perfect (either sign)."""
    return max(max(a, 1 - a) for a in (roc_auc_score(y, f) for f in feats.T))


# ---------------------------------------------------------------- IDC histology


def _idc(root: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    files = sorted(root.glob("*/*/*.png"))
    imgs = [read_image(f) for f in files]
    labels = np.array([int(f.parent.name) for f in files])
    patients = np.array([f.parent.parent.name for f in files])
    return imgs, labels, patients


def test_idc_layout_names_and_counts(tmp_path: Path) -> None:
    root = make_idc_like(tmp_path / "idc", patients=3, patches_per_patient=12, seed=5)
    assert root == tmp_path / "idc"
    pngs = sorted(root.rglob("*.png"))
    assert len(pngs) == 36
    assert {p.name for p in root.iterdir()} == {p.parent.parent.name for p in pngs}
    for p in pngs:
        m = IDC_NAME.match(p.name)
        assert m, p.name
        assert m.group(1) == p.parent.parent.name  # patient id in the name = folder
        assert m.group(4) == p.parent.name  # class in the name = folder
        assert (int(m.group(2)) - 1) % 50 == 0 and (int(m.group(3)) - 1) % 50 == 0
    for patient in root.iterdir():
        assert 8800 <= int(patient.name) < 17000
        assert sorted(c.name for c in patient.iterdir()) == ["0", "1"]  # both classes
        coords = [IDC_NAME.match(p.name).group(2, 3) for p in patient.rglob("*.png")]
        assert len(set(coords)) == len(coords) == 12
    img = read_image(pngs[0])
    assert img.shape == (50, 50, 3) and img.dtype == np.uint8


def test_idc_size_and_single_class_patients(tmp_path: Path) -> None:
    root = make_idc_like(
        tmp_path, patients=4, patches_per_patient=5, size=32, single_class_fraction=1.0
    )
    for patient in root.iterdir():
        assert len(list(patient.iterdir())) == 1  # one class folder only
    assert read_image(next(root.rglob("*.png"))).shape == (32, 32, 3)


def test_idc_determinism(tmp_path: Path) -> None:
    a = _files(make_idc_like(tmp_path / "a", patients=2, patches_per_patient=6, seed=3))
    b = _files(make_idc_like(tmp_path / "b", patients=2, patches_per_patient=6, seed=3))
    c = _files(make_idc_like(tmp_path / "c", patients=2, patches_per_patient=6, seed=4))
    assert a == b
    assert a != c


@pytest.fixture(scope="module")
def idc_aucs(tmp_path_factory: pytest.TempPathFactory) -> dict[float, tuple[float, float]]:
    """Dark-fraction AUC and folded per-patient stain AUC at three difficulties."""
    out = {}
    for diff in (0.0, 0.5, 1.0):
        root = make_idc_like(
            tmp_path_factory.mktemp(f"idc{diff}"),
            patients=8,
            patches_per_patient=40,
            difficulty=diff,
            seed=1,
        )
        imgs, y, pat = _idc(root)
        dark = np.array([_dark_fraction(i, 130) for i in imgs])
        stain = {
            p: np.mean([_bright_colour(i) for i, q in zip(imgs, pat) if q == p], 0)
            for p in set(pat)
        }
        out[diff] = (roc_auc_score(y, dark), _max_channel_auc(y, np.array([stain[p] for p in pat])))
    return out


def test_idc_signal_follows_difficulty(idc_aucs: dict[float, tuple[float, float]]) -> None:
    easy, default, hard = (idc_aucs[d][0] for d in (0.0, 0.5, 1.0))
    assert easy > 0.97
    assert 0.65 < default < easy - 0.05
    assert hard < default - 0.1 and hard < 0.7


def test_idc_stain_does_not_give_the_label(idc_aucs: dict[float, tuple[float, float]]) -> None:
    # Every patient has both classes and stain is drawn per patient: colour alone is weak.
    assert all(idc_aucs[d][1] < 0.75 for d in idc_aucs)


# ---------------------------------------------------------------- blood smears


def _blood(root: Path) -> tuple[dict[str, str], list[np.ndarray], np.ndarray, np.ndarray]:
    with (root / "patients.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    labels = {r["patient"]: r["label"] for r in rows}
    imgs, y, pat = [], [], []
    for p, lab in labels.items():
        for f in sorted((root / p).glob("*.png")):
            imgs.append(read_image(f))
            y.append(lab != "healthy")
            pat.append(p)
    return labels, imgs, np.array(y), np.array(pat)


def test_blood_layout_and_patient_csv(tmp_path: Path) -> None:
    root = make_blood_like(tmp_path, patients_per_class=2, cells_per_patient=5, size=48, seed=2)
    text = (root / "patients.csv").read_text()
    assert text.splitlines()[0] == "patient,label"
    labels, imgs, _, _ = _blood(root)
    assert sorted(labels.values()) == ["AML", "AML", "APL", "APL", "healthy", "healthy"]
    assert all(re.fullmatch(r"P\d{4}", p) for p in labels)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == sorted(labels)
    for p in folders:
        names = sorted(f.name for f in (root / p).iterdir())
        assert names == [f"cell_{i:03d}.png" for i in range(5)]
    assert len(imgs) == 30 and imgs[0].shape == (48, 48, 3)


def test_blood_determinism(tmp_path: Path) -> None:
    kw = {"patients_per_class": 1, "cells_per_patient": 3}
    a = _files(make_blood_like(tmp_path / "a", seed=7, **kw))
    b = _files(make_blood_like(tmp_path / "b", seed=7, **kw))
    c = _files(make_blood_like(tmp_path / "c", seed=8, **kw))
    assert a == b and a != c


def test_blood_signal_follows_difficulty(tmp_path: Path) -> None:
    aucs, stain_aucs = {}, {}
    for diff in (0.0, 0.5, 1.0):
        root = make_blood_like(
            tmp_path / str(diff),
            patients_per_class=3,
            cells_per_patient=20,
            difficulty=diff,
            seed=3,
        )
        labels, imgs, y, pat = _blood(root)
        aucs[diff] = roc_auc_score(y, [_dark_fraction(i, 140) for i in imgs])
        ids = sorted(labels)
        bg = np.array(
            [np.mean([_bright_colour(i) for i, q in zip(imgs, pat) if q == p], 0) for p in ids]
        )
        stain_aucs[diff] = _max_channel_auc(np.array([labels[p] != "healthy" for p in ids]), bg)
    assert aucs[0.0] > 0.97
    assert 0.65 < aucs[0.5] < aucs[0.0] - 0.05
    assert aucs[1.0] < aucs[0.5] - 0.1
    # 9 patients only, so a loose bound: background colour must not separate the classes.
    assert max(stain_aucs.values()) < 0.95


# ---------------------------------------------------------------- dermoscopy


def _abcd(img: np.ndarray) -> np.ndarray:
    """Crude ABCD-rule features: colour spread inside the lesion, asymmetry, border, size."""
    import cv2

    x = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(x, cv2.COLOR_RGB2LAB).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    rr = np.hypot(yy - 31.5, xx - 31.5)
    skin = np.median(lab[(rr > 22) & (rr < 27)], 0)
    mask = (np.linalg.norm(lab - skin, axis=-1) > 20) & (rr < 28)
    if mask.sum() < 10:
        return np.zeros(6)
    px = lab[mask]
    cy, cx = yy[mask].mean(), xx[mask].mean()
    flipped = cv2.warpAffine(
        mask.astype(np.float32), np.float32([[-1, 0, 2 * cx], [0, -1, 2 * cy]]), (64, 64)
    )
    cnts, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    c = max(cnts, key=cv2.contourArea)
    border = cv2.arcLength(c, True) ** 2 / (4 * np.pi * max(cv2.contourArea(c), 1.0))
    return np.array([*px.std(0), np.abs(flipped - mask).sum() / mask.sum(), border, mask.mean()])


def _derm(root: Path) -> tuple[list[dict[str, str]], list[np.ndarray]]:
    with (root / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows, [read_image(root / "images" / f"{r['image']}.jpg") for r in rows]


def test_dermoscopy_layout_and_labels(tmp_path: Path) -> None:
    root = make_dermoscopy_like(tmp_path, n=30, size=96, seed=4)
    rows, imgs = _derm(root)
    header = (root / "labels.csv").read_text().splitlines()[0]
    assert header == "image,benign_malignant,diagnosis,patient_id"
    assert len(rows) == 30 == len(list((root / "images").iterdir()))
    assert all(re.fullmatch(r"ISIC_\d{7}", r["image"]) for r in rows)
    assert all(re.fullmatch(r"IP_\d{7}", r["patient_id"]) for r in rows)
    assert {(r["benign_malignant"], r["diagnosis"]) for r in rows} == {
        ("benign", "nevus"),
        ("malignant", "melanoma"),
    }
    assert sum(r["benign_malignant"] == "malignant" for r in rows) == 15
    per_patient = np.unique([r["patient_id"] for r in rows], return_counts=True)[1]
    assert per_patient.max() >= 2 and len(per_patient) < 30  # some patients have several lesions
    sides = np.array([i.shape[:2] for i in imgs])
    assert sides.min() >= round(0.9 * 96) and sides.max() <= round(1.16 * 96)
    assert len(set(map(tuple, sides))) > 5  # sizes vary…
    y = np.array([r["benign_malignant"] == "malignant" for r in rows])
    assert 0.2 < roc_auc_score(y, sides.prod(1)) < 0.8  # …but do not give the label
    assert imgs[0].dtype == np.uint8 and imgs[0].shape[2] == 3


def test_dermoscopy_determinism(tmp_path: Path) -> None:
    a = _files(make_dermoscopy_like(tmp_path / "a", n=4, size=64, seed=1))
    b = _files(make_dermoscopy_like(tmp_path / "b", n=4, size=64, seed=1))
    c = _files(make_dermoscopy_like(tmp_path / "c", n=4, size=64, seed=2))
    assert a == b and a != c


def test_dermoscopy_signal_follows_difficulty(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    aucs = {}
    for diff in (0.0, 0.5, 1.0):
        rows, imgs = _derm(
            make_dermoscopy_like(tmp_path / str(diff), n=60, size=128, difficulty=diff, seed=3)
        )
        y = np.array([r["benign_malignant"] == "malignant" for r in rows])
        feats = np.stack([_abcd(i) for i in imgs])
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        aucs[diff] = roc_auc_score(
            y, cross_val_predict(model, feats, y, cv=5, method="predict_proba")[:, 1]
        )
    assert aucs[0.0] > 0.9
    assert 0.6 < aucs[0.5] < aucs[0.0]
    assert aucs[1.0] < aucs[0.5] - 0.1


# ---------------------------------------------------------------- registry and errors


def test_make_dataset_dispatches_and_checks_kind(tmp_path: Path) -> None:
    assert set(GENERATORS) >= {"idc", "blood", "dermoscopy"}
    root = make_dataset("IDC", tmp_path / "x", patients=1, patches_per_patient=2)
    assert len(list(root.rglob("*.png"))) == 2
    with pytest.raises(ConfigError, match="dermoscopy"):
        make_dataset("dermoscpy", tmp_path / "y")


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "user_file.txt").write_text("keep me")
    with pytest.raises(BadInputError, match="not empty"):
        make_idc_like(tmp_path / "full", patients=1, patches_per_patient=2)
    assert (tmp_path / "full" / "user_file.txt").read_text() == "keep me"
    make_idc_like(tmp_path / "full", patients=1, patches_per_patient=2, overwrite=True)
    with pytest.raises(ValueError, match="difficulty"):
        make_blood_like(tmp_path / "a", difficulty=1.5)
    with pytest.raises(ValueError, match="patients"):
        make_idc_like(tmp_path / "b", patients=0)
    with pytest.raises(TypeError, match="n must be an integer"):
        make_dermoscopy_like(tmp_path / "c", n=2.5)  # type: ignore[arg-type]
