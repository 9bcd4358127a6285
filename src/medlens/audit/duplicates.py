"""Duplicate groups and what they mean: within a class, label conflicts, leakage.

A duplicate inside one class only weights that image twice; the same picture with two
labels means the labels cannot both be right; the same picture in the training and the
test split (or from two "different" patients) inflates every reported metric.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.audit.hashing import UnionFind, near_pairs
from medlens.data.records import Record

KINDS = ("within_class", "label_conflict", "across_patients", "across_splits")


def describe_group(members: list[int], records: list[Record], classes: list[str]) -> dict[str, Any]:
    """Paths, labels, patients and splits of one group, with its kinds (see ``KINDS``)."""
    recs = [records[i] for i in members]
    labels = sorted({r.label for r in recs if r.label is not None})
    patients = sorted({r.patient for r in recs if r.patient is not None})
    splits = sorted({r.split for r in recs if r.split is not None})
    kinds = []
    if len(labels) > 1:
        kinds.append("label_conflict")
    elif labels:
        kinds.append("within_class")
    if len(patients) > 1:
        kinds.append("across_patients")
    if len(splits) > 1:
        kinds.append("across_splits")
    return {
        "paths": [r.path for r in recs],
        "labels": [classes[r.label] if r.label is not None and r.label < len(classes) else None for r in recs],
        "patients": patients,
        "splits": splits,
        "kinds": kinds,
    }


def exact_groups(keys: list[str | None]) -> list[list[int]]:
    """Indices sharing a content key (pixel hash, else file hash), groups of ≥ 2, in order."""
    by_key: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k is not None:
            by_key.setdefault(k, []).append(i)
    return sorted((g for g in by_key.values() if len(g) > 1), key=lambda g: g[0])


#: Second-stage checks of a perceptual-hash match (measured on the real IDC patches: with
#: a 10-bit phash threshold these keep 99.8 % of 1-px-shifted or JPEG-recompressed copies
#: and reject all but 1 of 69 chance matches among 21 million pairs).
MAX_COLOUR_DIFF = 4.0  # largest |Δ mean| of R, G, B (0–255)
MAX_CONTRAST_DIFF = 4.0  # largest |Δ grey std|
MAX_THUMB_MAD = 8.0  # largest mean |Δ| of the 8×8 grey thumbnails


def near_groups(
    phashes: np.ndarray,
    has_phash: np.ndarray,
    exact: list[list[int]],
    threshold: int,
    *,
    colour: np.ndarray | None = None,
    thumbs: np.ndarray | None = None,
) -> tuple[list[list[int]], dict[tuple[int, int], int]]:
    """Clusters of images within ``threshold`` bits of each other that are not exact copies.

    Exact copies are collapsed to their first member before the search and the clusters
    then expanded again, so a near group lists every file involved. When ``colour``
    (``(N, 4)``: mean R, G, B and grey std) and ``thumbs`` (``(N, 64)`` 8×8 grey
    thumbnails) are given, a hash match must also pass those checks: a 64-bit hash alone
    confuses unrelated tissue patches at the distances a 1-pixel shift produces.

    Returns:
        (groups, distances) where ``distances[(i, j)]`` is the Hamming distance of a
        linking pair of representatives.
    """
    member_of: dict[int, int] = {}
    for g in exact:
        for i in g[1:]:
            member_of[i] = g[0]
    reps = np.array([i for i in np.flatnonzero(has_phash) if i not in member_of], dtype=np.int64)
    pairs = near_pairs(phashes[reps], threshold) if len(reps) > 1 else []
    uf = UnionFind()
    dist: dict[tuple[int, int], int] = {}
    for a, b, d in pairs:
        ia, ib = int(reps[a]), int(reps[b])
        if not _verified(ia, ib, colour, thumbs):
            continue
        uf.union(ia, ib)
        dist[(ia, ib)] = d
    if not dist:
        return [], {}
    for g in exact:
        if g[0] in uf.parent:
            for i in g[1:]:
                uf.union(g[0], i)
    return uf.groups(), dist


def summarise_groups(
    groups: list[list[int]], records: list[Record], classes: list[str], *, max_groups: int = 200,
    distances: dict[tuple[int, int], int] | None = None,
) -> dict[str, Any]:
    """Counts per kind plus the first ``max_groups`` groups described."""
    described = [describe_group(g, records, classes) for g in groups]
    if distances is not None:
        for g, d in zip(groups, described, strict=True):
            s = set(g)
            ds = [v for (a, b), v in distances.items() if a in s and b in s]
            d["max_distance"] = max(ds) if ds else 0
    counts = {k: sum(1 for d in described if k in d["kinds"]) for k in KINDS}
    return {
        "n_groups": len(groups),
        "n_files": sum(len(g) for g in groups),
        "n_extra_copies": sum(len(g) - 1 for g in groups),
        "by_kind": counts,
        "groups": described[:max_groups],
        "truncated": len(described) > max_groups,
    }


def _verified(i: int, j: int, colour: np.ndarray | None, thumbs: np.ndarray | None) -> bool:
    if colour is not None:
        d = np.abs(colour[i] - colour[j])
        if np.nanmax(d[:3]) > MAX_COLOUR_DIFF or d[3] > MAX_CONTRAST_DIFF:
            return False
    if thumbs is not None:
        mad = np.abs(thumbs[i].astype(np.float32) - thumbs[j].astype(np.float32)).mean()
        if mad > MAX_THUMB_MAD:
            return False
    return True
