"""Run folders are not lost, mixed up or used to run code.

* a second job on a folder another job is writing is refused (exit 1) and changes nothing;
* ``evaluate`` never writes over a run's own results;
* a crafted ``last.pt``, ``weights.pt`` or ``--pretrained`` file is refused and its code
  never runs (through the installed console script, as a user or a script would run it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medlens.errors import ConfigError, RunLockedError
from tests.test_io.test_lock import hold
from tests.test_io.test_weights import plant

FAST = ["--model", "test_cnn", "--size", "32", "--epochs", "1", "--batch-size", "32", "--no-audit"]


def medlens(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed console script, as a shell script runs it."""
    exe = Path(sys.executable).with_name("medlens")
    if not exe.is_file():
        pytest.skip(f"console script {exe} not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("MEDLENS_DEBUG", None)
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".medlens.lock"}


def one_error_line(res: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the session's trained run (tests may plant files in it)."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


# --- the run-folder lock -------------------------------------------------------------

def test_train_into_a_folder_another_job_writes_is_refused(idc_small, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"first": "job"}')
    (run / "metrics.json").write_text('{"roc_auc": 0.9}')
    before = tree(run)
    holder = hold(run)
    try:
        res = medlens("train", str(idc_small), "--out", str(run), *FAST)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert res.returncode == 1, res.stdout + res.stderr
    line = one_error_line(res)
    assert f"is being written by another medlens job (pid {holder.pid}" in line and "--out" in line
    assert tree(run) == before, "the refused job must not touch the first job's files"


def test_every_writing_command_takes_the_lock(idc_small, tmp_path):
    from medlens.models import create_model
    from medlens.package import save_model_package
    from medlens.pipelines.config import RunConfig
    from medlens.pipelines.crossval import cross_validate
    from medlens.pipelines.demo import run_demo
    from medlens.pipelines.evaluate_run import evaluate_model
    from medlens.segment import crossval as segment_cv
    from medlens.segment import workflow
    from medlens.segment.config import SegmentConfig

    pkg_run = tmp_path / "pkg-run"
    save_model_package(pkg_run / "model", create_model("test_cnn", num_classes=2, in_channels=3),
                       model_name="test_cnn", model_kwargs={"num_classes": 2, "in_channels": 3},
                       metadata={"task": "classify", "classes": ["0", "1"]})
    out = tmp_path / "busy"
    holder = hold(out)
    try:
        jobs = {
            "cv": lambda: cross_validate(RunConfig(data={"path": str(idc_small)}), out, folds=2),
            "segment-cv": lambda: segment_cv.cross_validate(SegmentConfig(data=str(idc_small)), out, folds=2),
            "segment train": lambda: workflow.train_segmentation(SegmentConfig(data=str(idc_small)), out),
            "demo": lambda: run_demo(out, quick=True),
            "evaluate": lambda: evaluate_model(pkg_run, idc_small, split="all", out=out),
        }
        for name, job in jobs.items():
            with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
                job()
            assert sorted(p.name for p in out.iterdir()) == [".medlens.lock"], name
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# --- evaluate writes its own folder ------------------------------------------------------

def test_evaluate_writes_beside_the_run_and_never_over_it(run_copy, idc_small):
    from medlens.pipelines.evaluate_run import evaluate_model

    before = tree(run_copy)
    for out in (None, run_copy, run_copy / "model"):
        if out is not None:
            with pytest.raises(ConfigError, match="training run or model folder"):
                evaluate_model(run_copy, idc_small, split="test", out=out)
            assert tree(run_copy) == before
    metrics, out_dir = evaluate_model(run_copy, idc_small, split="test")
    assert out_dir.parent == run_copy / "evaluations" and out_dir.name.startswith("data-test-")
    assert json.loads((out_dir / "metrics.json").read_text())["split"] == "test"
    assert (out_dir / "report.html").exists()
    changed = {k for k in set(tree(run_copy)) | set(before) if tree(run_copy).get(k) != before.get(k)}
    assert all(k.startswith("evaluations/") for k in changed), changed
    with pytest.raises(ConfigError, match="already holds results"):  # an earlier evaluation is kept too
        evaluate_model(run_copy, idc_small, split="test", out=out_dir)


def test_evaluate_out_run_exits_2_through_the_console_script(run_copy, idc_small):
    before = tree(run_copy)
    res = medlens("evaluate", str(run_copy), str(idc_small), "--out", str(run_copy))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "training run or model folder" in one_error_line(res)
    assert tree(run_copy) == before


# --- planted pickles through the CLI -----------------------------------------------------

def test_resume_from_a_crafted_checkpoint_runs_no_code(run_copy, idc_small, tmp_path):
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg["data"]["audit"] = False  # get to the checkpoint sooner
    (run_copy / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "marker"
    plant(run_copy / "checkpoints" / "last.pt", marker)
    res = medlens("train", str(idc_small), "--out", str(run_copy), "--resume")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "refusing to load" in one_error_line(res) and "last.pt" in res.stderr
    assert not marker.exists()


def test_predict_with_a_crafted_package_runs_no_code(run_copy, idc_small, tmp_path):
    marker = tmp_path / "marker"
    plant(run_copy / "model" / "weights.pt", marker, wrap=None)
    img = next(idc_small.rglob("*.png"))
    res = medlens("predict", str(run_copy), str(img))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "refusing to load" in one_error_line(res) and "weights.pt" in res.stderr
    assert not marker.exists()


def test_pretrained_crafted_file_runs_no_code(idc_small, tmp_path):
    marker = tmp_path / "marker"
    weights = plant(tmp_path / "imagenet.pth", marker, wrap="state_dict")
    res = medlens("train", str(idc_small), "--out", str(tmp_path / "run"), *FAST, "--pretrained", str(weights))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "refusing to load" in one_error_line(res) and "imagenet.pth" in res.stderr
    assert not marker.exists()
