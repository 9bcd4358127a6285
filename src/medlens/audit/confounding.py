"""Patient confounding: classes per patient, classes from few patients, patients across splits.

When all images of a class come from a handful of patients, a network can learn to
recognise those patients' slides (stain, scanner, tissue) instead of the disease, and a
random image-level split then reports that as accuracy.
"""

from __future__ import annotations

from collections import defaultdict
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
        "patients_in_several_splits": {patient: [splits]}, "warnings": [...], "blocking": [...]}``
    """
    if min_patients < 1 or not 0 <= min_fraction <= 1:
        raise ValueError("min_patients must be ≥ 1 and min_fraction in [0, 1]")
    out: dict[str, Any] = {"has_patients": index.has_patients, "warnings": [], "blocking": []}
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
