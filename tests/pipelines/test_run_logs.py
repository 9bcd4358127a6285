"""Every run folder gets a ``run.log``: train (classify, segment), cv, segment-cv, evaluate,
probe, demo. Tiny generated data, CliRunner in-process (exit codes are tested elsewhere
through the console script)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medlens.cli.main import get_app
from medlens.io.runlog import RUN_LOG, RunLogHandler

FAST = ["--epochs", "1", "--max-steps", "2", "--batch-size", "16", "--seed", "0"]


def _run(args: list[str]) -> None:
    res = CliRunner().invoke(get_app(), args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert not [h for h in logging.getLogger("medlens").handlers if isinstance(h, RunLogHandler)]


def _check_log(folder: Path, command: str) -> str:
    text = (folder / RUN_LOG).read_text(encoding="utf-8")
    assert re.search(r"started: .*", text) and "versions: medlens " in text and "settings: {" in text
    assert "finished in" in text, text[-500:]
    # lines of the pipeline's own loggers, not only the header
    assert re.search(r" INFO +medlens\.(?!io\.runlog)[\w.]+: ", text), text
    assert command in text
    return text


@pytest.fixture(scope="module")
def idc(tmp_path_factory) -> Path:
    from medlens.data.synthetic import make_idc_like

    root = tmp_path_factory.mktemp("idc") / "data"
    make_idc_like(root, patients=6, patches_per_patient=12, size=50, seed=1)
    return root


@pytest.fixture(scope="module")
def seg(tmp_path_factory) -> Path:
    from medlens.data.synthetic.brain import make_brain_mri_like

    root = tmp_path_factory.mktemp("seg") / "data"
    make_brain_mri_like(root, patients=4, slices=4, size=32, seed=0)
    return root


@pytest.fixture(scope="module")
def classify_run(idc, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    _run(["train", str(idc), "-o", str(out), "-m", "test_cnn", "--size", "32", "--no-audit", *FAST])
    return out


def test_train_writes_run_log(classify_run):
    text = _check_log(classify_run, "train_classifier")
    assert re.search(r"medlens\.train\.engine: epoch \d+: train_loss=", text)
    assert '"name": "test_cnn"' in text  # the resolved config


def test_evaluate_writes_run_log_beside_its_metrics(classify_run, idc):
    _run(["evaluate", str(classify_run), str(idc)])
    (metrics,) = (classify_run / "evaluations").rglob("metrics.json")
    _check_log(metrics.parent, "evaluate_model")


def test_probe_writes_run_log(classify_run, idc, tmp_path):
    _run(["probe", str(classify_run), str(idc), "-o", str(tmp_path / "probes"), "-p", "blur",
          "--max-images", "8"])
    assert (tmp_path / "probes" / RUN_LOG).is_file()
    text = (tmp_path / "probes" / RUN_LOG).read_text(encoding="utf-8")
    assert "probe_files started" in text and "finished in" in text


def test_cv_writes_run_log(idc, tmp_path):
    out = tmp_path / "cv"
    _run(["cv", str(idc), "-k", "2", "-o", str(out), "-m", "test_cnn", "--size", "32", "--no-audit", *FAST])
    _check_log(out, "cross_validate")


def test_segment_train_and_cv_write_run_logs(seg, tmp_path):
    run = tmp_path / "seg-run"
    _run(["train", str(seg), "--task", "segment", "-o", str(run), "-m", "test_unet", "--size", "32", *FAST])
    _check_log(run, "train_segmentation")
    cv = tmp_path / "seg-cv"
    _run(["segment-cv", str(seg), "-k", "2", "-o", str(cv), "-m", "test_unet", "--size", "32", "--epochs", "1",
          "--max-steps", "2", "--batch-size", "16"])
    text = _check_log(cv, "segment.crossval.cross_validate")
    assert "train_segmentation" not in text.split("\n", 1)[0]
    assert (cv / "fold_0" / RUN_LOG).is_file() and (cv / "fold_1" / RUN_LOG).is_file()


def test_every_run_pipeline_is_logged():
    """The decorator is on each pipeline a command calls (demo included: its own run.log in
    --out, and the training run's in --out/run)."""
    from medlens.explain.files import probe_files
    from medlens.pipelines import classification, crossval, demo, evaluate_run
    from medlens.segment import crossval as segment_cv
    from medlens.segment import workflow

    for fn in (classification.train_classifier, crossval.cross_validate, evaluate_run.evaluate_model,
               demo.run_demo, workflow.train_segmentation, segment_cv.cross_validate, probe_files):
        assert getattr(fn, "__wrapped__", None) is not None, fn.__qualname__
