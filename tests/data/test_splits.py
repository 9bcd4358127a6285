"""Splits: official ones kept, generated ones stratified and patient-grouped."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from medlens.data.records import DatasetIndex, Record
from medlens.data.splits import (
    apply_splits,
    assign_splits,
    kfold_splits,
    load_splits,
    patients_in_several_splits,
    save_splits,
    split_table,
)
from medlens.errors import BadInputError, ConfigError


def make_index(
    n_patients: int = 30, per_patient: int = 5, *, patients: bool = True, split_of=None
) -> DatasetIndex:
    rng = np.random.default_rng(0)
    records = []
    for p in range(n_patients):
        label = p % 3 == 0  # a third of the patients are positive
        for i in range(per_patient + int(rng.integers(0, 4))):
            records.append(
                Record(
                    f"/d/p{p:03d}_{i}.png",
                    label=int(label),
                    patient=f"p{p:03d}" if patients else None,
                    split=split_of(p) if split_of else None,
                )
            )
    return DatasetIndex(root="/d", layout="test", classes=["neg", "pos"], records=records)


def patients_by_split(ix: DatasetIndex) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in ix.records:
        out[r.split].add(r.patient)
    return out


def test_generated_splits_are_grouped_stratified_and_deterministic():
    ix = make_index()
    a = assign_splits(ix, seed=0)
    assert {r.split for r in a.records} == {"train", "val", "test"}
    assert patients_in_several_splits(a) == []
    by = patients_by_split(a)
    assert not (by["train"] & by["val"] or by["train"] & by["test"] or by["val"] & by["test"])
    table = split_table(a)
    for split in ("train", "val", "test"):
        assert table[split]["neg"] > 0 and table[split]["pos"] > 0  # stratified
    assert 0.08 < table["test"]["total"] / len(ix) < 0.25
    assert sum(table[s]["total"] for s in table) == len(ix)
    assert table["test"]["patients"] == len(by["test"])
    assert [r.split for r in assign_splits(ix, seed=0).records] == [r.split for r in a.records]
    assert any(
        [r.split for r in assign_splits(ix, seed=s).records] != [r.split for r in a.records]
        for s in (1, 2, 3)
    )
    assert a.info["splits"]["source"] == "generated"
    assert ix.records[0].split is None  # the input index is not modified


def test_without_patients_each_image_is_a_group():
    ix = make_index(40, 5, patients=False)
    a = assign_splits(ix, val_fraction=0.2, test_fraction=0.1, seed=3)
    t = split_table(a)
    assert abs(t["test"]["total"] - round(0.1 * len(ix))) <= 1
    assert abs(t["val"]["total"] - round(0.2 * len(ix))) <= 1
    assert all(t[s]["pos"] > 0 for s in ("train", "val", "test"))


def test_official_splits_are_kept_and_val_carved_from_train():
    ix = make_index(split_of=lambda p: "test" if p >= 24 else "train")
    a = assign_splits(ix, val_fraction=0.2, seed=0)
    before = {r.path: r.split for r in ix.records}
    after = {r.path: r.split for r in a.records}
    assert all(after[p] == "test" for p, s in before.items() if s == "test")
    assert {s for p, s in after.items() if before[p] == "train"} == {"train", "val"}
    by = patients_by_split(a)
    assert not by["train"] & by["val"]
    assert "carved val" in a.info["splits"]["source"]
    full = make_index(split_of=lambda p: ("train", "val", "test")[p % 3])
    assert [r.split for r in assign_splits(full).records] == [r.split for r in full.records]


def test_too_few_patients_and_bad_fractions():
    with pytest.raises(ConfigError, match="patient"):
        assign_splits(make_index(2, 5))
    with pytest.raises(ConfigError, match="val_fraction"):
        assign_splits(make_index(), val_fraction=1.5)
    with pytest.raises(ConfigError, match="< 1"):
        assign_splits(make_index(), val_fraction=0.5, test_fraction=0.5)
    # with the val/test fractions at zero, two patients are enough
    assert {
        r.split for r in assign_splits(make_index(2, 5), val_fraction=0, test_fraction=0).records
    } == {"train"}


def test_save_load_apply_round_trip(tmp_path):
    a = assign_splits(make_index(), seed=1)
    path = save_splits(a, tmp_path / "run" / "splits.csv")
    assert path.read_text().splitlines()[0] == "path,split"
    table = load_splits(path)
    b = apply_splits(make_index(), table)
    assert [r.split for r in b.records] == [r.split for r in a.records]
    with pytest.raises(ConfigError, match="no saved split"):
        apply_splits(make_index(31), table)
    (tmp_path / "bad.csv").write_text("path,split\nx.png,training\n")
    with pytest.raises(BadInputError, match="training"):
        load_splits(tmp_path / "bad.csv")


def test_kfold_grouped_and_covering():
    ix = make_index(20, 4)
    seen = np.zeros(len(ix), int)
    for train, test in kfold_splits(ix, k=4, seed=0):
        assert not set(train) & set(test)
        pats_train = {ix.records[i].patient for i in train}
        pats_test = {ix.records[i].patient for i in test}
        assert not pats_train & pats_test
        assert {ix.records[i].label for i in test} == {0, 1}
        seen[test] += 1
    assert (seen == 1).all()
    with pytest.raises(ConfigError, match="at least 25"):
        list(kfold_splits(ix, k=25))


@pytest.mark.realdata
def test_real_idc_splits_keep_patients_apart(shared_data):
    from medlens.data.layouts import load_dataset

    root = shared_data / "idc_breast_histopathology"
    if not root.is_dir():
        pytest.skip("IDC copy not found")
    a = assign_splits(load_dataset(root), seed=0)
    assert patients_in_several_splits(a) == []
    t = split_table(a)
    # negatives come from only 4 patients; each split still gets some
    assert all(t[s]["0"] > 0 and t[s]["1"] > 0 for s in ("train", "val", "test"))
    assert sum(t[s]["patients"] for s in t) == 17
