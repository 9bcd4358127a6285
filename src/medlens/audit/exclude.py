"""The exclude list: files the audit advises leaving out, one path per line.

The audit never touches user files; ``medlens train --exclude FILE`` skips the listed
ones instead. Lines starting with ``#`` are comments.
"""

from __future__ import annotations

import os
from pathlib import Path

from medlens.errors import BadInputError
from medlens.io.atomic import atomic_write_text


def write_exclude_list(path: str | os.PathLike[str], paths: list[str], *, header: str = "") -> Path:
    """Write ``paths`` (one per line, with an optional ``#`` comment header) atomically."""
    bad = [p for p in paths if "\n" in p or "\r" in p]
    if bad:
        raise BadInputError(f"cannot write an exclude list: path contains a line break: {bad[0]!r}")
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    return atomic_write_text(path, "\n".join(lines + list(paths)) + "\n")


def read_exclude_list(path: str | os.PathLike[str]) -> set[str]:
    """Paths listed in an exclude file (blank lines and ``#`` comments ignored).

    Raises:
        BadInputError: the file does not exist or cannot be read as UTF-8 text.
    """
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"exclude list {p} not found; write one with `medlens audit DATA --exclude-list {p}`")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"cannot read exclude list {p}: {e}") from None
    return {s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")}
