"""End-to-end audit on a tiny set with planted problems."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medlens.audit import quick_audit, read_exclude_list, run_audit
from medlens.data.records import DatasetIndex, Record
from tests.audit.conftest import patch, save, tree_hashes


def _groups_with(section: dict, path: str) -> list[dict]:
    return [g for g in section["groups"] if path in g["paths"]]


def test_planted_problems_all_found_and_files_untouched(planted: dict, tmp_path: Path) -> None:
    plant, recs = planted["plant"], planted["records"]
    before = tree_hashes(planted["root"])
    out = tmp_path / "report"
    res = run_audit(planted["index"], out_dir=out, exclude_list=tmp_path / "exclude.txt")
    assert tree_hashes(planted["root"]) == before  # never touches a user file

    unreadable = {u["path"]: u["reason"] for u in res.files["unreadable"]}
    assert set(unreadable) == {plant["truncated"], plant["zero"]}
    assert "zero-byte" in unreadable[plant["zero"]]
    assert [m["path"] for m in res.files["extension_mismatch"]] == [plant["mismatch"]]

    exact = res.duplicates["exact"]
    assert exact["n_groups"] == 3
    (g_copy,) = _groups_with(exact, plant["copy"])
    assert g_copy["kinds"] == ["within_class"] and recs[0].path in g_copy["paths"]
    (g_conf,) = _groups_with(exact, plant["conflict"])
    assert "label_conflict" in g_conf["kinds"] and recs[1].path in g_conf["paths"]
    (g_leak,) = _groups_with(exact, plant["leak"])
    assert {"across_splits", "across_patients"} <= set(g_leak["kinds"])

    near = res.duplicates["near"]
    assert near["n_groups"] == 2  # nothing else among 30 random images
    assert {recs[3].path, plant["jpeg"]} == set(_groups_with(near, plant["jpeg"])[0]["paths"])
    assert {recs[4].path, plant["shift"]} == set(_groups_with(near, plant["shift"])[0]["paths"])

    text = " ".join(res.blocking)
    assert "different labels" in text and "several official splits" in text
    assert len(res.blocking) == 2  # 2 unreadable of 39 is a warning, not blocking

    listed = read_exclude_list(tmp_path / "exclude.txt")
    assert listed == {plant["truncated"], plant["zero"], plant["copy"], plant["leak"],
                      plant["conflict"], recs[1].path}  # fmt: skip
    data = json.loads((out / "audit.json").read_text())
    assert data["blocking"] == res.blocking and data["summary"]["n_unreadable"] == 2
    html = (out / "audit.html").read_text()
    assert "data:image/png;base64," in html and "<style>" in html
    assert "http://" not in html and "https://" not in html  # self-contained
    assert res.thumbnails  # flagged files got thumbnails
    assert res.to_json()["summary"]["n_records"] == len(recs)


def test_quick_audit_same_blocking_fewer_checks(planted: dict) -> None:
    res = quick_audit(planted["index"])
    assert len(res.blocking) == 2
    assert res.shortcut["status"] == "skipped" and "near" not in res.duplicates
    assert len(res.files["unreadable"]) == 2


def test_majority_unreadable_blocks(tmp_path: Path) -> None:
    recs = []
    for i in range(4):
        p = tmp_path / f"bad{i}.png"
        p.write_bytes(b"not an image at all")
        recs.append(Record(str(p), label=i % 2))
    recs.append(Record(save(tmp_path / "ok.png", patch(np.random.default_rng(1))), label=0))
    res = quick_audit(DatasetIndex(root=str(tmp_path), layout="t", classes=["a", "b"], records=recs))
    assert any("cannot be read" in b for b in res.blocking)
    assert all("not a readable image" in u["reason"] for u in res.files["unreadable"])


def test_size_shortcut_is_flagged(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    recs = []
    for i in range(60):
        label = i % 2
        size = 40 if label else 32  # the planted shortcut: class 1 is scanned larger
        recs.append(Record(save(tmp_path / f"{i}.png", patch(rng, size)), label=label, patient=f"p{i % 12}"))
    index = DatasetIndex(root=str(tmp_path), layout="t", classes=["a", "b"], records=recs)
    res = run_audit(index, max_thumbnails=0)
    sc = res.shortcut
    assert sc["status"] == "ok" and sc["grouped_by_patient"]
    assert sc["groups"]["size_and_file"]["auc"] > 0.95
    assert sc["top_features"][0]["feature"] in ("width", "height", "megapixels", "file_kb")
    assert any("predictable without looking at the pathology" in w for w in res.warnings)
    # colour carries no signal here
    assert sc["groups"]["colour"]["auc"] < 0.75


def test_patient_confounding_and_split_leakage(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    recs = []
    for i in range(40):
        label = int(i >= 8)  # class 0 only from patients q0, q1; class 1 from 8 patients
        patient = f"q{i % 2}" if label == 0 else f"r{i % 8}"
        split = "test" if patient == "r0" else "train"
        recs.append(Record(save(tmp_path / f"{i}.png", patch(rng, 24)), label=label, patient=patient, split=split))
    recs.append(Record(save(tmp_path / "x.png", patch(rng, 24)), label=1, patient="r0", split="train"))
    index = DatasetIndex(root=str(tmp_path), layout="t", classes=["healthy", "ill"], records=recs)
    res = quick_audit(index)
    conf = res.confounding
    assert conf["per_class"]["healthy"]["n_patients"] == 2 and conf["per_class"]["ill"]["n_patients"] == 8
    assert any("'healthy' comes from only 2 of 10 patients" in w for w in res.warnings)
    assert not any("'ill'" in w for w in res.warnings)
    assert conf["patients_in_several_splits"] == {"r0": ["test", "train"]}
    assert any("more than one official split" in b for b in res.blocking)


def test_outlier_found_with_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    recs = [Record(save(tmp_path / f"{i}.png", patch(rng)), label=i % 2) for i in range(30)]
    dark = np.full((48, 48, 3), 3, np.uint8)
    recs.append(Record(save(tmp_path / "dark.png", dark), label=0))
    res = run_audit(DatasetIndex(root=str(tmp_path), layout="t", classes=["a", "b"], records=recs))
    paths = [o["path"] for o in res.outliers["items"]]
    assert paths[0] == str(tmp_path / "dark.png")
    assert any(r.startswith("brightness") for r in res.outliers["items"][0]["reasons"])
    assert res.summary["n_near_blank"] == 1  # no perceptual hash for a blank image


def test_volumes_header_only_and_array_index(tmp_path: Path) -> None:
    import SimpleITK as sitk

    vol = sitk.GetImageFromArray(np.random.default_rng(6).integers(0, 100, (4, 8, 9)).astype(np.int16))
    vol.SetSpacing((0.7, 0.7, 2.5))
    good = tmp_path / "v.nii.gz"
    sitk.WriteImage(vol, str(good))
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    recs = [Record(str(good), label=0), Record(str(bad), label=1)]
    res = run_audit(DatasetIndex(root=str(tmp_path), layout="t", classes=["a", "b"], records=recs))
    assert res.summary["n_volumes"] == 1 and res.summary["n_readable"] == 1
    assert [u["path"] for u in res.files["unreadable"]] == [str(bad)]
    assert res.table[0, 0] == 9 and res.table[0, 1] == 8  # width, height from the header

    arr = np.random.default_rng(7).integers(0, 255, (12, 28, 28), dtype=np.uint8)
    arr[5] = arr[2]
    src = str(tmp_path / "m.npz")
    recs = [Record(f"{src}#train/{i}", label=i % 2, split="train") for i in range(12)]
    index = DatasetIndex(root=src, layout="medmnist", classes=["a", "b"], records=recs, arrays={src: {"train": arr}})
    res = run_audit(index, max_thumbnails=4)
    (g,) = res.duplicates["exact"]["groups"]
    assert g["paths"] == [recs[2].path, recs[5].path] and g["kinds"] == ["label_conflict"]


def test_bad_options_raise(planted: dict) -> None:
    from medlens.errors import ConfigError

    with pytest.raises(ConfigError, match="near-threshold"):
        run_audit(planted["index"], near_threshold=64)


def test_mixed_channels_and_depths_are_reported(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(8)
    recs = [Record(save(tmp_path / f"{i}.png", patch(rng, 24)), label=i % 2) for i in range(6)]
    grey = tmp_path / "grey16.png"
    Image.fromarray(np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 90).save(grey)
    recs.append(Record(str(grey), label=0))
    res = quick_audit(DatasetIndex(root=str(tmp_path), layout="t", classes=["a", "b"], records=recs))
    assert res.summary["channels"] == {"3": 6, "1": 1} and res.summary["bit_depths"] == {"8": 6, "16": 1}
    assert any("Inconsistent channel counts" in w for w in res.warnings)
    assert any("Inconsistent bit depths" in w for w in res.warnings)
