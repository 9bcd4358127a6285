"""Manifests that would give a silent wrong answer: typo and rare labels, no clear label
column, paths that leave the data folder. Each is refused with a message naming the rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlens.audit import run_audit
from medlens.data.layouts import load_dataset
from medlens.errors import BadInputError, ConfigError

MEDLENS = Path(sys.executable).with_name("medlens")


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def _manifest(root: Path, labels: list[str], header: str = "path,label") -> Path:
    """``labels.csv`` with one distinct 16 px PNG per label; data row i is on line i + 2."""
    rows = []
    for i, lab in enumerate(labels):
        _png(root / "images" / f"img{i:03d}.png", i)
        rows.append(f"images/img{i:03d}.png,{lab}")
    (root / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return root


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "MEDLENS_DEBUG": ""}
    return subprocess.run(
        [str(MEDLENS), *args], capture_output=True, text=True, timeout=120, env=env
    )


# ------------------------------------------------------------------ labels: typo / rare


def test_typo_label_blocks_training_naming_the_rows(tmp_path):
    labels = ["benign"] * 12 + ["malignant"] * 11
    labels.insert(7, "malignnat")  # data row 8 → line 9 of labels.csv
    data = _manifest(tmp_path / "data", labels)
    out = tmp_path / "run"
    res = _cli(
        "train",
        str(data),
        "--out",
        str(out),
        "--model",
        "test_cnn",
        "--epochs",
        "1",
        "--size",
        "16",
    )
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr
    assert "'malignnat'" in err and "looks like 'malignant'" in err
    assert "labels.csv line(s) 9 (images/img007.png)" in err
    assert "--ignore-audit" in err and "Traceback" not in err
    assert not (out / "model").exists() and not (out / "metrics.json").exists()


def test_rare_class_blocks_and_audit_reports_it(tmp_path):
    labels = ["benign"] * 10 + ["malignant"] * 10 + ["melanoma"] * 2
    data = _manifest(tmp_path / "data", labels)
    out = tmp_path / "audit"
    res = _cli("audit", str(data), "--quick", "--out", str(out))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "BLOCKING: Class 'melanoma' has only 2 image(s), fewer than 5" in res.stdout
    report = json.loads((out / "audit.json").read_text())
    rare = report["label_names"]["rare"]
    assert [(r["class"], r["images"], r["lines"]) for r in rare] == [("melanoma", 2, [22, 23])]
    assert any("melanoma" in b for b in report["blocking"])
    html = (out / "audit.html").read_text(encoding="utf-8")
    assert "melanoma" in html and "line(s) 22, 23" in html


def test_case_variant_of_a_large_class_blocks(tmp_path):
    data = _manifest(tmp_path / "data", ["benign"] * 8 + ["malignant"] * 8 + ["Benign"] * 6)
    result = run_audit(data, quick=True)
    dups = result.label_names["near_duplicates"]
    assert [(d["class"], d["suspected_class"]) for d in dups] == [("Benign", "benign")]
    assert "case, spaces or punctuation" in dups[0]["why"]
    assert not result.label_names["rare"] and not result.ok


def test_clean_manifest_has_no_label_finding(tmp_path):
    data = _manifest(tmp_path / "data", ["benign"] * 6 + ["malignant"] * 6)
    result = run_audit(data, quick=True)
    assert result.label_names["near_duplicates"] == [] and result.label_names["rare"] == []
    assert not any("Class" in b for b in result.blocking)


def test_rare_threshold_grows_with_the_data_set(tmp_path):
    from medlens.audit.labels import label_findings
    from medlens.data.records import DatasetIndex, Record

    recs = [Record(f"/x/{i}.png", label=int(i < 8)) for i in range(12_000)]
    found = label_findings(DatasetIndex("/x", "test", ["common", "uncommon"], recs))
    assert found["min_class_images"] == 12 and [r["class"] for r in found["rare"]] == ["uncommon"]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("malignant", "malignnat"),
        ("Benign", "benign"),
        ("non-IDC", "non idc"),
        ("nevus", "naevus"),
        ("pneumonia", "pnuemonia"),
        ("AML", "aml"),
    ],
)
def test_near_duplicate_names(a, b):
    from medlens.audit.labels import near_duplicate

    assert near_duplicate(a, b) is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("AML", "ALL"),
        ("grade 1", "grade 2"),
        ("stage I", "stage II"),
        ("melanoma", "non-melanoma"),
        ("normal", "abnormal"),
        ("hyperplasia", "hypoplasia"),
        ("benign", "malignant"),
        ("positive", "negative"),
        ("T1", "T2"),
    ],
)
def test_distinct_names_are_not_flagged(a, b):
    from medlens.audit.labels import near_duplicate

    assert near_duplicate(a, b) is None


# ------------------------------------------------------------------ label column


def test_no_label_column_is_an_error_listing_the_columns(tmp_path):
    _png(tmp_path / "a.png", 0)
    (tmp_path / "labels.csv").write_text("path,age,site\na.png,50,back\n")
    with pytest.raises(BadInputError) as err:
        load_dataset(tmp_path)
    msg = str(err.value)
    assert "no label column recognised" in msg and "columns found: path, age, site" in msg
    assert "--label-column" in msg
    ix = load_dataset(tmp_path, label_column="site")
    assert ix.classes == ["back"] and ix.info["columns"]["label"] == "site"


def test_diagnosis_is_not_guessed_beside_other_columns(tmp_path):
    _png(tmp_path / "a.png", 0)
    (tmp_path / "labels.csv").write_text("path,diagnosis,dx_type\na.png,nevus,histo\n")
    with pytest.raises(BadInputError, match="--label-column diagnosis"):
        load_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("path,diagnosis\na.png,nevus\n")  # the one column: clear
    assert load_dataset(tmp_path).info["columns"]["label"] == "diagnosis"


def test_two_clear_label_columns_are_ambiguous(tmp_path):
    _png(tmp_path / "a.png", 0)
    (tmp_path / "labels.csv").write_text("path,label,class\na.png,x,y\n")
    with pytest.raises(
        BadInputError, match=r"several columns could hold the class \(label, class\)"
    ):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path, label_column="class").classes == ["y"]
    with pytest.raises(ConfigError, match="Did you mean 'label'"):
        load_dataset(tmp_path, label_column="lable")


def test_inspect_cli_without_label_column_exits_1(tmp_path):
    _png(tmp_path / "a.png", 0)
    (tmp_path / "labels.csv").write_text("path,age\na.png,50\n")
    res = _cli("inspect", str(tmp_path))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "columns found: path, age" in res.stderr and "--label-column" in res.stderr


def test_inspect_names_the_label_column(tmp_path):
    from medlens.data.describe import describe, format_description

    _png(tmp_path / "images" / "ISIC_1.jpg", 0)
    (tmp_path / "labels.csv").write_text("image,benign_malignant,diagnosis\nISIC_1,benign,nevus\n")
    text = format_description(describe(load_dataset(tmp_path)))
    assert "Columns:  label 'benign_malignant' of labels.csv; path 'image'" in text


# ------------------------------------------------------------------ paths outside the data folder


def _outside_set(tmp_path: Path, raw: str) -> Path:
    data = tmp_path / "data"
    for i in range(3):
        _png(data / f"in{i}.png", i)
    _png(tmp_path / "elsewhere" / "secret.png", 9)
    (data / "labels.csv").write_text(f"path,label\nin0.png,a\nin1.png,b\n{raw},a\nin2.png,b\n")
    return data


def test_parent_path_refused_then_allowed(tmp_path):
    data = _outside_set(tmp_path, "../elsewhere/secret.png")
    with pytest.raises(BadInputError) as err:
        load_dataset(data)
    msg = str(err.value)
    assert msg.startswith("labels.csv line 4: ../elsewhere/secret.png is outside the data folder")
    assert str(data) in msg and "--allow-outside-paths" in msg
    ix = load_dataset(data, allow_outside_paths=True)
    assert len(ix) == 4 and any(r.path.endswith("secret.png") for r in ix)


def test_absolute_path_outside_refused_inside_accepted(tmp_path):
    data = _outside_set(tmp_path, str(tmp_path / "elsewhere" / "secret.png"))
    with pytest.raises(BadInputError, match="line 4: /.*secret.png is outside"):
        load_dataset(data)
    inside = _outside_set(tmp_path / "b", str(tmp_path / "b" / "data" / "in2.png"))
    (inside / "labels.csv").write_text(f"path,label\nin0.png,a\n{inside / 'in1.png'},b\n")
    assert len(load_dataset(inside)) == 2


def test_symlink_leading_out_refused(tmp_path):
    data = _outside_set(tmp_path, "link.png")
    try:
        (data / "link.png").symlink_to(tmp_path / "elsewhere" / "secret.png")
    except OSError:
        pytest.skip("symlinks not supported here")
    with pytest.raises(BadInputError, match=r"link.png \(it resolves to .*secret.png\) is outside"):
        load_dataset(data)
    assert len(load_dataset(data, allow_outside_paths=True)) == 4


def test_outside_paths_flag_on_the_cli(tmp_path):
    data = _outside_set(tmp_path, "../elsewhere/secret.png")
    res = _cli("inspect", str(data))
    assert res.returncode == 1 and "--allow-outside-paths" in res.stderr, res.stdout + res.stderr
    res = _cli("inspect", str(data), "--allow-outside-paths")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 usable" in res.stdout


def test_outside_paths_flag_reaches_training_and_cv(tmp_path):
    """With the flag, train and cv load the manifest and stop at the audit (typo label)."""
    data = tmp_path / "data"
    labels = ["benign"] * 10 + ["malignant"] * 10 + ["malignnat"]
    _manifest(data, labels)
    _png(tmp_path / "elsewhere" / "x.png", 99)
    with (data / "labels.csv").open("a") as fh:
        fh.write("../elsewhere/x.png,benign\n")
    from typer.testing import CliRunner

    from medlens.cli.main import get_app

    args = [str(data), "--model", "test_cnn", "--epochs", "1", "--allow-outside-paths"]
    res = CliRunner().invoke(get_app(), ["train", *args, "--out", str(tmp_path / "run")])
    assert res.exit_code != 0 and "'malignnat'" in res.output, res.output
    assert "outside the data folder" not in res.output
    res = _cli("cv", *args, "--folds", "2", "--out", str(tmp_path / "cv"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "'malignnat'" in res.stderr and "outside the data folder" not in res.stderr


def test_audit_cli_accepts_the_flag(tmp_path):
    data = _outside_set(tmp_path, "../elsewhere/secret.png")
    with pytest.raises(BadInputError, match="outside the data folder"):
        run_audit(data, quick=True)
    res = _cli("audit", str(data), "--quick", "--out", str(tmp_path / "a"), "--allow-outside-paths")
    assert "outside the data folder" not in res.stderr and "4 image(s)" in res.stdout, (
        res.stdout + res.stderr
    )


def test_folder_and_patient_table_variants_are_named(tmp_path):
    from medlens.audit.labels import label_findings

    for cls, n in (("benign", 6), ("Benign", 2), ("malignant", 6)):
        for i in range(n):
            _png(tmp_path / "folders" / cls / f"{i}.png", i)
    found = label_findings(load_dataset(tmp_path / "folders"))
    assert [(d["class"], d["suspected_class"]) for d in found["near_duplicates"]] == [
        ("Benign", "benign")
    ]
    assert "Benign/0.png" in found["blocking"][0]
    table = tmp_path / "table"
    for pid in ("P1", "P2", "P3", "P4"):
        _png(table / pid / "cell.png", int(pid[1]))
    (table / "patients.csv").write_text(
        "patient,diagnosis\nP1,healthy\nP2,leukaemia\nP3,leukemia\nP4,healthy\n"
    )
    found = label_findings(load_dataset(table))
    assert found["near_duplicates"][0]["patients"] in (["P2"], ["P3"])
    assert "patient(s) P" in found["blocking"][0] and "one letter apart" in found["blocking"][0]
