"""Validation by site: institutions from TCGA case ids, folds that keep each site whole."""

from __future__ import annotations

import pytest

from medlens.data.groups import group_folds, institution_of
from medlens.errors import ConfigError


def test_tcga_case_ids_carry_the_site():
    assert institution_of("TCGA_CS_4941") == "CS"
    assert institution_of("TCGA-HT-7602-01") == "HT"
    with pytest.raises(ConfigError, match="cannot tell the institution"):
        institution_of("patient_07")


def test_each_site_lies_in_one_fold_and_folds_are_even():
    pats = [f"TCGA_{s}_{i}" for s, n in (("CS", 5), ("DU", 4), ("FG", 3), ("HT", 2), ("EZ", 1)) for i in range(n)]
    folds = group_folds(pats, 3, by="institution", seed=0)
    assert sorted(p for f in folds for p in f) == sorted(pats)
    for f in folds:
        sites = {institution_of(p) for p in f}
        for other in folds:
            if other is not f:
                assert not sites & {institution_of(p) for p in other}  # never split across folds
    assert sorted(len(f) for f in folds) == [5, 5, 5]  # 5 | 4+1 | 3+2
    assert group_folds(pats, 3, by="institution", seed=0) == folds  # seeded


def test_too_few_sites_for_the_folds_says_how_many():
    with pytest.raises(ConfigError, match=r"2 institution group\(s\).*--folds 2 or fewer"):
        group_folds(["TCGA_A_1", "TCGA_B_2"], 3, by="institution")


def test_cv_holds_out_whole_institutions(tmp_path):
    import json

    from typer.testing import CliRunner

    from medlens.cli.main import register_all
    from medlens.data.synthetic.brain import make_brain_mri_like

    data = make_brain_mri_like(tmp_path / "lgg", patients=6, slices=3, size=32, seed=0, institutions=3)
    out = tmp_path / "cv"
    res = CliRunner().invoke(register_all(), [
        "cv", str(data), "--group-by", "institution", "--folds", "3", "--out", str(out), "--model", "test_unet",
        "--size", "32", "--epochs", "1", "--max-steps", "1"])
    assert res.exit_code == 0, res.output
    cv = json.loads((out / "cv_metrics.json").read_text())
    assert set(cv["per_group"]) == {"S0", "S1", "S2"} and all(g["patients"] == 2 for g in cv["per_group"].values())
    for fold in cv["folds"]:  # each fold's test patients: one whole site
        assert len({institution_of(p) for p in fold["test"]}) == 1 and len(fold["test"]) == 2
        assert institution_of(fold["val"][0]) != institution_of(fold["test"][0])
    assert json.loads((out / "cv_plan.json").read_text())["group"]["unit"] == "institution"
    assert "leave-institutions-out" in res.output and "held-out institution S0" in res.output
    res = CliRunner().invoke(register_all(), ["cv", str(data), "--group-by", "institution", "--folds", "4",
                                              "--out", str(tmp_path / "cv4"), "--model", "test_unet"])
    assert res.exit_code == 2 and "--folds 3 or fewer" in res.output
