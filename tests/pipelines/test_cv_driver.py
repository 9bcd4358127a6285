"""One cross-validation driver and one folder for every task: ``medlens cv`` on classify and on
segment data writes ``cv_plan.json``, ``folds.csv``, ``fold_<k>/``, ``cv_metrics.json`` and
``cv_report.html``; a started folder is refused without --resume; resume reads finished folds
back and continues the others. The driver's rules are also checked on a stand-in task."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medlens.cli.main import get_app
from medlens.errors import ConfigError
from medlens.pipelines import cv_driver
from medlens.pipelines.cv_driver import Assignment, CVPlan, run_cv

runner = CliRunner()
FAST = ["--epochs", "1", "--max-steps", "1", "--size", "32"]
CONVENTION = {"cv_plan.json", "folds.csv", "fold_0", "fold_1", "cv_metrics.json", "cv_report.html"}
MODEL = {"classify": "test_cnn", "segment": "test_unet"}
# the numbers a resumed cross-validation must give again, per task
SCORES = {"classify": lambda cv: [r["roc_auc"] for r in cv["per_fold"]],
          "segment": lambda cv: [cv["per_patient"][p]["dice"] for p in sorted(cv["per_patient"])]}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _cv(args: list[str]):  # noqa: ANN202
    return runner.invoke(get_app(), ["cv", *args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, Path, str]]:
    """``medlens cv`` with 2 folds on tiny classify data and on tiny image/mask pairs (no --task)."""
    from medlens.data.synthetic import make_idc_like
    from medlens.data.synthetic.brain import make_brain_mri_like

    base = tmp_path_factory.mktemp("cvdriver")
    idc = base / "idc"
    make_idc_like(idc, patients=6, patches_per_patient=8, size=32, seed=1)
    brain = base / "brain"
    make_brain_mri_like(brain, patients=4, slices=3, size=32)
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDLENS_CACHE_DIR", str(base / "cache"))
        for name, data, extra in (("classify", idc, ["--no-audit"]), ("segment", brain, [])):
            res = _cv([str(data), "--folds", "2", "--out", str(base / name), "--model", MODEL[name], *extra, *FAST])
            assert res.exit_code == 0, res.output + repr(res.exception)
            out[name] = (data, base / name, res.output)
    return out


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_one_folder_convention_for_both_tasks(runs, task):
    data, out, output = runs[task]
    assert CONVENTION <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith("fold") and p.name not in CONVENTION]
    plan = json.loads((out / "cv_plan.json").read_text(encoding="utf-8"))
    assert plan["task"] == task and plan["folds"] == 2 and plan["data"] == str(data)
    assert plan["group"]["unit"] == "patient" and plan["config"]
    rows = _rows(out / "folds.csv")
    assert {r["fold"] for r in rows} == {"0", "1"} and "patient" in rows[0]
    cv = json.loads((out / "cv_metrics.json").read_text(encoding="utf-8"))
    assert cv["task"] == task
    for k in (0, 1):  # each fold is a run folder as the task's train writes it, with its held-out split
        assert (out / f"fold_{k}" / "splits.csv").is_file() and (out / f"fold_{k}" / "metrics.json").is_file()
    page = (out / "cv_report.html").read_text(encoding="utf-8")
    assert "<html" in page.lower()
    assert f"results: {out / 'cv_metrics.json'}" in output.replace("\n", "")


def test_cv_on_image_mask_pairs_runs_the_segment_task(runs):
    _, out, output = runs["segment"]
    assert "recognised as segment data" in output and "mean per-patient-volume Dice" in output
    cv = json.loads((out / "cv_metrics.json").read_text(encoding="utf-8"))
    held = [p for f in cv["folds"] for p in f["test"]]
    assert sorted(held) == sorted(r["patient"] for r in _rows(out / "folds.csv")) and len(held) == 4
    page = (out / "cv_report.html").read_text(encoding="utf-8")
    assert all(f"fold_{f['fold']}/report.html" in page for f in cv["folds"])  # links follow the convention


def test_classify_output_and_pooled_predictions(runs):
    _, out, output = runs["classify"]
    assert "mean ± sd" in output and "pooled out-of-fold AUC" in output
    cv = json.loads((out / "cv_metrics.json").read_text(encoding="utf-8"))
    assert cv["folds"] == 2 and len(cv["per_fold"]) == 2 and cv["pooled"]["counts"]["n"] == 48


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_second_cv_into_a_started_folder_is_refused(runs, task):
    data, out, _ = runs[task]
    before = (out / "cv_metrics.json").stat().st_mtime_ns
    res = _cv([str(data), "--folds", "2", "--out", str(out), "--model", MODEL[task], *FAST])
    assert res.exit_code == 2 and "--resume" in res.output and str(out) in res.output.replace("\n", "")
    assert (out / "cv_metrics.json").stat().st_mtime_ns == before


# what makes a fold finished, per task: deleting it makes resume continue that fold
FOLD_RESULT = {"classify": ("result.json", "oof.npz"), "segment": ("metrics.json", "report.html")}


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_resume_after_deleting_a_folds_result_continues(runs, task, tmp_path, monkeypatch):
    data, out, _ = runs[task]
    monkeypatch.setenv("MEDLENS_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    shutil.copytree(out, run)
    old = json.loads((run / "cv_metrics.json").read_text(encoding="utf-8"))
    for name in FOLD_RESULT[task]:
        (run / "fold_1" / name).unlink()
    kept = {p: p.stat().st_mtime_ns for p in (run / "fold_0").rglob("*") if p.is_file() and p.name != "run.log"}
    res = _cv([str(data), "--out", str(run), "--resume"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert all((run / "fold_1" / name).is_file() for name in FOLD_RESULT[task])
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # fold 0: read back, not trained again
    new = json.loads((run / "cv_metrics.json").read_text(encoding="utf-8"))
    assert SCORES[task](new) == pytest.approx(SCORES[task](old))


def test_resume_takes_the_task_from_the_folder_and_refuses_another(runs, tmp_path):
    data, out, _ = runs["segment"]
    res = _cv([str(data), "--out", str(out), "--resume", "--task", "classify"])
    assert res.exit_code == 2 and "--task segment" in res.output
    res = _cv([str(runs["classify"][0]), "--out", str(out), "--resume"])  # other data than the folder's
    assert res.exit_code == 2 and "give the same data" in res.output
    res = _cv([str(data), "--out", str(tmp_path / "nothing"), "--resume"])
    assert res.exit_code == 2 and "no cross-validation to resume" in res.output


def test_segment_cv_is_an_alias_of_cv_task_segment():
    import typer

    res = runner.invoke(get_app(), ["segment-cv", "--help"])
    assert res.exit_code == 0 and "medlens cv --task segment" in res.output
    commands = typer.main.get_command(get_app()).commands  # type: ignore[attr-defined]
    cv, alias = ({p.name for p in commands[name].params} for name in ("cv", "segment-cv"))
    assert alias == cv - {"task"} and {"ensemble", "spatial_dims", "patch", "mask_pattern", "loss"} <= alias


# --- the driver's rules on a stand-in task (no training) ---------------------------------------
class FakeTask:
    """Items a..f in folds by position; a fold "trains" by writing done.json."""

    def __init__(self, folds: int = 2, config: dict | None = None, items: str = "abcdef") -> None:
        self.plan = CVPlan(task="fake", folds=folds, data="data", config=config or {"lr": 0.1},
                           unit="patient", group_column="patient")
        self.items, self.ran, self.loaded = list(items), [], []

    def prepare(self, out_dir: Path) -> None:
        pass

    def assign(self) -> Assignment:
        return Assignment(("patient",), [(i,) for i in self.items],
                          [j % self.plan.folds for j in range(len(self.items))])

    def fold_done(self, fold_dir: Path) -> bool:
        return (fold_dir / "done.json").exists()

    def run_fold(self, k, fold_of, fold_dir, *, resume):  # noqa: ANN001, ANN201
        self.ran.append((k, resume))
        fold_dir.mkdir(parents=True, exist_ok=True)
        held = [i for i, f in zip(self.items, fold_of) if f == k]
        (fold_dir / "done.json").write_text(json.dumps(held))
        return held

    def load_fold(self, k, fold_of, fold_dir):  # noqa: ANN001, ANN201
        self.loaded.append(k)
        return json.loads((fold_dir / "done.json").read_text())

    def summarise(self, results):  # noqa: ANN001, ANN201
        return {"held": results}

    def write_report(self, path: Path, cv, results) -> None:  # noqa: ANN001
        path.write_text("<html></html>")


def test_driver_writes_the_convention_and_resumes(tmp_path):
    out = tmp_path / "cv"
    cv = run_cv(FakeTask(), out)
    assert cv == {"task": "fake", "held": [["a", "c", "e"], ["b", "d", "f"]]}
    assert {p.name for p in out.iterdir()} == CONVENTION
    with pytest.raises(ConfigError, match="already holds a cross-validation; pass --resume"):
        run_cv(FakeTask(), out)
    (out / "fold_1" / "done.json").unlink()
    (out / "fold_1" / "checkpoints").mkdir()
    (out / "fold_1" / "checkpoints" / "last.pt").write_bytes(b"")
    task = FakeTask()
    assert run_cv(task, out, resume=True) == cv
    assert task.loaded == [0] and task.ran == [(1, True)]  # fold 0 read back, fold 1 from its checkpoint


def test_driver_refuses_a_resume_with_other_settings_or_data(tmp_path):
    out = tmp_path / "cv"
    run_cv(FakeTask(), out)
    with pytest.raises(ConfigError, match="3 folds|2 folds, not 3"):
        run_cv(FakeTask(folds=3), out, resume=True)
    with pytest.raises(ConfigError, match=r"another config \(lr\)"):
        run_cv(FakeTask(config={"lr": 0.2}), out, resume=True)
    with pytest.raises(ConfigError, match="data set or --folds changed"):
        run_cv(FakeTask(items="abcdeg"), out, resume=True)
    with pytest.raises(ConfigError, match="--folds must be an integer >= 2"):
        run_cv(FakeTask(folds=1), tmp_path / "other")


def test_resume_keeps_the_saved_fold_assignment(tmp_path):
    out = tmp_path / "cv"
    run_cv(FakeTask(), out)
    saved = (out / "folds.csv").read_text(encoding="utf-8")
    swapped = saved.replace(",0\n", ",x\n").replace(",1\n", ",0\n").replace(",x\n", ",1\n")
    (out / "folds.csv").write_text(swapped, encoding="utf-8")
    for k in (0, 1):
        (out / f"fold_{k}" / "done.json").unlink()
    cv = run_cv(FakeTask(), out, resume=True)
    assert cv["held"] == [["b", "d", "f"], ["a", "c", "e"]]  # the folds as saved, not recomputed
    assert cv_driver.read_plan(out)["task"] == "fake"


def test_resume_accepts_settings_added_after_the_plan_was_written(tmp_path):
    """A setting medlens gained later (its default keeps the old behaviour) does not block a
    resume; a changed nested setting still does, named with its path."""
    from medlens.pipelines.cv_driver import changed_settings

    out = tmp_path / "cv"
    run_cv(FakeTask(config={"lr": 0.1, "train": {"epochs": 5}}), out)
    (out / "fold_1" / "done.json").unlink()
    task = FakeTask(config={"lr": 0.1, "train": {"epochs": 5, "threads": None}, "slice_intensity": "none"})
    run_cv(task, out, resume=True)
    assert task.ran == [(1, False)]
    with pytest.raises(ConfigError, match=r"another config \(train.epochs\)"):
        run_cv(FakeTask(config={"lr": 0.1, "train": {"epochs": 6, "threads": None}, "slice_intensity": "none"}),
               out, resume=True)
    assert changed_settings({"a": 1, "b": {"c": 2}}, {"b": {"c": 2}}) == ["a"]  # a removed setting counts
