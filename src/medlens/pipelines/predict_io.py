"""Writing predictions to CSV or JSON (atomically)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from medlens.errors import ConfigError
from medlens.io.atomic import atomic_write_json, atomic_write_text


def write_predictions(rows: list[dict[str, Any]], out: str | Path, classes: list[str]) -> Path:
    out = Path(out)
    if out.suffix.lower() == ".json":
        return atomic_write_json(out, rows)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"--out must end in .csv or .json, got {out.name!r}")
    buf = io.StringIO()
    cols = ["file", "predicted", "disease_score", "decision", "threshold"] + [f"p_{c}" for c in classes]
    cols += ["ood", "ood_score", "ood_reasons", "error"]  # ood*: the out-of-distribution guard
    if any("tta" in r for r in rows):  # test-time augmentation used (predict --tta)
        cols.append("tta")
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        flat = {k: r.get(k, "") for k in cols if not k.startswith("p_")}
        for c in classes:
            flat[f"p_{c}"] = (r.get("probabilities") or {}).get(c, "")
        w.writerow(flat)
    return atomic_write_text(out, buf.getvalue())
