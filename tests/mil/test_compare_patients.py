"""`medlens compare` on patient packages: the cases are the run's test patients, one row each."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner


def _train(data: Path, out: Path, *extra: str) -> Path:
    from medlens.cli.main import get_app

    res = CliRunner().invoke(get_app(), ["train", str(data), "--out", str(out), "--model", "test_cnn", "--size",
                                         "32", "--epochs", "1", "--device", "cpu", "--val-fraction", "0.25",
                                         "--test-fraction", "0.5", *extra])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def runs(aplaml: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("milcmp")
    cfg = root / "mean.json"
    cfg.write_text(json.dumps({"pooling": "mean"}))
    # same seed → same patient split; the second pools by the mean instead of attention
    with pytest.MonkeyPatch.context() as mp:  # the autouse cache fixture is per test: not set up yet here
        mp.setenv("MEDLENS_CACHE_DIR", str(root / "cache"))
        return _train(aplaml, root / "attention"), _train(aplaml, root / "mean", "--config", str(cfg))


def test_compare_two_patient_packages_on_their_test_patients(runs: tuple[Path, Path], aplaml: Path,
                                                             tmp_path: Path) -> None:
    from medlens.cli.main import get_app

    out = tmp_path / "cmp"
    res = CliRunner().invoke(get_app(), ["compare", str(runs[0]), str(runs[1]), "--data", str(aplaml),
                                         "--min-specificity", "0", "--n-bootstrap", "50", "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert {p.name for p in out.iterdir()} >= {"compare.json", "leaderboard.csv", "compare.html"}
    result = json.loads((out / "compare.json").read_text())
    test_patients = json.loads((runs[0] / "metrics.json").read_text())["patient_ids"]
    assert len(test_patients) == 4 and result["unit"] == "patient" and result["n_cases"] == 4
    assert result["n_positive"] == 2 and result["n_negative"] == 2
    assert result["bootstrap"]["unit"] == "patient" and result["bootstrap"]["n_units"] == 4
    assert result["n_patients"] is None  # patients are the cases, not groups of them
    lb = {r["name"]: r for r in result["leaderboard"]}
    assert list(lb) == ["attention", "mean"]
    for r in lb.values():
        assert r["tp"] + r["fn"] == 2 and r["tn"] + r["fp"] == 2 and r["threshold"] is not None
        assert r["seen_in_training"] == {"train": 0, "val": 0}  # the runs' own test patients
    other = next(r for r in lb.values() if not r["selected"])
    assert other["vs_selected"]["mcnemar"] is not None and "delong" in other["vs_selected"]
    assert not any("treat images as independent" in w for w in result["warnings"])
    # the same patients and the same figures as the package's own evaluation
    own = json.loads((runs[0] / "metrics.json").read_text())
    assert lb["attention"]["roc_auc"] == pytest.approx(own["roc_auc"])
    assert lb["attention"]["sensitivity"] == pytest.approx(own["sensitivity"])
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [r["name"] for r in rows] == ["attention", "mean"]
    assert "4 patients" in res.output


def test_compare_scores_one_row_per_test_patient(runs: tuple[Path, Path], aplaml: Path) -> None:
    from medlens.evaluate.compare import expand_runs, resolve_cases, scorer_for
    from medlens.package import ModelPackage

    entries = expand_runs([runs[1]])
    pkg = ModelPackage(entries[0].package, device="cpu")
    scored = scorer_for(pkg)(pkg, resolve_cases(aplaml, entries, "test", {}))
    assert sorted(scored.ids) == sorted(json.loads((runs[1] / "metrics.json").read_text())["patient_ids"])
    assert scored.unit == "patient" and scored.groups is None and len(scored.scores) == 4
    assert set(scored.members) == set(scored.ids) and all(len(v) == 8 for v in scored.members.values())


def test_compare_refuses_image_and_patient_packages_together(runs: tuple[Path, Path], aplaml: Path,
                                                             tmp_path: Path) -> None:
    from medlens.cli.main import get_app
    from tests.packages import tiny_classifier_package

    clf = tiny_classifier_package(tmp_path / "clf" / "model", classes=("AML", "APL"))
    res = CliRunner().invoke(get_app(), ["compare", str(runs[0]), str(clf.parent), "--data", str(aplaml),
                                         "--out", str(tmp_path / "cmp")])
    assert res.exit_code != 0 and (res.exception is None or isinstance(res.exception, SystemExit))
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "different tasks" in lines[0] and "'classify'" in lines[0] and "'patient'" in lines[0]
    assert not (tmp_path / "cmp" / "compare.json").exists()


def test_a_patient_run_folder_as_data_means_its_data_and_its_splits(runs: tuple[Path, Path], aplaml: Path) -> None:
    from medlens.evaluate.compare import expand_runs, resolve_cases

    cases = resolve_cases(runs[0], expand_runs([runs[1]]), "test", {})
    assert Path(cases.data).resolve() == aplaml.resolve() and cases.splits_from == str(runs[0] / "splits.csv")
    assert cases.splits and set(cases.splits.values()) == {"train", "val", "test"}
