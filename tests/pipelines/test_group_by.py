"""`--group-by` for cross-validation: patient, institution, a manifest column or a regex; folds never
split a group; few groups → leave-one-group-out; an unknown column is a usage error naming the columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medlens.data.groups import (
    fold_count,
    parse_group_by,
    record_groups,
    stratified_group_folds,
    unit_of,
)
from medlens.data.records import Record
from medlens.errors import BadInputError, ConfigError

TINY = ["--model", "test_cnn", "--size", "32", "--epochs", "1", "--max-steps", "1", "--batch-size", "16",
        "--no-audit"]


def _recs() -> list[Record]:
    return [Record(f"/d/{c}/img_{i}.png", label=i % 2, patient=f"TCGA_{c}_{i:03d}",
                   meta={"line": i + 2, "Hospital": f"h{c}", "scanner": f"s{i % 3}"})
            for i, c in enumerate("AABBCCDD")]


def test_the_four_forms_name_their_groups():
    recs = _recs()
    assert record_groups(recs, "patient") == [r.patient for r in recs]
    assert record_groups(recs, "institution") == ["hA", "hA", "hB", "hB", "hC", "hC", "hD", "hD"]  # column first
    plain = [Record(r.path, r.label, r.patient) for r in recs]  # no manifest: TCGA site of the patient id
    assert record_groups(plain, "institution") == list("AABBCCDD")
    assert record_groups(recs, "scanner") == [f"s{i % 3}" for i in range(8)]
    assert record_groups(recs, "SCANNER") == record_groups(recs, "scanner")  # column names ignore case
    assert record_groups(plain, r"regex:^/d/(\w)/", root=None) == list("AABBCCDD")  # on the path
    assert record_groups(plain, r"regex:_(\d)\d\d$") == ["0"] * 8  # on the patient id first
    assert unit_of("TCGA_CS_4941", r"regex:_(\d{2})") == "49"
    assert parse_group_by(None).name == "patient" and parse_group_by("regex:(a)").unit == "group"


def test_bad_group_by_values_say_what_to_do():
    recs = _recs()
    with pytest.raises(ConfigError, match=r"no such manifest column; the columns are: Hospital, scanner"):
        record_groups(recs, "site")
    with pytest.raises(ConfigError, match="exactly one capture group"):
        parse_group_by("regex:[a-z]+")
    with pytest.raises(ConfigError, match="invalid regular expression"):
        parse_group_by("regex:(")
    with pytest.raises(BadInputError, match="matches neither"):
        record_groups(recs, r"regex:(zzz)")
    with pytest.raises(ConfigError, match="cannot tell the institution"):
        record_groups([Record("/d/x.png", 0, "patient_7")], "institution")


def test_folds_never_split_a_group_and_few_groups_are_left_out_one_by_one():
    rng = np.random.default_rng(0)
    groups = [f"site{g}" for g in rng.integers(0, 7, 120)]
    y = rng.integers(0, 2, 120)
    fold = stratified_group_folds(groups, y, 4, seed=1)
    for g in set(groups):
        assert len({int(f) for f, gg in zip(fold, groups) if gg == g}) == 1
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3]
    logo = stratified_group_folds(groups, y, 7, seed=1)
    assert all(len({g for g, f in zip(groups, logo) if f == k}) == 1 for k in range(7))
    assert fold_count(7, "institution", None, 5) == 7  # leave-one-group-out
    assert fold_count(12, "institution", None, 5) == 5 and fold_count(7, "patient", None, 5) == 5
    assert fold_count(7, "institution", 3, 5) == 3
    with pytest.raises(ConfigError, match=r"--group-by site: 7 site group\(s\).*--folds 7 or fewer"):
        stratified_group_folds(groups, y, 9, by="site")


@pytest.fixture(scope="module")
def site_data(tmp_path_factory) -> Path:
    """32 synthetic dermoscopy photos in a CSV manifest with a `centre` column (3 centres)."""
    from medlens.data.synthetic import make_dermoscopy_like

    data = make_dermoscopy_like(tmp_path_factory.mktemp("sites") / "derm", n=32, size=48, difficulty=0.2, seed=5)
    path = data / "labels.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, r in enumerate(rows):
        r["centre"] = f"C{i % 3}"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, [*rows[0].keys()])
        w.writeheader()
        w.writerows(rows)
    return data


def test_cv_by_a_column_is_leave_one_centre_out(site_data, tmp_path, monkeypatch):
    from medlens.cli.main import get_app

    monkeypatch.setenv("MEDLENS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "cv"
    res = CliRunner().invoke(get_app(), ["cv", str(site_data), "--group-by", "centre", "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output + repr(res.exception)
    cv = json.loads((out / "cv_metrics.json").read_text())
    assert cv["folds"] == 3 and cv["grouping"] == "centre" and cv["groups"]["leave_one_group_out"]
    assert sorted(sum(cv["groups"]["folds"].values(), [])) == ["C0", "C1", "C2"]
    assert all(len(v) == 1 for v in cv["groups"]["folds"].values())
    with (out / "folds.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for g in {r["group"] for r in rows}:  # a centre is held out by exactly one fold
        assert len({r["fold"] for r in rows if r["group"] == g}) == 1
    assert [r["groups"] for r in cv["per_fold"]] == [cv["groups"]["folds"][str(k)] for k in range(3)]
    assert json.loads((out / "cv_plan.json").read_text())["group"]["unit"] == "centre"
    text = " ".join(res.output.split())
    assert "3-fold leave-one-group-out cross-validation (grouped by centre)" in text
    assert "fold 0 held out centre: C" in text
    assert "centre — fold 0: C" in (out / "cv_report.html").read_text()


def test_unknown_column_is_a_usage_error_naming_the_columns(site_data, tmp_path):
    from medlens.cli.main import register_all

    res = CliRunner().invoke(register_all(), ["cv", str(site_data), "--group-by", "hospital_id", "--out",
                                              str(tmp_path / "cv"), *TINY])
    assert res.exit_code == 2, res.output
    err = " ".join(res.output.split())
    assert "--group-by hospital_id: no such manifest column" in err and "centre" in err and "diagnosis" in err
    assert not (tmp_path / "cv" / "fold_0").exists()
