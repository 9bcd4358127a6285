"""File-system helpers shared by the dataset layouts (listing, indexing; never writing)."""

from __future__ import annotations

import os
from pathlib import Path

from medlens.data.records import DatasetIndex, Problem, Record
from medlens.errors import BadInputError
from medlens.io.images import IMAGE_EXTENSIONS
from medlens.io.walk import walk


def visible_dirs(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` not starting with ``.``, sorted."""
    try:
        return sorted(
            Path(e.path) for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")
        )
    except OSError as e:
        raise BadInputError(f"{folder}: cannot list folder ({e})") from None


def images_in(folder: Path, *, recursive: bool = True) -> list[Path]:
    """Image files (by extension, case-insensitive) below ``folder``, sorted, hidden skipped,
    linked folders followed (:func:`medlens.io.walk.walk`)."""
    return sorted(d / f for d, names in walk(folder, recursive=recursive) for f in names
                  if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)


def has_images(folder: Path, depth: int) -> bool:
    """Whether ``folder`` or its sub-folders down to ``depth`` levels hold an image file."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
            return True
    return depth > 0 and any(
        has_images(Path(e.path), depth - 1) for e in entries if e.is_dir() and e.name[0] != "."
    )


def stray_images(folder: Path, where: str) -> list[Problem]:
    """A problem for each image directly in ``folder`` (outside any class folder)."""
    return [
        Problem(str(f), f"image directly under {where} is not in a class folder; ignored")
        for f in images_in(folder, recursive=False)
    ]


def build_index(
    root: Path,
    layout: str,
    records: list[Record],
    problems: list[Problem],
    classes: list[str],
    **kw,
) -> DatasetIndex:
    """A :class:`DatasetIndex` of ``records`` (sorted by path) found under ``root``."""
    return DatasetIndex(
        root=str(root),
        layout=layout,
        classes=classes,
        records=sorted(records, key=lambda r: r.path),
        problems=problems,
        **kw,
    )
