"""Writing predictions to CSV or JSON (atomically)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medlens.errors import ConfigError
from medlens.io.atomic import atomic_write_json, atomic_write_text


def write_rows(rows: list[dict[str, Any]], out: str | Path, columns: list[str],
               flatten: Callable[[dict[str, Any]], dict[str, Any]]) -> Path:
    """Result rows as ``.json`` (everything, as given) or ``.csv`` (``columns``, each row
    through ``flatten``), written atomically; any other suffix is a usage error."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        return atomic_write_json(out, rows)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"--out must end in .csv or .json, got {out.name!r}")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        flat = flatten(r)
        w.writerow({k: flat.get(k, "") for k in columns})
    return atomic_write_text(out, buf.getvalue())


def class_probabilities(row: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """``p_<class>`` columns from a row's ``probabilities`` mapping."""
    return {f"p_{c}": (row.get("probabilities") or {}).get(c, "") for c in classes}


def write_predictions(rows: list[dict[str, Any]], out: str | Path, classes: list[str], *,
                      disease_score: bool = True) -> Path:
    """Prediction rows as CSV/JSON. ``disease_score=False`` (an argmax package, no negative
    class) leaves out the disease_score, decision and threshold columns: they would be empty."""
    head = ["disease_score", "decision", "threshold"] if disease_score else []
    cols = ["file", "predicted", *head] + [f"p_{c}" for c in classes]
    cols += ["ood", "ood_score", "ood_reasons", "error"]  # ood*: the out-of-distribution guard
    if any("tta" in r for r in rows):  # test-time augmentation used (predict --tta)
        cols.append("tta")
    return write_rows(rows, out, cols, lambda r: {**r, **class_probabilities(r, classes)})
