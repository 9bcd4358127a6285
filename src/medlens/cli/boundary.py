"""The CLI's error boundary: what a user can cause becomes one ``error:`` line and an exit code.

Exit codes follow :mod:`medlens.errors` (0 success, 1 the job failed, 2 a usage error).
Besides medlens' own errors this translates the two families that reach the boundary
from libraries: pydantic's ``ValidationError`` (an invalid option value → usage error
naming the flag) and ``OSError`` from the environment (disk full, read-only or
permission-denied output, a file where a folder should be → :class:`OutputError`).
torch reports a failed write as a ``RuntimeError`` ("unexpected pos …") whose context is
the ``OSError``; the chain is searched for it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from medlens.errors import BadInputError, MedlensError, OutputError

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DENIED = {errno.EACCES, errno.EPERM}


def as_medlens_error(exc: BaseException) -> MedlensError | None:
    """The MedlensError ``exc`` stands for, or None when it is a bug (an internal error)."""
    if isinstance(exc, MedlensError):
        return exc
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        from medlens.config_errors import invalid_config

        return invalid_config(exc, what="option value")
    os_err = _os_error_in(exc)
    return _from_os_error(os_err) if os_err is not None else None


def _os_error_in(exc: BaseException) -> OSError | None:
    """``exc`` if it is an OSError; the OSError behind a RuntimeError (torch's writers)."""
    if isinstance(exc, OSError):
        return exc
    if not isinstance(exc, RuntimeError) or type(exc).__module__.startswith("typer"):
        return None  # typer.Exit / typer.Abort are RuntimeErrors too
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _from_os_error(e: OSError) -> MedlensError | None:
    path = e.filename if e.filename is not None else e.filename2
    where = f" {path}" if path is not None else ""
    code = e.errno
    if code in _DISK_FULL:
        return OutputError(f"disk full while writing{where or ' the output'}: free space and rerun"
                           + (" (use --resume to continue)" if _has_flag("--resume") else ""))
    if code == errno.EROFS:
        return OutputError(f"cannot write{where}: read-only file system — choose another --out")
    if code in _DENIED:
        if path is not None and _only_unreadable(Path(path)):
            return BadInputError(f"cannot read {path}: permission denied")
        return OutputError(f"cannot write{where}: permission denied (read-only folder?) — "
                           "choose another --out")
    if code in (errno.EEXIST, errno.ENOTDIR) and path is not None:
        blocker = _file_in_the_way(Path(path))
        if blocker is not None:
            return OutputError(f"cannot write {path}: {blocker} is a file, not a folder — "
                               "choose another --out")
        return OutputError(f"cannot write {path}: it already exists — choose another --out")
    if code == errno.EISDIR and path is not None:
        return BadInputError(f"{path} is a folder; a file is expected here")
    if code == errno.ENOENT and path is not None:
        return BadInputError(f"{path}: no such file or folder")
    if path is not None:  # another environment fault with a named file
        return BadInputError(f"{path}: {e.strerror or e}")
    return None


def _file_in_the_way(path: Path) -> Path | None:
    """The file (not folder) at ``path`` or at one of its parents, if any."""
    for p in (path, *path.parents):
        if p.exists():
            return p if not p.is_dir() else None
    return None


def _only_unreadable(path: Path) -> bool:
    """True when ``path`` exists, is writable but not readable: a read, not a write, failed."""
    try:
        return path.exists() and os.access(path, os.W_OK) and not os.access(path, os.R_OK)
    except OSError:
        return False


def _has_flag(flag: str) -> bool:
    from medlens.config_errors import current_flags

    flags = current_flags()
    return bool(flags) and flag in flags


def out_must_be_folder(out: Path | None) -> None:
    """Refuse early an ``--out`` that is a file (or lies under one), before any work is done.

    Raises:
        OutputError: naming the file in the way.
    """
    if out is None:
        return
    blocker = _file_in_the_way(Path(out))
    if blocker is not None:
        what = "is a file" if blocker == Path(out) else f"lies under {blocker}, which is a file"
        raise OutputError(f"--out {out} {what}, not a folder — choose another --out")
