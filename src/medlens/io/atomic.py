"""Atomic writes: a model, checkpoint or report is either fully written or absent.

Files are written beside their target and renamed over it. Folders (the model package)
are filled under a temporary name and swapped in by :func:`atomic_write_dir`; the
temporary names say what a folder left by a killed process holds, so the next reader
(:func:`recover_dir`) or writer can put a complete one back and clean the rest:

* ``.<name>.tmp-<pid>-<r>``: being filled, maybe incomplete; never restored;
* ``.<name>.new-<pid>-<r>``: complete new contents, about to be swapped in;
* ``.<name>.old-<pid>-<r>``: complete old contents, swapped out.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


def atomic_write(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> Path:
    """Write via ``writer(fileobj)`` to a temp file beside ``path``, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        # name the file a failed write was for (torch wraps the OSError in a RuntimeError)
        cause = e if isinstance(e, OSError) else e.__context__ if isinstance(e, RuntimeError) else None
        if isinstance(cause, OSError) and cause.errno and cause.filename is None:
            raise OSError(cause.errno, cause.strerror, str(path)) from e
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_write_dir(path: str | os.PathLike[str], fill: Callable[[Path], None]) -> Path:
    """Replace folder ``path`` by one that ``fill(tmp_dir)`` writes; readers never miss it.

    On Linux the complete new folder and the old one are exchanged in one
    ``renameat2(RENAME_EXCHANGE)`` call. Where that is unavailable the old folder is
    renamed away first and the new one renamed in; a kill between the two leaves both
    complete, and :func:`recover_dir` puts the new one in place. Temporaries left by dead
    processes are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_dirs(path)
    pid = os.getpid()
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{pid}-", dir=path.parent))
    new = tmp.with_name(tmp.name.replace(".tmp-", ".new-", 1))
    old = new.with_name(new.name.replace(".new-", ".old-", 1))
    try:
        fill(tmp)
        _fsync_tree(tmp)
        os.replace(tmp, new)  # from here on the folder is known complete
        if path.exists() and _exchange(new, path):
            _fsync_dir(path.parent)
            shutil.rmtree(new, ignore_errors=True)  # now holds the old contents
            return path
        if path.exists():
            os.replace(path, old)
        os.replace(new, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if not path.exists() and old.exists():  # failed between the renames: put the old back
            os.replace(old, path)
        for leftover in (tmp, new):
            shutil.rmtree(leftover, ignore_errors=True)
        raise
    return path


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|new|old)-(?P<pid>\d+)(?:-.*)?$")
_LEGACY_TMP_AGE_S = 3600.0  # ".<name>.XXXXXXXX" from versions that wrote no pid


def _temporaries(path: Path) -> list[tuple[str, int | None, Path]]:
    """``(kind, owner pid, folder)`` for each temporary of ``path`` beside it."""
    out: list[tuple[str, int | None, Path]] = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return out
    prefix = f".{path.name}."
    for p in siblings:
        if not p.name.startswith(prefix) or not p.is_dir():
            continue
        m = _TEMP.match(p.name)
        if m and m["name"] == path.name:
            out.append((m["kind"], int(m["pid"]), p))
        elif re.fullmatch(r"[A-Za-z0-9_]{8}", p.name[len(prefix):]):
            out.append(("tmp", None, p))  # mkdtemp name of an older medlens
    return out


def _dead(pid: int | None, folder: Path) -> bool:
    if pid is None:
        try:
            return time.time() - folder.stat().st_mtime > _LEGACY_TMP_AGE_S
        except OSError:
            return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def recover_dir(path: str | os.PathLike[str]) -> Path | None:
    """Put back folder ``path`` if a killed :func:`atomic_write_dir` left it missing.

    The complete new contents are preferred over the old; among several, the most recent.
    Returns ``path`` when it exists (or was restored), a complete temporary when ``path``
    cannot be restored (a read-only folder: read it in place), else None.
    """
    path = Path(path)
    if path.exists():
        return path
    rank = {"new": 0, "old": 1}
    cands = [(rank[k], -_mtime(p), p) for k, pid, p in _temporaries(path) if k in rank and _dead(pid, p)]
    if not cands:
        return None
    best = min(cands)[2]
    try:
        os.replace(best, path)
    except OSError as e:
        if path.exists():  # another reader restored it first
            return path
        log.warning("cannot restore %s from %s (%s); reading it in place", path, best, e)
        return best
    log.warning("restored %s from %s, left by an interrupted save", path, best.name)
    return path


def clean_stale_dirs(path: str | os.PathLike[str]) -> None:
    """Restore ``path`` if needed, then delete its temporaries whose writer is gone."""
    path = Path(path)
    recover_dir(path)
    for _, pid, p in _temporaries(path):
        if _dead(pid, p):
            shutil.rmtree(p, ignore_errors=True)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):  # kernel or file system lacks it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths."""
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serialisable")
