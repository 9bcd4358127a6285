"""`medlens cv DATA --task patient`: the shared driver's files, folds of whole patients."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner


def test_cv_writes_the_driver_files_and_never_splits_a_patient(aplaml: Path, tmp_path: Path) -> None:
    from medlens.cli.main import get_app

    config = tmp_path / "mil.json"  # a tiny frozen encoder: the cached-feature recipe, shared by the folds
    config.write_text(json.dumps({"encoder": "test_cnn", "pretrained": None, "encoder_trainable": False,
                                  "embed_dim": 8, "n_bootstrap": 50}))
    out = tmp_path / "cv"
    res = CliRunner().invoke(get_app(), ["cv", str(aplaml), "--task", "patient", "--folds", "2", "--out", str(out),
                                         "--config", str(config), "--size", "32", "--epochs", "2",
                                         "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "patient cross-validation" in res.output and "pooled out-of-fold patient AUC" in res.output
    for name in ("cv_plan.json", "folds.csv", "cv_metrics.json", "cv_report.html", "fold_0/metrics.json",
                 "fold_1/report.html"):
        assert (out / name).exists(), name
    plan = json.loads((out / "cv_plan.json").read_text())
    assert plan["task"] == "patient" and plan["folds"] == 2 and plan["group"]["unit"] == "patient"
    rows = list(csv.DictReader((out / "folds.csv").open()))
    table = {r["Patient_ID"]: r["Diagnosis"] for r in csv.DictReader((aplaml / "master.csv").open())}
    assert sorted(r["patient"] for r in rows) == sorted(table)  # one row per patient
    fold_of = {r["patient"]: int(r["fold"]) for r in rows}
    for k in (0, 1):  # stratified: each fold holds out 2 patients of each diagnosis
        assert sorted(table[p] for p, f in fold_of.items() if f == k) == ["AML", "AML", "APL", "APL"]
        split_of: dict[str, set[str]] = {}
        for line in (out / f"fold_{k}" / "splits.csv").read_text().splitlines()[1:]:
            path, split = line.rsplit(",", 1)
            parts = Path(path).parts
            split_of.setdefault(parts[parts.index("data") + 1], set()).add(split)
        assert all(len(s) == 1 for s in split_of.values())  # every cell of a patient in one split
        test = {p for p, s in split_of.items() if s == {"test"}}
        assert test == {p for p, f in fold_of.items() if f == k}  # the held-out fold is the test split
        assert {"train", "val"} <= set().union(*split_of.values())
    cv = json.loads((out / "cv_metrics.json").read_text())
    assert cv["task"] == "patient" and cv["grouping"] == "patient" and len(cv["per_fold"]) == 2
    assert sorted(cv["per_patient"]) == sorted(table)  # each patient predicted once, out of fold
    assert {cv["per_patient"][p]["fold"] for p in table} == {0, 1}
    assert all(cv["per_patient"][p]["fold"] == fold_of[p] for p in table)
    assert cv["pooled"]["unit"] == "patient" and 0.0 <= cv["auc"]["pooled_oof"] <= 1.0
    assert "ci_pooled_bootstrap" in cv["auc"] and "ci_fold_t" in cv["auc"]
    # features once per fold here: a random-init encoder's input normalisation comes from each fold's
    # training cells (named pretrained weights bring their own, and then the folds share one file)
    assert len(list((out / "cache").glob("features-*.npy"))) == 2
