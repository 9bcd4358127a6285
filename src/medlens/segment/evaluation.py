"""Evaluation of segmentation packages on held-out patients (``medlens evaluate``):
per-patient volume metrics, ``metrics.json``, ``per_patient.csv`` and the report, 2D or 3D
through the same data view (:mod:`medlens.segment.views`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from medlens.errors import BadInputError, ConfigError
from medlens.io.atomic import atomic_write_json, atomic_write_text


def write_per_patient(path: Path, rows: dict[str, dict[str, float]]) -> None:
    buf = io.StringIO()
    keys = sorted({k for r in rows.values() for k in r})
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["patient", *keys])
    for pid, r in sorted(rows.items(), key=lambda kv: kv[1].get("dice", 0)):
        w.writerow([pid, *(f"{r.get(k, float('nan')):.6g}" for k in keys)])
    atomic_write_text(path, buf.getvalue())


def evaluate_package(pkg: Any, data: str | Path, *, split: str = "test", out_dir: str | Path,
                     strict: bool = False, **layout_opts: Any) -> dict[str, Any]:
    """``medlens evaluate`` for a segmentation package: per-patient metrics + report in ``out_dir``.

    2D images unlike the training data are counted in ``metrics["ood"]`` and warned about;
    ``strict`` refuses them before anything is written.
    """
    from medlens.data.splits import load_splits
    from medlens.segment.layouts import load_segmentation_dataset
    from medlens.segment.metrics import summarise
    from medlens.segment.report import write_report
    from medlens.segment.views import package_view

    layout = layout_opts.get("layout")
    index = load_segmentation_dataset(data, layout=layout if layout not in ("", None) else None)
    run_dir = Path(pkg.path).parent
    table = load_splits(run_dir / "splits.csv") if (run_dir / "splits.csv").exists() else {}
    table = {str(Path(k).resolve()): v for k, v in table.items()}  # relative or absolute alike
    if split != "all":
        where = {r.path: table.get(str(Path(r.path).resolve())) for r in index.records}
        if not any(where.values()):
            raise ConfigError(f"{data}: the run's splits do not cover this data; use --split all")
        index = index.subset([r for r in index.records if where[r.path] == split])
        if not index.records:
            from medlens.evaluate.model_card import no_split_text

            raise BadInputError(f"{data}: no slices in split {split!r}" + no_split_text(
                split, run_dir / "splits.csv", "evaluate on other data, or use --split all knowing the package "
                "trained on it"))
    ood = _ood_check(pkg, index, strict=strict)
    meta = pkg.metadata
    view = package_view(meta, index)  # decoded as trained: size, channels, intensity policy (absent: default)
    rows, sl, probs = view.evaluate(pkg.model, "all", threshold=float(meta.get("threshold", 0.5)),
                                    device=pkg.device, postprocess=meta.get("postprocess"))
    metrics = {"split": split, "data": str(data), "model": str(pkg.path), **summarise(rows), "per_patient": rows,
               "ood": ood}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_per_patient(out_dir / "per_patient.csv", rows)
    write_report(out_dir / "report.html", sl, probs, rows, metrics, problems=view.problems,
                 threshold=float(meta.get("threshold", 0.5)), title=f"Evaluation on {Path(data).name} ({split})")
    return metrics


def _ood_check(pkg: Any, index: Any, *, strict: bool) -> dict[str, Any]:
    """The 2D inputs of ``index`` against the package's training fingerprint (volumes are not
    fingerprinted yet): warn about the flagged ones, refuse them under ``strict``."""
    from medlens.pipelines.ood_guard import check_index, refuse_flagged, summary, warn_flagged

    if not pkg.fingerprint or int(pkg.metadata.get("input", {}).get("spatial_dims", 2)) == 3:
        return {"checked": 0, "flagged": None, "note": "no 2D training-data fingerprint in the package"}
    from medlens.io.images import IMAGE_EXTENSIONS

    flat = index.subset([r for r in index.records if Path(r.path).suffix.lower() in IMAGE_EXTENSIONS])
    if not flat.records:
        return {"checked": 0, "flagged": None, "note": "no 2D images among the inputs"}
    results = check_index(pkg, flat)
    warn_flagged(results)
    if strict:
        refuse_flagged(results)
    return summary(results)
