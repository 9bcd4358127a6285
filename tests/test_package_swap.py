"""The model package swap survives a kill at any step: a complete package is always found.

A subprocess writes a new package over an old one and SIGKILLs itself at a chosen step
(the kill is injected by patching the subprocess's own ``os.replace`` / ``shutil.rmtree``
/ fill function, nothing in medlens knows about it). The test then loads the package and
checks it holds the old or the new weights, and that the next save cleans the leftovers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medlens.package import find_package, load_package, save_model_package

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

KILLER = r"""
import os, shutil, signal, sys
from pathlib import Path
from medlens.io import atomic

mode, pkg, src = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)

def fill(d):
    for f in src.iterdir():
        shutil.copy2(f, d / f.name)

if mode == "between-renames":  # no renameat2: the old folder is renamed away, then the kill
    atomic._exchange = lambda a, b: False
    real_replace = os.replace
    def replace(a, b):
        if Path(b) == pkg and ".new-" in Path(a).name:
            die()
        real_replace(a, b)
    os.replace = replace
elif mode == "after-exchange":  # swapped, killed before the old contents are deleted
    real_rmtree = shutil.rmtree
    def rmtree(p, *a, **k):
        if ".new-" in Path(p).name:
            die()
        real_rmtree(p, *a, **k)
    shutil.rmtree = rmtree
elif mode == "while-filling":
    def fill(d):
        (d / "weights.pt").write_bytes(b"half a file")
        die()
atomic.atomic_write_dir(pkg, fill)
"""


def _save(path: Path, value: float) -> Path:
    from medlens.models import create_model

    model = create_model("test_cnn", num_classes=2, in_channels=3)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return save_model_package(path, model, model_name="test_cnn", model_kwargs={"num_classes": 2, "in_channels": 3},
                              metadata={"task": "classify", "classes": ["a", "b"]})


def _value(run: Path) -> float:
    model, _ = load_package(run)
    return float(next(model.parameters()).detach().flatten()[0])


def _leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith(".model."))


@pytest.mark.parametrize(("mode", "expected"), [("between-renames", 2.0), ("after-exchange", 2.0),
                                                ("while-filling", 1.0)])
def test_kill_during_the_swap_leaves_a_loadable_package(tmp_path, mode, expected):
    run = tmp_path / "run"
    _save(run / "model", 1.0)
    src = _save(tmp_path / "incoming", 2.0)
    p = subprocess.run([sys.executable, "-c", KILLER, mode, str(run / "model"), str(src)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    if mode == "between-renames":
        assert not (run / "model").exists(), "the kill must land between the two renames"
    assert _leftovers(run), "the killed save leaves a temporary behind"

    assert find_package(run) == run / "model"  # a reader puts a complete package back
    assert _value(run) == expected  # new weights when the new package was complete, else the old
    _save(run / "model", 3.0)
    assert _leftovers(run) == [], "the next save removes the dead writer's temporaries"
    assert _value(run) == 3.0
