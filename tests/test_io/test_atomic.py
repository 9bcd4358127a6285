from __future__ import annotations

import json
import os
import stat

import pytest

from medlens.io.atomic import atomic_write, atomic_write_json


def test_atomic_json_round_trip_and_permissions(tmp_path):
    p = atomic_write_json(tmp_path / "a" / "m.json", {"x": 1})
    assert json.loads(p.read_text()) == {"x": 1}
    assert stat.S_IMODE(os.stat(p).st_mode) & 0o044  # readable by others like any normal file


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "m.json"
    atomic_write_json(p, {"old": True})

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert json.loads(p.read_text()) == {"old": True}
    assert [f.name for f in tmp_path.iterdir()] == ["m.json"]


# --- folder swap: a reader always finds a complete folder ------------------------------

def _fill(text: str):
    def fill(d):
        (d / "weights.txt").write_text(text)
        (d / "meta.txt").write_text(text)
    return fill


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(p.stdout)


def test_write_dir_replaces_a_folder_and_leaves_no_temporaries(tmp_path):
    from medlens.io.atomic import atomic_write_dir

    pkg = tmp_path / "model"
    atomic_write_dir(pkg, _fill("old"))
    atomic_write_dir(pkg, _fill("new"))
    assert (pkg / "weights.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failed_fill_keeps_the_old_folder(tmp_path):
    from medlens.io.atomic import atomic_write_dir

    pkg = tmp_path / "model"
    atomic_write_dir(pkg, _fill("old"))

    def boom(d):
        (d / "weights.txt").write_text("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_dir(pkg, boom)
    assert (pkg / "weights.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failure_between_the_renames_puts_the_old_folder_back(tmp_path, monkeypatch):
    from medlens.io import atomic

    pkg = tmp_path / "model"
    atomic.atomic_write_dir(pkg, _fill("old"))
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # the two-rename fallback
    real = os.replace

    def fail_second(src, dst):
        if str(dst) == str(pkg) and ".model.new-" in str(src):  # the new folder's rename fails
            raise OSError(5, "I/O error")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", fail_second)
    with pytest.raises(OSError):
        atomic.atomic_write_dir(pkg, _fill("new"))
    assert (pkg / "weights.txt").read_text() == "old"


def test_recover_prefers_complete_new_over_old_and_skips_incomplete(tmp_path):
    from medlens.io.atomic import clean_stale_dirs, recover_dir

    pid = _dead_pid()
    for kind, text in (("tmp", "partial"), ("old", "old"), ("new", "new")):
        d = tmp_path / f".model.{kind}-{pid}-x1"
        d.mkdir()
        (d / "weights.txt").write_text(text)
    assert recover_dir(tmp_path / "model") == tmp_path / "model"
    assert (tmp_path / "model" / "weights.txt").read_text() == "new"
    clean_stale_dirs(tmp_path / "model")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_temporaries_of_a_live_writer_are_left_alone(tmp_path):
    from medlens.io.atomic import clean_stale_dirs

    live = tmp_path / f".model.tmp-{os.getppid()}-x1"  # our parent: alive
    live.mkdir()
    (tmp_path / "model").mkdir()
    clean_stale_dirs(tmp_path / "model")
    assert live.exists()


def test_legacy_old_folder_from_a_killed_swap_is_restored(tmp_path):
    """Older medlens named the swapped-out package ``.model.old-<pid>`` (no suffix)."""
    from medlens.io.atomic import recover_dir

    old = tmp_path / f".model.old-{_dead_pid()}"
    old.mkdir()
    (old / "weights.txt").write_text("old")
    assert recover_dir(tmp_path / "model") is not None
    assert (tmp_path / "model" / "weights.txt").read_text() == "old" and not old.exists()
