"""An exclusive lock on a folder while one job writes it.

Two jobs writing the same run folder mix their files (the folder ends with the second
job's model beside the first job's printed AUC). :func:`folder_lock` holds an
``fcntl.flock`` on ``<folder>/.medlens.lock`` for the job's lifetime; the file records
who holds it (pid, host, command, start time) for the refusal message. The kernel drops
a ``flock`` when its process dies, so a lock left by a killed job never blocks the
next one. The lock file is removed on release. Re-entering the same folder in the same
process is allowed (a workflow calling another that locks the same folder).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from medlens.errors import OutputError, RunLockedError

LOCK_NAME = ".medlens.lock"

_held: dict[Path, tuple[int, int]] = {}  # folder → (fd, depth) of locks this process holds
_guard = threading.Lock()


@contextmanager
def folder_lock(folder: str | os.PathLike[str], *, create: bool = True) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created when missing) inside the ``with``.

    Folders it created are removed again on exit if the job left them empty.

    Raises:
        RunLockedError: another live process holds it; the message names its pid and start.
        OutputError: the folder or its lock file cannot be written.
    """
    path = Path(folder)
    created = [d for d in (path, *path.parents) if not d.exists()] if create else []
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        key = path.resolve()
    except FileExistsError:
        raise OutputError(f"cannot write {path}: it is a file, not a folder; choose another --out") from None
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    with _guard:
        fd, depth = _held[key] if key in _held else (_acquire(path), 0)
        _held[key] = (fd, depth + 1)
    try:
        yield path
    finally:
        with _guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                _release(key, fd)
                for d in created:  # deepest first: a job that wrote nothing leaves no folder behind
                    try:
                        d.rmdir()
                    except OSError:
                        break


def lock_holder(folder: str | os.PathLike[str]) -> dict[str, object] | None:
    """What the lock file of ``folder`` says about its holder (None if absent or unreadable)."""
    try:
        info = json.loads((Path(folder) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _acquire(folder: Path) -> int:
    import fcntl

    lock = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"cannot write {folder}: {e.strerror or e} (creating {LOCK_NAME})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(_refusal(folder)) from None
        except OSError as e:
            os.close(fd)
            raise OutputError(f"cannot lock {lock}: {e.strerror or e}") from None
        try:  # the holder before us may have removed the file we opened: lock the current one
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
            "started": datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
    return fd


def _release(folder: Path, fd: int) -> None:
    try:
        os.unlink(folder / LOCK_NAME)  # while still holding it, so no one locks a file on its way out
    except OSError:
        pass
    finally:
        os.close(fd)  # closing drops the flock


def _refusal(folder: Path) -> str:
    info = lock_holder(folder) or {}
    who = f"pid {info.get('pid', '?')}"
    if info.get("host") and info.get("host") != socket.gethostname():
        who += f" on {info['host']}"
    started = f", started {info['started']}" if info.get("started") else ""
    return (f"{folder} is being written by another medlens job ({who}{started}); "
            "wait for it or choose another --out")
