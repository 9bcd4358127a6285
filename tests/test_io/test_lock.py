"""The folder lock: one writer per run folder, and a dead writer never blocks the next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from medlens.errors import OutputError, RunLockedError
from medlens.io.lock import LOCK_NAME, folder_lock, lock_holder

HOLD = ("import sys; from medlens.io.lock import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n"
        "    print('locked', flush=True); sys.stdin.read()\n")


def hold(folder: Path) -> subprocess.Popen:
    """Another process holding the lock of ``folder`` until its stdin is closed."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_writer_is_refused_while_the_first_holds_it(tmp_path):
    run = tmp_path / "run"
    holder = hold(run)
    try:
        info = lock_holder(run)
        assert info is not None and info["pid"] == holder.pid and info["started"]
        with pytest.raises(RunLockedError, match=rf"{run} is being written by another medlens job "
                                                 rf"\(pid {holder.pid}, started .*\); wait for it or choose another --out"):
            with folder_lock(run):
                pass
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with folder_lock(run):  # released on exit
        assert (run / LOCK_NAME).exists()
    assert not (run / LOCK_NAME).exists(), "the lock file is removed on release"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_lock_of_a_killed_job_does_not_block(tmp_path):
    run = tmp_path / "run"
    holder = hold(run)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (run / LOCK_NAME).exists(), "a killed job leaves its lock file behind"
    with folder_lock(run):
        assert lock_holder(run)["pid"] == os.getpid()


def test_reentrant_in_one_process_and_leaves_no_empty_folder(tmp_path):
    run = tmp_path / "a" / "run"
    with folder_lock(run):
        with folder_lock(run):  # a workflow calling another on the same folder
            pass
        assert (run / LOCK_NAME).exists(), "the inner exit keeps the outer lock"
    assert not (tmp_path / "a").exists(), "folders the lock created and nobody wrote to are removed"
    with folder_lock(run):
        (run / "result.txt").write_text("x")
    assert (run / "result.txt").read_text() == "x"


def test_a_file_where_the_folder_should_be_is_an_output_error(tmp_path):
    f = tmp_path / "run"
    f.write_text("mine")
    with pytest.raises(OutputError, match="is a file"):
        with folder_lock(f):
            pass
    assert f.read_text() == "mine"
