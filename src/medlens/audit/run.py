"""Orchestration: one streaming pass over the files, then the data-set-level checks.

Memory: pixels are dropped as soon as each file's measurements are taken; what grows
with the data set is a row of ~20 floats, two hashes and an 8×8 grey thumbnail per image
(≈ 350 bytes), which the shortcut model, the outlier and near-duplicate searches need. Thumbnails are made at the end by
re-reading only the few flagged files (bounded by ``max_thumbnails``).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from medlens.audit.confounding import patient_confounding
from medlens.audit.duplicates import exact_groups, near_groups, summarise_groups
from medlens.audit.exclude import write_exclude_list
from medlens.audit.files import probe_record, to_uint8
from medlens.audit.hashing import BLANK_STD, phash64, pixel_hash, thumb8
from medlens.audit.labels import label_findings
from medlens.audit.outliers import find_outliers
from medlens.audit.report import make_thumbnails, write_report
from medlens.audit.result import AuditResult
from medlens.audit.shortcut import shortcut_test
from medlens.audit.stats import (
    FEATURES,
    FORMAT_CODES,
    ClassHistograms,
    PatientColour,
    colour_warning,
    counts_by,
    per_class_summary,
    pixel_stats,
)
from medlens.data.records import DatasetIndex
from medlens.errors import ConfigError

log = logging.getLogger(__name__)

#: Unreadable share above which training is blocked (the data set is mostly broken).
UNREADABLE_BLOCKING = 0.5
_COLOUR_COLS = [FEATURES.index(c) for c in ("mean_r", "mean_g", "mean_b", "contrast")]
SUMMARY_FEATURES = ("width", "height", "aspect", "file_kb", "brightness", "contrast", "sharpness")


def _as_index(index_or_path: DatasetIndex | str | os.PathLike[str], layout_kwargs: dict[str, Any]) -> DatasetIndex:
    if isinstance(index_or_path, DatasetIndex):
        return index_or_path
    from medlens.data.layouts import load_dataset

    return load_dataset(index_or_path, **layout_kwargs)


def run_audit(
    index_or_path: DatasetIndex | str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    exclude_list: str | os.PathLike[str] | None = None,
    quick: bool = False,
    near_threshold: int = 10,
    shortcut_threshold: float = 0.75,
    min_patients: int = 5,
    min_patient_fraction: float = 0.2,
    outlier_z: float = 5.0,
    colour_z: float = 3.0,
    max_side: int = 512,
    max_thumbnails: int = 24,
    progress: Callable[[int, int], None] | None = None,
    **layout_kwargs: Any,
) -> AuditResult:
    """Audit a data set (a :class:`DatasetIndex` or a path any layout reader accepts).

    Args:
        out_dir: write ``audit.json`` and ``audit.html`` there.
        exclude_list: write the advised exclusions there (one path per line).
        quick: readability, exact duplicates and confounding only (what ``train`` runs).
        near_threshold: largest perceptual-hash Hamming distance (of 64 bits) counted as a
            near duplicate.
        shortcut_threshold: metadata-only ROC-AUC at or above which the audit warns.
        min_patients, min_patient_fraction: a class from fewer patients is flagged.
        outlier_z: robust z-score above which an image is an outlier.
        colour_z: robust z-score of a patient's mean tissue colour (R, G, B, H, E) above which the
            patient's stain is flagged (``confounding["colour_by_patient"]``, a warning).
        max_side: pixel statistics are taken at most at this size (longer side).
        layout_kwargs: passed to ``medlens.data.layouts.load_dataset`` for a path.
    """
    if not 0 <= near_threshold < 64:
        raise ConfigError(f"--near-threshold must be in 0..63 bits, got {near_threshold}")
    if max_side < 8:
        raise ConfigError(f"max_side must be at least 8 pixels, got {max_side}")
    t0 = time.perf_counter()
    index = _as_index(index_or_path, layout_kwargs)
    records = index.records
    n = len(records)
    table = np.full((n, len(FEATURES)), np.nan, dtype=np.float64)
    labels = np.array([-1 if r.label is None else r.label for r in records], dtype=np.int64)
    keys: list[str | None] = [None] * n
    phashes = np.zeros(n, dtype=np.uint64)
    has_phash = np.zeros(n, dtype=bool)
    thumbs = np.zeros((n, 64), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    hist = None if quick else ClassHistograms(len(index.classes))
    colour = PatientColour() if not quick and index.has_patients else None
    unreadable: list[dict[str, str]] = []
    mismatch: list[dict[str, str]] = []
    formats: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    depths: Counter[str] = Counter()
    channels: Counter[str] = Counter()
    n_volumes = n_blank = 0
    for i, rec in enumerate(records):
        pr = probe_record(index, rec, max_side=max_side)
        if progress is not None and (i % 256 == 0 or i == n - 1):
            progress(i + 1, n)
        if pr.format:
            formats[pr.format] += 1
        if pr.ext_mismatch:
            mismatch.append({"path": pr.path, "reason": pr.ext_mismatch})
        if not pr.ok:
            unreadable.append({"path": pr.path, "reason": pr.reason or "unreadable"})
            continue
        ok[i] = True
        modes[str(pr.mode)] += 1
        depths[str(pr.bit_depth)] += 1
        channels[str(pr.channels)] += 1
        row = table[i]
        w, h = float(pr.width or 0), float(pr.height or 0)
        row[0:4] = (w, h, w / h if h else np.nan, w * h / 1e6)
        if pr.file_size is not None:
            row[4] = pr.file_size / 1024
            row[5] = pr.file_size * 8 / (w * h * (pr.depth or 1)) if w * h else np.nan
        row[6] = (pr.bit_depth or 8) / 8 * (pr.channels or 1)
        row[7] = pr.channels or np.nan
        row[8] = FORMAT_CODES.get(str(pr.format), 0)
        row[9] = pr.jpeg_quant if pr.jpeg_quant is not None else 0.0
        if pr.kind == "volume":
            n_volumes += 1
            keys[i] = "file:" + str(pr.file_sha)
            continue
        arr = pr.array
        keys[i] = pixel_hash(arr)
        if quick:
            continue
        arr8 = to_uint8(arr)
        st, grey = pixel_stats(arr8)
        row[10:20] = [st[c] for c in FEATURES[10:20]]
        hist.add(rec.label, arr8, grey)  # type: ignore[union-attr]
        if colour is not None:
            colour.add(rec.patient, arr8)
        if st["contrast"] >= BLANK_STD:
            phashes[i] = phash64(grey)
            thumbs[i] = thumb8(grey)
            has_phash[i] = True
        else:
            n_blank += 1
    t_scan = time.perf_counter()
    timings = {"scan_s": t_scan - t0}

    warnings: list[str] = []
    blocking: list[str] = []
    n_ok = int(ok.sum())
    summary = _summary(index, n, n_ok, labels, ok, formats, modes, depths, channels, n_volumes, n_blank)
    files = {
        "unreadable": unreadable,
        "extension_mismatch": mismatch,
        "index_problems": [{"path": p.path, "reason": p.reason, "severity": p.severity} for p in index.problems],
    }
    _file_findings(n, n_ok, unreadable, mismatch, modes, depths, channels, warnings, blocking)

    exact = exact_groups(keys)
    dup_exact = summarise_groups(exact, records, index.classes)
    by_kind = dup_exact["by_kind"]
    if by_kind["label_conflict"]:
        blocking.append(f"{by_kind['label_conflict']} group(s) of identical images carry different labels.")
    if by_kind["across_splits"]:
        msg = f"{by_kind['across_splits']} group(s) of identical images appear in several official splits (leakage)."
        if index.layout == "medmnist":  # a published benchmark: its splits stay as published, for comparability
            warnings.append(msg + " Kept: these are the benchmark's published splits, so test figures are"
                            " comparable with the literature but slightly optimistic.")
        else:
            blocking.append(msg)
    if by_kind["across_patients"]:
        warnings.append(f"{by_kind['across_patients']} group(s) of identical images belong to different patients.")
    if dup_exact["n_groups"]:
        warnings.append(f"{dup_exact['n_extra_copies']} exact duplicate copies in {dup_exact['n_groups']} group(s).")
    duplicates: dict[str, Any] = {"exact": dup_exact}
    timings["exact_s"] = time.perf_counter() - t_scan

    confounding = patient_confounding(index, min_patients=min_patients, min_fraction=min_patient_fraction)
    warnings += confounding["warnings"]
    if colour is not None:  # a patient (site, scanner) whose stain differs from the others
        confounding["colour_by_patient"] = colour.table(z_threshold=colour_z)
        line = colour_warning(confounding["colour_by_patient"])
        if line:
            warnings.append(line)
    blocking += confounding["blocking"]
    _balance(summary, warnings, blocking, index)
    label_names = label_findings(index)
    blocking += label_names["blocking"]

    shortcut: dict[str, Any] = {"status": "skipped", "reason": "quick audit"}
    outliers: dict[str, Any] = {"status": "skipped", "reason": "quick audit"}
    stats: dict[str, Any] = {}
    if not quick:
        t = time.perf_counter()
        near, dists = near_groups(
            phashes, has_phash, exact, near_threshold, colour=table[:, _COLOUR_COLS], thumbs=thumbs
        )
        dup_near = summarise_groups(near, records, index.classes, distances=dists)
        dup_near["threshold_bits"] = near_threshold
        duplicates["near"] = dup_near
        nk = dup_near["by_kind"]
        if dup_near["n_groups"]:
            warnings.append(
                f"{dup_near['n_groups']} group(s) of near-duplicate images (perceptual hash within "
                f"{near_threshold} bits): {nk['label_conflict']} with different labels, "
                f"{nk['across_splits']} across splits, {nk['across_patients']} across patients."
            )
        timings["near_s"] = time.perf_counter() - t
        t = time.perf_counter()
        stats = per_class_summary(table[ok], labels[ok], index.classes, SUMMARY_FEATURES)
        groups = _patient_groups(index) if index.has_patients else None
        shortcut = shortcut_test(table[ok], labels[ok], index.classes, None if groups is None else groups[ok],
                                 threshold=shortcut_threshold)  # fmt: skip
        warnings += shortcut.get("warnings", [])
        timings["shortcut_s"] = time.perf_counter() - t
        idx_ok = np.flatnonzero(ok)
        found, total = find_outliers(table[ok], [records[i].path for i in idx_ok],
                                     [records[i].label for i in idx_ok], z_threshold=outlier_z)  # fmt: skip
        outliers = {"z_threshold": outlier_z, "n_outliers": total, "items": found}
        if total:
            warnings.append(f"{total} outlier image(s) by size, brightness or sharpness (robust z ≥ {outlier_z}).")
        if n_volumes:
            warnings.append(f"{n_volumes} 3D volume(s): header checked, pixel statistics skipped.")

    exclude = _exclusions(unreadable, exact, records, index)
    result = AuditResult(summary=summary, files=files, duplicates=duplicates, stats=stats,
                         shortcut=shortcut, confounding=confounding, outliers=outliers, label_names=label_names,
                         warnings=warnings, blocking=blocking, exclude=exclude, timings=timings,
                         table=table, labels=labels, histograms=hist)  # fmt: skip
    if not quick and max_thumbnails > 0:
        result.thumbnails = make_thumbnails(index, result, max_thumbnails=max_thumbnails)
    timings["total_s"] = time.perf_counter() - t0
    if out_dir is not None:
        write_report(result, out_dir)
    if exclude_list is not None:
        write_exclude_list(exclude_list, exclude, header=f"medlens audit exclusions for {index.root}")
    return result


def colour_by_patient(index: DatasetIndex, *, max_per_patient: int = 32, seed: int = 0,
                      z_threshold: float = 3.0) -> dict[str, Any] | None:
    """Per-patient tissue colour table from a seeded sample of each patient's images (what the
    training report shows); ``None`` without patient ids. Unreadable files are skipped."""
    from medlens.audit.files import probe_record
    from medlens.audit.stats import PatientColour

    if not index.has_patients:
        return None
    by: dict[str, list[Any]] = {}
    for r in index.records:
        if r.patient is not None:
            by.setdefault(str(r.patient), []).append(r)
    rng = np.random.default_rng(seed)
    acc = PatientColour()
    for p in sorted(by):
        recs = by[p]
        for j in sorted(rng.permutation(len(recs))[:max_per_patient].tolist()):
            pr = probe_record(index, recs[j], max_side=512)
            if pr.ok and pr.kind != "volume" and pr.array is not None:
                acc.add(p, to_uint8(pr.array))
    return acc.table(z_threshold=z_threshold)


def quick_audit(index: DatasetIndex, **kwargs: Any) -> AuditResult:
    """Readability, exact duplicates, splits and patient confounding — fast, for ``train``."""
    return run_audit(index, quick=True, **kwargs)


def _summary(index: DatasetIndex, n: int, n_ok: int, labels: np.ndarray, ok: np.ndarray, formats: Counter[str],
             modes: Counter[str], depths: Counter[str], channels: Counter[str], n_volumes: int,
             n_blank: int) -> dict[str, Any]:  # fmt: skip
    counts = {c: int(((labels == k) & ok).sum()) for k, c in enumerate(index.classes)}
    return {
        "root": str(index.root), "layout": index.layout, "task": index.task, "n_records": n,
        "n_readable": n_ok, "n_unreadable": n - n_ok, "classes": list(index.classes),
        "class_counts": counts, "n_unlabelled": int(((labels < 0) & ok).sum()),
        "has_patients": index.has_patients, "has_official_splits": index.has_official_splits,
        "split_counts": counts_by([r.split for r in index.records if r.split is not None]),
        "formats": dict(formats), "modes": dict(modes), "bit_depths": dict(depths),
        "channels": dict(channels), "n_volumes": n_volumes, "n_near_blank": n_blank,
    }  # fmt: skip


def _file_findings(n: int, n_ok: int, unreadable: list[dict[str, str]], mismatch: list[dict[str, str]],
                   modes: Counter[str], depths: Counter[str], channels: Counter[str], warnings: list[str],
                   blocking: list[str]) -> None:  # fmt: skip
    if n == 0:
        blocking.append("The data set has no images.")
        return
    if unreadable:
        msg = f"{len(unreadable)} of {n} file(s) cannot be read (e.g. {unreadable[0]['path']}: {unreadable[0]['reason']})."
        if len(unreadable) / n > UNREADABLE_BLOCKING or n_ok == 0:
            blocking.append(msg + " Most of the data set is unusable.")
        else:
            warnings.append(msg + " They are left out.")
    if mismatch:
        warnings.append(f"{len(mismatch)} file(s) whose extension does not match the content "
                        f"(e.g. {mismatch[0]['path']}: {mismatch[0]['reason']}).")  # fmt: skip
    if len(channels) > 1:
        warnings.append(f"Inconsistent channel counts {dict(channels)}: images are converted to one count.")
    if len(depths) > 1:
        warnings.append(f"Inconsistent bit depths {dict(depths)}: intensities are rescaled differently.")
    if len(modes) > 1 and len(channels) == 1 and len(depths) == 1:
        warnings.append(f"Mixed image modes {dict(modes)}.")


def _balance(summary: dict[str, Any], warnings: list[str], blocking: list[str], index: DatasetIndex) -> None:
    counts = {c: v for c, v in summary["class_counts"].items()}
    present = {c: v for c, v in counts.items() if v > 0}
    if index.has_class_labels and counts and len(present) < 2 and summary["n_readable"]:
        blocking.append(f"Only one class has readable images ({counts}); nothing to learn.")
        return
    if len(present) >= 2:
        ratio = max(present.values()) / min(present.values())
        summary["imbalance_ratio"] = round(ratio, 3)
        if ratio >= 10:
            warnings.append(f"Classes are strongly imbalanced ({present}, ratio {ratio:.1f}:1).")
    empty = [c for c, v in counts.items() if v == 0]
    if empty and index.has_class_labels:
        warnings.append(f"Classes without readable images: {', '.join(empty)}.")


def _patient_groups(index: DatasetIndex) -> np.ndarray:
    return np.array([r.patient if r.patient is not None else f"__image{i}" for i, r in enumerate(index.records)],
                    dtype=object)  # fmt: skip


def _exclusions(unreadable: list[dict[str, str]], exact: list[list[int]], records: list[Any],
                index: DatasetIndex) -> list[str]:  # fmt: skip
    """Unreadable files; later copies of exact duplicates; every copy of a label conflict."""
    out = [u["path"] for u in unreadable]
    for g in exact:
        labels = {records[i].label for i in g if records[i].label is not None}
        drop = g if len(labels) > 1 else g[1:]
        out += [records[i].path for i in drop]
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]
