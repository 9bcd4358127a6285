"""Listing a user's folder: every visible file below it, linked folders followed once.

Why: hospital and archive data often sit on another drive with the patient or study folders
linked in; ``os.walk`` and ``pathlib``'s ``rglob`` (before Python 3.13) do not enter linked
folders, so such a folder looked empty ("no CT scan found"). Following links risks a loop (a
link to a folder above it): each real folder is read once. Hidden files and folders (``.*``:
caches, macOS ``._`` forks) are skipped. Only lists; never writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def walk(root: str | os.PathLike[str], *, recursive: bool = True) -> Iterator[tuple[Path, list[str]]]:
    """``(folder, its visible file names sorted)`` for ``root`` and, with ``recursive``, every
    visible folder below it in sorted order, linked folders included, each real folder once."""
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        yield Path(folder), sorted(f for f in files if not f.startswith("."))


def files_under(root: str | os.PathLike[str]) -> list[Path]:
    """Every visible file below ``root`` (see :func:`walk`), sorted by path."""
    return sorted(folder / name for folder, names in walk(root) for name in names)
