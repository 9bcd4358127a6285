"""The APL/AML layout is read with no flags; the generator writing it is deterministic."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from medlens.data.layouts import detect_layout, load_dataset
from medlens.data.synthetic import make_dataset
from medlens.data.synthetic.blood import make_leukemia_like


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_read_with_no_flags(aplaml: Path) -> None:
    assert detect_layout(aplaml) == "aplaml"
    ix = load_dataset(aplaml)
    table = {r["Patient_ID"]: r["Diagnosis"] for r in csv.DictReader(open(aplaml / "master.csv"))}
    assert ix.patient_labels and ix.classes == ["AML", "APL"] and len(table) == 8
    assert {r.patient for r in ix.records} == set(table)
    for r in ix.records:  # the label is the patient's Diagnosis from master.csv
        assert ix.classes[r.label] == table[r.patient]
        assert "Unsigned slides" not in r.path and "thumb" not in r.path.lower()
    assert len(ix) == 8 * 8  # signed cells only
    types = Counter(r.meta["cell_type"] for r in ix.records)
    assert {"Blast", "Promyelocyte"} <= set(types) and "unknown" not in types and "Slide_1" not in types
    # the extra folder level (Signed slides/Slide_<k>/<cell type>) still gives the cell type
    assert any("Slide_" in r.path for r in ix.records)
    notes = [p.reason for p in ix.problems]
    assert sum("without a pathologist's label" in n for n in notes) == 8  # one note per Unsigned folder
    assert sum(n.startswith("thumbnail") for n in notes) == 8  # 'thumb' names and tiny overviews alike
    assert ix.info["skipped"] == {"unsigned_images": 16, "thumbnails": 8}


def test_generator_is_deterministic_and_reachable_from_the_blood_kind(tmp_path: Path) -> None:
    kw = {"patients_per_class": 2, "cells_per_patient": 3, "size": 24}
    a = _files(make_leukemia_like(tmp_path / "a", seed=5, **kw))
    b = _files(make_dataset("blood", tmp_path / "b", seed=5, layout="aplaml", **kw))
    c = _files(make_leukemia_like(tmp_path / "c", seed=6, **kw))
    assert a == b and a != c


def test_abnormal_cells_follow_the_diagnosis(aplaml: Path) -> None:
    ix = load_dataset(aplaml)
    by = {c: Counter(r.meta["cell_type"] for r in ix.records if ix.classes[r.label] == c) for c in ix.classes}
    assert by["AML"]["Blast"] > 0 and by["AML"]["Promyelocyte"] == 0
    assert by["APL"]["Promyelocyte"] > 0 and by["APL"]["Blast"] == 0
    assert by["AML"]["Neutrophil"] > 0 and by["APL"]["Neutrophil"] > 0  # normal cells in every patient


def test_overlap_puts_the_other_leukaemias_cells_in_some_patients(tmp_path: Path) -> None:
    kw = {"patients_per_class": 5, "cells_per_patient": 24, "size": 16, "abnormal_fraction": 0.5, "seed": 1,
          "unsigned_per_patient": 0}
    apart = load_dataset(make_leukemia_like(tmp_path / "a", overlap=0.0, **kw))
    mixed = load_dataset(make_leukemia_like(tmp_path / "b", overlap=0.2, **kw))

    def types(ix, dx: str) -> Counter:  # noqa: ANN001
        return Counter(r.meta["cell_type"] for r in ix.records if ix.classes[r.label] == dx)

    assert types(apart, "AML")["Promyelocyte"] == 0 and types(apart, "APL")["Blast"] == 0
    aml, apl = types(mixed, "AML"), types(mixed, "APL")
    assert 0 < aml["Promyelocyte"] < aml["Blast"] and 0 < apl["Blast"] < apl["Promyelocyte"]  # mixed, still apart
