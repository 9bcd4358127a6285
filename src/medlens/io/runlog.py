"""``run.log``: a plain-text log in every run folder, for the person who reads it later.

A run's console output is gone when the terminal closes; ``run.log`` keeps what was run
(the command line), with what (medlens, Python, torch, MONAI, NumPy versions), on what
settings (the arguments, resolved config included), every line the ``medlens`` loggers
wrote during the run, and how it ended (finished, or the error).

Pipelines take it with one decorator, :func:`logged_run`, naming the argument that is
their output folder (or a function of their result that returns it). The handler is
attached to the ``medlens`` logger for the call only and detached after, whatever
happens. Records are held in memory until the folder holds something besides this log
and a lock file, so a run that fails before writing anything (a wrong data path) still
leaves nothing behind, and a job refused because another holds the folder
(:class:`~medlens.errors.RunLockedError`) never writes into that job's log. A resumed
run appends to the log it finds.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

RUN_LOG = "run.log"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_NOT_OUTPUTS = {RUN_LOG, ".medlens.lock"}  # files that do not make a folder a run's output
_VERSIONS = ("torch", "monai", "numpy")

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class RunLogHandler(logging.Handler):
    """Writes log records to ``<folder>/run.log`` once the folder holds the run's output;
    until then (or while ``folder`` is unknown) they wait in memory."""

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(_FORMAT))
        self.folder = Path(folder) if folder is not None else None
        self.error: str | None = None  # why run.log could not be written
        self._pending: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None

    def set_folder(self, folder: str | os.PathLike[str] | None) -> None:
        """Name the folder once it is known (a pipeline that picks it as it goes)."""
        if self._file is None and folder is not None:
            self.folder = Path(folder)
            self._open()

    def emit(self, record: logging.LogRecord) -> None:
        if self._open() and self._file is not None:
            self._file.emit(record)
        elif self.error is None:
            self._pending.append(record)

    def note(self, message: str, level: int = logging.INFO) -> None:
        """A line for ``run.log`` only (the console has its own summary lines); it waits
        with the others, so the header alone never opens the file."""
        record = logging.LogRecord(__name__, level, __file__, 0, message, None, None)
        with self.lock or nullcontext():
            if self._file is not None:
                self._file.emit(record)
            elif self.error is None:
                self._pending.append(record)

    def discard(self) -> None:
        """Forget the waiting records and write nothing more (the folder is not ours)."""
        self._pending.clear()
        self.error = self.error or "discarded"

    def _open(self) -> bool:
        if self._file is not None:
            return True
        if self.error is not None or self.folder is None or not _has_output(self.folder):
            return False
        try:
            self._file = logging.FileHandler(self.folder / RUN_LOG, mode="a", encoding="utf-8")
        except OSError as e:  # a read-only or full disk: the run itself reports its outputs
            self.error = f"{self.folder / RUN_LOG}: {e.strerror or e}"
            self._pending.clear()
            return False
        self._file.setFormatter(self.formatter)
        for record in self._pending:
            self._file.emit(record)
        self._pending.clear()
        return True

    def close(self) -> None:
        self._open()  # the last chance for waiting records
        if self._file is not None:
            self._file.close()
        self._pending.clear()
        super().close()


def _has_output(folder: Path) -> bool:
    try:
        return any(p.name not in _NOT_OUTPUTS for p in folder.iterdir())
    except OSError:  # missing, or not a folder
        return False


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from medlens.version import __version__

    parts = [f"medlens {__version__}", f"python {platform.python_version()}"]
    for dist in _VERSIONS:
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts) + f"; {platform.platform()}"


def _plain(value: Any, depth: int = 0) -> Any:
    """A short JSON-able picture of an argument (configs in full, big objects by type)."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "model_dump"):  # a pydantic config: the resolved settings
        return value.model_dump(mode="json")
    if depth < 2 and isinstance(value, Mapping) and len(value) <= 50:
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if depth < 2 and isinstance(value, (list, tuple)) and len(value) <= 50:
        return [_plain(v, depth + 1) for v in value]
    path = getattr(value, "path", None)  # e.g. a loaded model package
    return f"<{type(value).__name__} {path}>" if isinstance(path, (str, os.PathLike)) else f"<{type(value).__name__}>"


@contextmanager
def run_log(folder: str | os.PathLike[str] | None, *, what: str = "run",
            settings: Mapping[str, Any] | None = None) -> Iterator[RunLogHandler]:
    """Record the ``medlens`` log lines of the ``with`` body in ``<folder>/run.log``.

    Args:
        folder: the run's output folder (``None``: named later with ``set_folder``).
        what: the job's name for the first line (e.g. the pipeline function).
        settings: written as one JSON line (arguments, resolved config).
    """
    logger = logging.getLogger("medlens")
    handler = RunLogHandler(folder)
    level = logger.level
    if level == logging.NOTSET:  # nobody configured logging (library use): still log INFO here
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    t0 = time.perf_counter()
    handler.note(f"{what} started: {shlex.join(sys.argv)}")
    handler.note(f"versions: {_versions()}")
    if settings:
        handler.note("settings: " + json.dumps(_plain(dict(settings)), default=str, sort_keys=True))
    try:
        yield handler
    except BaseException as e:
        from medlens.errors import RunLockedError

        if isinstance(e, RunLockedError):
            handler.discard()  # the folder belongs to the job that holds it
        else:
            handler.note(f"{what} failed after {time.perf_counter() - t0:.1f} s: "
                           f"{type(e).__name__}: {e}", logging.ERROR)
        raise
    else:
        handler.note(f"{what} finished in {time.perf_counter() - t0:.1f} s")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
        if handler.error not in (None, "discarded"):
            log.warning("run.log not written: %s", handler.error)


def logged_run(folder: str | Callable[[Any], str | os.PathLike[str] | None]) -> Callable[[F], F]:
    """Decorate a pipeline so that its output folder gets a ``run.log``.

    Args:
        folder: the name of the argument that is the output folder, or a function of the
            pipeline's result that returns it (when the pipeline chooses the folder).
    """

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            where = bound.arguments.get(folder) if isinstance(folder, str) else None
            what = f"{fn.__module__.removeprefix('medlens.')}.{fn.__name__}"
            with run_log(where, what=what, settings=bound.arguments) as handler:
                result = fn(*args, **kwargs)
                if callable(folder):
                    handler.set_folder(folder(result))
                return result

        return wrapper  # type: ignore[return-value]

    return deco
