"""A training run killed with SIGKILL resumes from its last checkpoint and ends identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ARGS = ["--model", "test_cnn", "--size", "32", "--epochs", "5", "--batch-size", "16", "--no-audit",
        "--seed", "3"]


def _train(data, out, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MEDLENS_DEBUG="1")
    return subprocess.Popen([sys.executable, "-m", "medlens", "-q", "train", str(data), "--out", str(out), *ARGS,
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_then_resume_matches_uninterrupted(idc_small, tmp_path):
    full = _train(idc_small, tmp_path / "full")  # runs beside the victim: one thread each
    victim = _train(idc_small, tmp_path / "killed")
    ckpt = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "metrics.json").exists()
    out_full, _ = full.communicate(timeout=300)
    assert full.returncode == 0, out_full.decode()[-2000:]

    resumed = _train(idc_small, tmp_path / "killed", "--resume")
    out_res, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out_res.decode()[-2000:]
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    for key in ("roc_auc", "accuracy", "sensitivity", "specificity"):
        assert a[key] == b[key], key
    assert a["training"]["best_epoch"] == b["training"]["best_epoch"]
    hist_a = (tmp_path / "full" / "logs" / "history.csv").read_text().splitlines()
    hist_b = (tmp_path / "killed" / "logs" / "history.csv").read_text().splitlines()
    assert [r.split(",")[:5] for r in hist_a] == [r.split(",")[:5] for r in hist_b]
