"""Dataset layouts: detection, indexing, problems, and the real IDC/ISIC copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlens.data.layouts import LAYOUTS, detect_layout, list_layouts, load_dataset
from medlens.errors import BadInputError, ConfigError


def png(path: Path, value: int = 0, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def test_registry_lists_all_layouts():
    assert list_layouts() == ["aplaml", "csv", "idc", "imagefolder", "medmnist", "patient_table"]
    for name in list_layouts():
        entry = LAYOUTS.get(name)
        assert callable(entry.detect) and callable(entry.load)


# ------------------------------------------------------------------ imagefolder


def test_imagefolder_classes_counts_and_empty_class(tmp_path):
    for i in range(3):
        png(tmp_path / "normal" / f"n{i}.png")
    png(tmp_path / "cancer" / "c0.PNG")
    png(tmp_path / "cancer" / "sub" / "c1.jpg")  # nested files belong to the class
    (tmp_path / "cancer" / "notes.txt").write_text("not an image")
    png(tmp_path / "cancer" / ".hidden.png")
    (tmp_path / "empty_class").mkdir()
    png(tmp_path / "stray.png")
    ix = load_dataset(tmp_path)
    assert ix.layout == "imagefolder"
    # two classes, the "normal" (negative) one first; the empty class is dropped
    assert ix.classes == ["normal", "cancer"]
    assert ix.class_counts() == {"normal": 3, "cancer": 2}
    assert [r.path for r in ix.records] == sorted(r.path for r in ix.records)
    assert not ix.has_official_splits
    reasons = {Path(p.path).name: (p.reason, p.severity) for p in ix.problems}
    assert "empty class folder" in reasons["empty_class"][0]
    assert "class dropped" in reasons["empty_class"][0]
    assert reasons["empty_class"][1] == "warning"
    assert "not in a class folder" in reasons["stray.png"][0]
    assert not any(".hidden" in r.path or r.path.endswith(".txt") for r in ix.records)


def test_imagefolder_with_split_folders(tmp_path):
    for split in ("train", "val", "test"):
        for cls in ("a", "b"):
            png(tmp_path / split / cls / f"{split}_{cls}.png")
    (tmp_path / "test" / "c").mkdir()
    ix = load_dataset(tmp_path)
    assert ix.has_official_splits
    assert ix.classes == ["a", "b"]
    assert ix.class_counts("val") == {"a": 1, "b": 1}
    assert {r.split for r in ix.records} == {"train", "val", "test"}
    assert any("empty class folder" in p.reason for p in ix.problems)


def test_positive_labels_make_a_binary_task(tmp_path):
    for cls in ("bacterial", "normal", "viral"):
        png(tmp_path / cls / "x.png")
    ix = load_dataset(tmp_path, positive_labels=["bacterial", "Viral"])
    assert ix.classes == ["normal", "positive"]
    labels = {r.meta["raw_label"]: r.label for r in ix.records}
    assert labels == {"bacterial": 1, "normal": 0, "viral": 1}
    with pytest.raises(ConfigError, match="Did you mean"):
        load_dataset(tmp_path, positive_labels=["virla"])


# ------------------------------------------------------------------ IDC


def test_idc_layout_patients_labels_and_mismatches(tmp_path):
    png(tmp_path / "8863" / "0" / "8863_idx5_x1_y51_class0.png")
    png(tmp_path / "8863" / "1" / "8863_idx5_x101_y51_class1.png")
    png(tmp_path / "8863" / "1" / "9999_idx5_x5_y5_class1.png")  # patient disagrees
    png(tmp_path / "8864" / "0" / "8864_idx5_x7_y9_class1.png")  # class disagrees
    png(tmp_path / "8864" / "1" / "odd_name.png")
    (tmp_path / "README.md").write_text("ignored")
    assert detect_layout(tmp_path) == "idc"
    ix = load_dataset(tmp_path)
    assert ix.layout == "idc" and ix.classes == ["0", "1"]
    assert len(ix) == 5 and {r.patient for r in ix} == {"8863", "8864"}
    rec = next(r for r in ix if r.path.endswith("x101_y51_class1.png"))
    assert (rec.label, rec.meta) == (1, {"x": 101, "y": 51})
    by_name = {Path(p.path).name: p for p in ix.problems}
    assert "patient 9999" in by_name["9999_idx5_x5_y5_class1.png"].reason
    assert "class 1" in by_name["8864_idx5_x7_y9_class1.png"].reason
    assert all(p.severity == "warning" for p in ix.problems)
    # label and patient come from the folders
    assert next(r for r in ix if "9999" in r.path).patient == "8863"
    assert next(r for r in ix if "x7_y9" in r.path).label == 0
    assert ix.info["class_names"] == {"0": "no IDC", "1": "IDC"}


# ------------------------------------------------------------------ CSV


def test_csv_manifest_with_patients_splits_and_missing_row(tmp_path):
    png(tmp_path / "img" / "a.png")
    png(tmp_path / "img" / "b.png")
    png(tmp_path / "img" / "c.png")
    (tmp_path / "manifest.csv").write_text(
        "path,label,patient,split,age\n"
        "img/a.png,sick,p1,train,50\n"
        "img/b.png,well,p2,Validation,\n"
        "img/missing.png,well,p3,test,40\n"
        "img/c.png,well,p3,test,41\n"
        "img/a.png,sick,p1,train,50\n"
    )
    ix = load_dataset(tmp_path)
    assert ix.layout == "csv" and ix.classes == ["sick", "well"]
    assert [(Path(r.path).name, r.label, r.patient, r.split) for r in ix] == [
        ("a.png", 0, "p1", "train"),
        ("b.png", 1, "p2", "val"),
        ("c.png", 1, "p3", "test"),
    ]
    assert ix.records[0].meta["age"] == "50"
    missing = [p for p in ix.problems if p.path.endswith("missing.png")]
    assert len(missing) == 1 and "line 4" in missing[0].reason and "not found" in missing[0].reason
    dup = [p for p in ix.problems if "listed again" in p.reason]
    assert len(dup) == 1 and "line 6" in dup[0].reason and "line 2" in dup[0].reason


def test_csv_isic_style_ids_without_extension(tmp_path):
    png(tmp_path / "images" / "ISIC_1.jpg")
    png(tmp_path / "images" / "ISIC_2.jpg")
    (tmp_path / "images" / "ISIC_1.json").write_text("{}")
    (tmp_path / "labels.csv").write_text(
        "\ufeffimage;benign_malignant;diagnosis\nISIC_1;benign;nevus\nISIC_2;malignant;melanoma\n"
    )
    ix = load_dataset(tmp_path)
    assert ix.classes == ["benign", "malignant"]
    assert [Path(r.path).name for r in ix] == ["ISIC_1.jpg", "ISIC_2.jpg"]
    assert ix.info["columns"]["label"] == "benign_malignant"
    ix2 = load_dataset(tmp_path / "labels.csv", label_column="diagnosis")
    assert ix2.classes == ["nevus", "melanoma"]  # the benign class comes first
    with pytest.raises(ConfigError, match="diagnosis"):
        load_dataset(tmp_path, label_column="diagnosys")


def test_csv_fold_column_and_bad_split_values(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    (tmp_path / "folds.csv").write_text("file,target,fold\na.png,0,1\nb.png,1,2\n")
    ix = load_dataset(tmp_path / "folds.csv")
    assert not ix.has_official_splits and [r.meta["fold"] for r in ix] == [1, 2]
    (tmp_path / "bad.csv").write_text("file,target,split\na.png,0,trian\n")
    with pytest.raises(ConfigError, match="trian"):
        load_dataset(tmp_path / "bad.csv")
    (tmp_path / "odd.csv").write_text("img_name,target\na.png,0\n")
    with pytest.raises(BadInputError, match="no path column.*path_column"):
        load_dataset(tmp_path / "odd.csv")
    ix = load_dataset(tmp_path / "odd.csv", path_column="IMG_NAME")
    assert [Path(r.path).name for r in ix] == ["a.png"]


# ------------------------------------------------------------------ patient table


def test_patient_table_layout(tmp_path):
    for pid, n in (("P1", 3), ("P2", 2), ("P9", 1)):
        for i in range(n):
            png(tmp_path / pid / f"cell{i}.png")
    (tmp_path / "patients.csv").write_text("patient_id,diagnosis\nP1,AML\nP2,healthy\nP3,AML\n")
    assert detect_layout(tmp_path) == "patient_table"
    ix = load_dataset(tmp_path)
    assert ix.patient_labels and ix.layout == "patient_table"
    assert ix.classes == ["healthy", "AML"]
    assert {(r.patient, ix.classes[r.label]) for r in ix} == {("P1", "AML"), ("P2", "healthy")}
    assert len(ix) == 5
    msgs = {Path(p.path).name: p for p in ix.problems}
    assert "no row in patients.csv" in msgs["P9"].reason and msgs["P9"].severity == "error"
    assert "no image folder" in msgs["P3"].reason and msgs["P3"].severity == "warning"


# ------------------------------------------------------------------ errors


def test_nothing_usable_names_path_and_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadInputError) as err:
        load_dataset(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert all(name in msg for name in ("medmnist", "csv", "idc", "patient_table", "imagefolder"))
    with pytest.raises(BadInputError, match="no such file"):
        load_dataset(tmp_path / "nope")


def test_layout_option_errors(tmp_path):
    png(tmp_path / "a" / "x.png")
    with pytest.raises(ConfigError, match="Did you mean 'imagefolder'"):
        load_dataset(tmp_path, layout="imagefoldr")
    with pytest.raises(ConfigError, match="label_column"):
        load_dataset(tmp_path, layout="imagefolder", label_column="x")


# ------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_real_idc(shared_data):
    root = shared_data / "idc_breast_histopathology"
    if not root.is_dir():
        pytest.skip("IDC copy not found")
    ix = load_dataset(root)
    assert ix.layout == "idc" and len(ix) == 6513 and not ix.problems
    assert ix.class_counts() == {"0": 3107, "1": 3406}
    patients = {r.patient for r in ix}
    assert len(patients) == 17
    per = {(p, c): 0 for p in ("8863", "8913", "9023") for c in (0, 1)}
    for r in ix:
        if r.patient in ("8863", "8913", "9023"):
            per[(r.patient, r.label)] += 1
    assert per == {
        ("8863", 0): 772,
        ("8863", 1): 207,
        ("8913", 0): 873,
        ("8913", 1): 0,
        ("9023", 0): 0,
        ("9023", 1): 288,
    }


@pytest.mark.realdata
def test_real_isic(shared_data):
    root = shared_data / "isic_skin_lesions"
    if not root.is_dir():
        pytest.skip("ISIC copy not found")
    ix = load_dataset(root)
    assert ix.layout == "csv" and len(ix) == 150 and not ix.problems
    assert ix.class_counts() == {"benign": 75, "malignant": 75}
    assert all(r.path.endswith(".jpg") and Path(r.path).is_file() for r in ix)
    assert {r.meta["diagnosis"] for r in ix} == {"nevus", "melanoma"}
    img = ix.read(ix.records[0])
    assert img.dtype == np.uint8 and img.shape[2] == 3 and min(img.shape[:2]) >= 576
