"""What ``medlens inspect PATH`` shows: a data set's layout, classes, splits, patients and
every unusable file with its reason."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from medlens.data.records import SPLITS, DatasetIndex, Problem, Record
from medlens.errors import ConfigError

logger = logging.getLogger(__name__)


def _probe(index: DatasetIndex, record: Record) -> tuple[tuple[int, ...] | None, str | None]:
    """Decode one record (and its mask); return its shape or the reason it is unusable."""
    from medlens.io.images import ImageReadError, read_image

    try:
        shape = read_image(record.path).shape
        if record.mask is not None:
            read_image(record.mask)
        return shape, None
    except ImageReadError as e:
        return None, e.reason
    except MemoryError:
        return None, "image too large to decode in memory"
    except Exception as e:
        logger.warning("unexpected error reading %s", record.path, exc_info=True)
        return None, f"unexpected {type(e).__name__} while reading: {e}"


def check_readable(index: DatasetIndex, *, workers: int = 1) -> DatasetIndex:
    """Decode every image; move unreadable ones into ``problems`` with the reason.

    Array-backed records (MedMNIST) are not decoded. Image shapes are tallied in
    ``info["image_shapes"]`` (``"HxWxC" → count``). Nothing is written to disk.

    Args:
        index: the indexed data set.
        workers: threads used to decode (PIL releases the GIL while decoding).
    """
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    files = [r for r in index.records if r.path.split("#", 1)[0] not in index.arrays]
    if workers > 1 and len(files) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda r: _probe(index, r), files))
    else:
        results = [_probe(index, r) for r in files]
    bad = {
        r.path: reason for r, (_, reason) in zip(files, results, strict=True) if reason is not None
    }
    shapes = Counter("x".join(map(str, s)) for s, _ in results if s is not None)
    for arrays in index.arrays.values():
        for arr in arrays.values():
            shp = arr.shape[1:] if arr.ndim == 4 else (*arr.shape[1:], 1)
            shapes["x".join(map(str, shp))] += len(arr)
    out = index.subset([r for r in index.records if r.path not in bad])
    out.problems = list(index.problems) + [Problem(p, reason) for p, reason in bad.items()]
    out.info["image_shapes"] = dict(shapes.most_common())
    out.info["readable_checked"] = True
    return out


def describe(index: DatasetIndex, *, top_patients: int = 10) -> dict[str, Any]:
    """Summarise ``index`` as plain data (JSON-serialisable)."""
    split_names = [s for s in SPLITS if any(r.split == s for r in index.records)]
    per_split = {s: index.class_counts(s) for s in split_names}
    unassigned = sum(r.split is None for r in index.records)
    patients: dict[str, Counter] = {}
    for r in index.records:
        if r.patient is not None:
            patients.setdefault(r.patient, Counter())[r.label] += 1
    ranked = sorted(patients.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    top = [
        {
            "patient": p,
            "images": sum(c.values()),
            "classes": {name: c.get(i, 0) for i, name in enumerate(index.classes) if c.get(i, 0)},
        }
        for p, c in ranked[:top_patients]
    ]
    severities = Counter(p.severity for p in index.problems)
    return {
        "root": index.root,
        "layout": index.layout,
        "task": index.task,
        "images": len(index),
        "masks": sum(r.mask is not None for r in index.records),
        "classes": list(index.classes),
        "class_names": index.info.get("class_names", {}),
        "class_counts": index.class_counts(),
        "unlabeled": sum(r.label is None for r in index.records),
        "splits": per_split,
        "unassigned_split": unassigned if split_names else None,
        "patients": len(patients),
        "patient_labels": index.patient_labels,
        "top_patients": top,
        "image_shapes": index.info.get("image_shapes"),
        "manifest": index.info.get("manifest"),
        "columns": index.info.get("columns"),
        "problems": [dataclasses.asdict(p) for p in index.problems],
        "errors": severities.get("error", 0),
        "warnings": severities.get("warning", 0),
    }


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return ["  " + fmt.format(*header)] + ["  " + fmt.format(*map(str, r)) for r in rows]


def _class_lines(desc: dict[str, Any]) -> list[str]:
    """Image counts per class (and per official split)."""
    names = desc.get("class_names") or {}
    lines = [f"Images:   {desc['images']:,} usable"
             + (f", {desc['unlabeled']:,} unlabeled" if desc.get("unlabeled") else ""), "", "Classes:"]
    splits = list(desc["splits"])
    rows = []
    for i, c in enumerate(desc["classes"]):
        label = f"{i}: {c}" + (f" ({names[c]})" if c in names else "")
        rows.append([label, desc["class_counts"][c], *(desc["splits"][s][c] for s in splits)])
    lines += _table(rows, ["class", "images", *splits])
    if desc.get("unassigned_split"):
        lines.append(f"  ({desc['unassigned_split']:,} images have no split)")
    if not splits:
        lines.append("  No official splits: medlens will make patient-grouped stratified ones.")
    return lines


def format_description(desc: dict[str, Any], *, max_problems: int = 200) -> str:
    """Plain-text report of :func:`describe` output, problems one per line as ``path: reason``."""
    segment = desc.get("task") == "segment"
    lines = [
        f"Data set: {desc['root']}",
        f"Layout:   {desc['layout']}  (task: {desc['task']})",
    ]
    cols = desc.get("columns") or {}
    if cols.get("label"):  # a manifest: say which column the classes come from
        others = ", ".join(f"{k} {v!r}" for k, v in cols.items() if v and k != "label")
        lines.append(f"Columns:  label {cols['label']!r} of {Path(desc['manifest']).name}"
                     + (f"; {others}" if others else "") + " (choose with --label-column)")
    if segment:  # image/mask pairs: no classes to count, masks instead
        lines += [f"Images:   {desc['images']:,} usable, {desc.get('masks', 0):,} with a mask", ""]
        if not desc["splits"]:
            lines.append("No official splits: medlens will split by patient.")
    else:
        lines += _class_lines(desc)
    lines.append("")
    if desc["patients"]:
        kind = "segmentation" if segment else (
            "patient-level labels" if desc["patient_labels"] else "image-level labels")
        lines.append(f"Patients: {desc['patients']:,} ({kind}); largest:")
        rows = [[p["patient"], p["images"], ", ".join(f"{k}={v}" for k, v in p["classes"].items())]
                for p in desc["top_patients"]]
        header = ["patient", "images", "classes"]
        if segment:
            rows, header = [r[:2] for r in rows], header[:2]
        lines += _table(rows, header)
    else:
        lines.append("Patients: unknown (each image counts as its own patient in splits)")
    if desc.get("image_shapes"):
        shapes = list(desc["image_shapes"].items())
        lines += [
            "",
            "Image shapes (HxWxC): "
            + ", ".join(f"{s} ×{n:,}" for s, n in shapes[:8])
            + (f", … {len(shapes) - 8} more" if len(shapes) > 8 else ""),
        ]
    probs = desc["problems"]
    lines += ["", f"Problems: {desc['errors']} files excluded, {desc['warnings']} warnings"]
    for p in probs[:max_problems]:
        tag = "" if p["severity"] == "error" else " [warning]"
        lines.append(f"  {p['path']}: {p['reason']}{tag}")
    if len(probs) > max_problems:
        lines.append(f"  … and {len(probs) - max_problems} more")
    return "\n".join(lines)


def inspect_path(
    path: str | os.PathLike[str], *, workers: int = 1, check: bool = True, **layout_opts: Any
) -> tuple[DatasetIndex, dict[str, Any]]:
    """Load ``path`` (see :func:`medlens.data.layouts.load_dataset`), decode every image
    unless ``check=False``, and describe it."""
    from medlens.data.layouts import load_dataset

    index = load_dataset(path, **layout_opts)
    if check:
        index = check_readable(index, workers=workers)
    return index, describe(index)
