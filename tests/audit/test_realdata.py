"""The audit on the real data sets in ../shared/data (skipped when absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlens.audit import quick_audit, read_exclude_list, run_audit
from tests.audit.conftest import jpeg_roundtrip, shift1, tree_hashes

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
IDC = DATA / "idc_breast_histopathology"
ISIC = DATA / "isic_skin_lesions"

pytestmark = pytest.mark.realdata


def _need(p: Path) -> None:
    if not p.is_dir():
        pytest.skip(f"real data {p} not found")


def _load(path: Path, **kw):
    from medlens.data.layouts import load_dataset

    return load_dataset(path, **kw)


def test_idc_patient_class_confound_is_flagged() -> None:
    _need(IDC)
    index = _load(IDC)
    res = quick_audit(index.subset(index.records[::4]))  # every 4th patch: same patients, 4x faster
    neg = res.confounding["per_class"]["0"]
    assert neg["n_patients"] == 4 and neg["patients"] == ["8863", "8864", "8865", "8913"]
    assert res.confounding["per_class"]["1"]["n_patients"] == 16  # 8913 has negatives only
    assert any("Class '0' comes from only 4 of 17 patients" in w for w in res.warnings)
    assert res.summary["n_unreadable"] == 0 and not res.blocking


def test_isic_reports_whether_size_or_colour_predicts_label() -> None:
    _need(ISIC)
    res = run_audit(_load(ISIC), max_thumbnails=0)
    sc = res.shortcut
    assert sc["status"] == "ok" and sc["n_samples"] == 150
    size_auc, colour_auc = sc["groups"]["size_and_file"]["auc"], sc["groups"]["colour"]["auc"]
    # measured: size/file/compression 0.81 (JPEG quantisation and file size lead), colour 0.72
    assert size_auc > 0.7 and 0.5 <= colour_auc <= 1
    warned = any("predictable without looking at the pathology" in w for w in res.warnings)
    assert warned == (max(v["auc"] for v in sc["groups"].values()) >= sc["threshold"])
    assert {f["feature"] for f in sc["top_features"][:3]} & {"jpeg_quant", "file_kb", "bits_per_pixel_file"}
    assert res.stats["malignant"]["width"]["n"] == 75


def test_idc_copy_with_planted_problems_all_found(tmp_path: Path) -> None:
    _need(IDC)
    src = sorted(IDC.glob("*/*/*.png"))[::21][:300]  # ~300 patches from all patients, both classes
    root = tmp_path / "idc"
    for f in src:
        dst = root / f.relative_to(IDC)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
    full = [f for f in src if Image.open(f).size == (50, 50)]
    a, b, c, d, e = full[10], full[40], full[70], full[100], full[130]

    def plant_path(orig: Path, cls: str, tag: str) -> Path:
        pid = orig.parts[-3]
        p = root / pid / cls / f"{pid}_idx5_x9{tag}_y9{tag}_class{cls}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    exact = plant_path(a, a.parts[-2], "1")
    shutil.copyfile(a, exact)
    conflict = plant_path(b, "1" if b.parts[-2] == "0" else "0", "2")
    shutil.copyfile(b, conflict)
    near_j = plant_path(c, c.parts[-2], "3")
    Image.fromarray(jpeg_roundtrip(np.asarray(Image.open(c).convert("RGB")), 80)).save(near_j)
    near_s = plant_path(d, d.parts[-2], "4")
    Image.fromarray(shift1(np.asarray(Image.open(d).convert("RGB")))).save(near_s)
    corrupt = plant_path(e, e.parts[-2], "5")
    corrupt.write_bytes(e.read_bytes()[:300])
    before = tree_hashes(root)

    index = _load(root, layout="idc")
    res = run_audit(index, out_dir=tmp_path / "rep", exclude_list=tmp_path / "ex.txt")
    assert tree_hashes(root) == before
    assert [u["path"] for u in res.files["unreadable"]] == [str(corrupt)]
    groups = {frozenset(g["paths"]): g["kinds"] for g in res.duplicates["exact"]["groups"]}

    def cp(p: Path) -> str:  # the copy's path of an original file
        return str(root / p.relative_to(IDC))

    assert set(groups) == {frozenset({cp(a), str(exact)}), frozenset({cp(b), str(conflict)})}
    assert "label_conflict" in groups[frozenset({cp(b), str(conflict)})]
    near = {frozenset(g["paths"]) for g in res.duplicates["near"]["groups"]}
    assert near == {frozenset({cp(c), str(near_j)}), frozenset({cp(d), str(near_s)})}
    assert any("different labels" in x for x in res.blocking)
    assert read_exclude_list(tmp_path / "ex.txt") == {str(corrupt), str(exact), cp(b), str(conflict)}
