"""``nodules.csv``: the detections of ``medlens ct detect``, one row per finding.

Columns (:data:`medlens.ct.findings.NODULE_COLUMNS`): ``seriesuid, coordX, coordY, coordZ``
(LPS mm, LUNA16's names, so the file feeds LUNA16's evaluation script as a submission),
``index_i, index_r, index_c`` (the same centre as a continuous array index),
``diameter_mm, nodule_prob, malignancy_prob`` (empty when not scored). The file is written
atomically: a reader sees the old file or the whole new one, never half of it.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable
from pathlib import Path

from medlens.ct.findings import NODULE_COLUMNS, Finding
from medlens.errors import BadInputError
from medlens.io.atomic import atomic_write_text


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)  # repr: shortest exact round trip
    return str(value)


def write_nodules_csv(findings: Iterable[Finding], path: str | os.PathLike[str]) -> Path:
    """Write ``findings`` (in the given order) as ``nodules.csv`` at ``path``, atomically.

    A header is written even without findings, so "nothing found" is a valid file.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(NODULE_COLUMNS)
    for f in findings:
        row = f.to_row()
        w.writerow([_text(row[c]) for c in NODULE_COLUMNS])
    return atomic_write_text(path, buf.getvalue())


def read_nodules_csv(path: str | os.PathLike[str]) -> list[Finding]:
    """Read a ``nodules.csv`` back (e.g. to evaluate detections made earlier).

    Raises:
        BadInputError: missing file or columns, or a row whose numbers do not parse —
            naming the file and the row.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInputError(f"{path}: cannot read the nodules file ({e.strerror or e})") from e
    reader = csv.DictReader(io.StringIO(text))
    required = [c for c in NODULE_COLUMNS if c not in ("malignancy_prob", "why")]
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                            f"{','.join(NODULE_COLUMNS)}")
    out = []
    for line, row in enumerate(reader, start=2):
        try:
            f = Finding.from_row(row)
        except (TypeError, ValueError) as e:
            raise BadInputError(f"{path}, row {line}: {e}; fix or delete that row") from e
        if not all(math.isfinite(v) for v in (*f.center_xyz, *f.center_irc, f.diameter_mm, f.nodule_prob)):
            raise BadInputError(f"{path}, row {line}: non-finite coordinate, diameter or probability")
        out.append(f)
    return out
