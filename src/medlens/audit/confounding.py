"""Patient and source confounding: classes per patient, classes from few patients, patients
across splits, and classes that come from their own source (hospital, scanner, camera).

When all images of a class come from a handful of patients, a network can learn to
recognise those patients' slides (stain, scanner, tissue) instead of the disease, and a
random image-level split then reports that as accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from medlens.data.records import DatasetIndex


def patient_confounding(
    index: DatasetIndex, *, min_patients: int = 5, min_fraction: float = 0.2
) -> dict[str, Any]:
    """Summarise the patient ↔ class and patient ↔ split structure of ``index``.

    Args:
        min_patients: warn when a class comes from fewer patients than this …
        min_fraction: … or from less than this fraction of all patients.

    Returns:
        ``{"has_patients", "n_patients", "per_class": {class: {...}}, "single_class_patients",
        "patients_in_several_splits": {patient: [splits]}, "source": {...}, "warnings": [...],
        "blocking": [...]}``; ``source`` is :func:`source_confounding` (its warnings included).
    """
    if min_patients < 1 or not 0 <= min_fraction <= 1:
        raise ValueError("min_patients must be ≥ 1 and min_fraction in [0, 1]")
    out: dict[str, Any] = {"has_patients": index.has_patients, "warnings": [], "blocking": []}
    if index.has_class_labels:  # class ↔ source (hospital, scanner): patients or not
        out["source"] = source_confounding(index)
        out["warnings"] += out["source"]["warnings"]
    if not index.has_patients:
        out["note"] = "no patient ids: patient confounding and patient leakage cannot be checked"
        return out
    classes_of: dict[str, set[int]] = defaultdict(set)
    splits_of: dict[str, set[str]] = defaultdict(set)
    images_of: dict[tuple[str, int], int] = defaultdict(int)
    for r in index.records:
        if r.patient is None:
            continue
        if r.label is not None:
            classes_of[r.patient].add(r.label)
            images_of[(r.patient, r.label)] += 1
        if r.split is not None:
            splits_of[r.patient].add(r.split)
    patients = sorted({r.patient for r in index.records if r.patient is not None})
    n = len(patients)
    out["n_patients"] = n
    per_class: dict[str, Any] = {}
    for k, name in enumerate(index.classes):
        pats = sorted(p for p in patients if k in classes_of.get(p, ()))
        share = {p: images_of[(p, k)] for p in pats}
        total = sum(share.values())
        top = max(share.values()) if share else 0
        per_class[name] = {
            "n_patients": len(pats),
            "fraction_of_patients": round(len(pats) / n, 4) if n else 0.0,
            "n_images": total,
            "largest_patient_share": round(top / total, 4) if total else 0.0,
            "patients": pats if len(pats) <= 50 else pats[:50] + ["…"],
        }
        few = len(pats) < min_patients or (n and len(pats) / n < min_fraction)
        if total and few:
            out["warnings"].append(
                f"Class {name!r} comes from only {len(pats)} of {n} patients "
                f"({', '.join(pats[:8])}{'…' if len(pats) > 8 else ''}): a model can learn to "
                "recognise these patients (slide, scanner, stain) instead of the disease. "
                "Split by patient and report per-patient results."
            )
    out["per_class"] = per_class
    single = [p for p in patients if len(classes_of.get(p, ())) == 1]
    out["single_class_patients"] = len(single)
    out["patients_per_class_count"] = {
        str(c): sum(1 for p in patients if len(classes_of.get(p, ())) == c)
        for c in range(len(index.classes) + 1)
    }
    if index.patient_labels:
        out["note"] = "labels are given per patient, so every patient has one class by design"
    multi = {p: sorted(s) for p, s in splits_of.items() if len(s) > 1}
    out["patients_in_several_splits"] = multi
    if multi:
        names = ", ".join(list(multi)[:8])
        out["blocking"].append(
            f"{len(multi)} patient(s) appear in more than one official split ({names}"
            f"{'…' if len(multi) > 8 else ''}): the test set leaks into training."
        )
    return out


# ------------------------------------------------------------------ source ↔ class
#: Share of images a source (or acquisition signature) must explain for a confound warning.
SOURCE_PURITY = 0.95
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def acquisition_signature(path: str) -> str | None:
    """``"360×363 JPEG q≈95 4:4:4 RGB"``: size, format, JPEG quality and chroma subsampling,
    read from the header only (no decoding); ``None`` for what PIL cannot open."""
    from PIL import Image, JpegImagePlugin

    try:
        with Image.open(path) as im:
            parts = [f"{im.width}×{im.height}", str(im.format)]
            if im.format == "JPEG":
                q = getattr(im, "quantization", None) or {}
                if q:  # the luminance table's mean → an IJG quality estimate (50/quality scaling)
                    mean = float(sum(q[0]) / len(q[0]))
                    scale = 100.0 * mean / 57.625  # 57.625: the mean of the IJG base table at quality 50
                    qual = 100 - scale / 2 if scale <= 100 else 5000 / scale
                    parts.append(f"q≈{max(1, min(100, round(qual)))}")
                parts.append(_SUBSAMPLING.get(JpegImagePlugin.get_sampling(im), "subsampling ?"))
            parts.append(im.mode)
            return " ".join(parts)
    except (OSError, ValueError, SyntaxError):
        return None


def _prefix(stem: str) -> str | None:
    import re

    m = re.match(r"([A-Za-z]{2,})[_\-. ]", stem)
    return m.group(1).upper() if m else None


def _purity(table: dict[str, dict[str, int]]) -> tuple[float, float]:
    """Share of images whose group's majority class is theirs, and the majority-class share."""
    total = sum(sum(c.values()) for c in table.values())
    by_class: dict[str, int] = defaultdict(int)
    for counts in table.values():
        for k, v in counts.items():
            by_class[k] += v
    if not total:
        return 0.0, 0.0
    return sum(max(c.values()) for c in table.values()) / total, max(by_class.values()) / total


def _crosstab(keys: list[str | None], labels: list[str]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for key, label in zip(keys, labels, strict=True):
        if key is not None:
            table[key][label] += 1
    return {k: dict(v) for k, v in table.items()}


def _dominant(table: dict[str, dict[str, int]], classes: list[str]) -> str:
    """``healthy: 360×363 JPEG q≈95 (100 %); leukemic: …`` — each class's most common group."""
    parts = []
    for c in classes:
        counts = {g: v[c] for g, v in table.items() if v.get(c)}
        if counts:
            g = max(counts, key=counts.__getitem__)
            parts.append(f"{c}: {g} ({counts[g] / sum(counts.values()):.0%})")
    return "; ".join(parts)


def source_confounding(index: DatasetIndex, *, max_files: int = 3000, seed: int = 0) -> dict[str, Any]:
    """Is the class predictable from where an image came from rather than from what it shows?

    Two views of "source", as when healthy and leukaemic cells come from two hospitals:

    * the acquisition signature of each file (size, format, JPEG quality and chroma
      subsampling, mode; read from headers, at most ``max_files`` sampled files), and
    * the path: the first folder under the root that is not a class name nor the image's
      patient (``pbc/…``, ``jhh/…``), and the file-name prefix (``PBC_0001.jpg``) when there are no more
      prefixes than classes (more prefixes are usually sub-type codes, such as the PBC
      set's ``BNE_``/``SNE_`` for neutrophils).

    A warning is raised when such a source explains ≥ 95 % of the labels while the largest
    class alone explains at most 80 % (colour differences are the shortcut test's).

    Returns:
        ``{"signatures": {signature: {class: n}}, "signature_purity", "folders", "prefixes",
        "n_checked", "warnings"}``.
    """
    import random

    recs = [r for r in index.records if r.label is not None and "#" not in r.path]
    out: dict[str, Any] = {"warnings": [], "n_checked": 0}
    if len({r.label for r in recs}) < 2:
        out["note"] = "fewer than 2 labelled classes with files: nothing to check"
        return out
    if len(recs) > max_files:
        recs = random.Random(seed).sample(recs, max_files)
    names = [index.classes[r.label] for r in recs]  # type: ignore[index]
    class_names = {c.lower() for c in index.classes}
    rel = []
    for r in recs:
        p = Path(r.path)
        try:
            p = p.relative_to(index.root)
        except ValueError:
            pass
        rel.append(p)
    folders = [next((part for part in p.parts[:-1] if part.lower() not in class_names), None) for p in rel]
    # a patient's own folder is no source: one class per patient is patient confounding (above)
    folders = [None if f is not None and f == r.patient else f for f, r in zip(folders, recs, strict=True)]
    prefixes = [_prefix(p.stem) for p in rel]
    signatures = [acquisition_signature(r.path) for r in recs]
    out["n_checked"] = len(recs)
    present = [c for c in index.classes if c in set(names)]
    views = {"signature": (signatures, "acquisition (image size, format, JPEG quality/subsampling, mode)"),
             "folder": (folders, "folder"), "prefix": (prefixes, "file-name prefix")}
    for view, (keys, what) in views.items():
        key = f"{view}s" if view != "prefix" else "prefixes"
        table = _crosstab(keys, names)
        purity, baseline = _purity(table)
        out[key] = table if len(table) <= 50 else {"n_groups": len(table)}
        out[f"{view}_purity"] = round(purity, 4)
        covered = sum(k is not None for k in keys)
        if (len(table) < 2 or covered < 0.9 * len(keys) or purity < SOURCE_PURITY or baseline > 0.8
                or (view == "prefix" and len(table) > len(present))):
            continue
        out["warnings"].append(
            f"Class and source are confounded: the {what} alone tells the class of {purity:.0%} of the images "
            f"({_dominant(table, present)}). A model can learn the source (a hospital, scanner or camera) "
            "instead of the disease; test on sources it has not seen, or mix sources within each class.")
    return out
