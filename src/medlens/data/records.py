"""The in-memory description of a data set, whatever layout it came from.

A :class:`DatasetIndex` lists one :class:`Record` per image (or per volume) with its
label, patient and official split, plus every :class:`Problem` found while indexing.
Layout readers (``medlens.data.layouts``) produce it; caches, splits, training,
the audit and ``inspect`` consume it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
#: Class names put first (index 0) in a two-class set: the "negative" class.
NEGATIVE_NAMES = frozenset(
    {
        "0",
        "normal",
        "benign",
        "negative",
        "healthy",
        "no",
        "false",
        "no idc",
        "nevus",
        "control",
        "no finding",
        "no_finding",
        "absent",
    }
)


def order_classes(names: set[str]) -> list[str]:
    """Deterministic class order: numeric when all are integers, negative class first."""
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    out = sorted(names, key=lambda n: (n.casefold(), n))
    if (
        len(out) == 2
        and out[1].casefold() in NEGATIVE_NAMES
        and out[0].casefold() not in NEGATIVE_NAMES
    ):
        out.reverse()
    return out




@dataclass(frozen=True)
class Record:
    """One image.

    Attributes:
        path: file path, or ``"<file.npz>#<split>/<index>"`` for array-backed sets.
        label: class index into ``DatasetIndex.classes`` (``None`` when unlabeled).
        patient: patient id when known (used for grouped splits and per-patient metrics).
        split: official split ("train"/"val"/"test") when the layout defines one.
        mask: path of a label mask (segmentation layouts), else ``None``.
        meta: free-form extra columns (e.g. a CSV's other fields, IDC patch coordinates).
    """

    path: str
    label: int | None = None
    patient: str | None = None
    split: str | None = None
    mask: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Problem:
    """A file that cannot be used (or a warning about one), with the reason."""

    path: str
    reason: str
    severity: str = "error"  # "error" → excluded; "warning" → kept


@dataclass
class DatasetIndex:
    """A data set as indexed from disk.

    ``arrays`` holds in-memory image arrays for array-backed layouts (MedMNIST ``.npz``):
    ``arrays[path_prefix][split]`` is an ``(N, H, W[, C])`` uint8 array; records of such
    sets have paths ``"<npz>#<split>/<i>"`` and are read with :meth:`read`.
    """

    root: str
    layout: str
    classes: list[str]
    records: list[Record]
    problems: list[Problem] = field(default_factory=list)
    task: str = "classify"  # or "segment"
    patient_labels: bool = False  # labels were given per patient, not per image
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    @property
    def has_class_labels(self) -> bool:
        """True when each image's label is a class (what the class audits check); False
        for image/mask pairs, where the label is the mask."""
        return not any(r.mask is not None for r in self.records)

    @property
    def has_patients(self) -> bool:
        return any(r.patient is not None for r in self.records)

    @property
    def has_official_splits(self) -> bool:
        return any(r.split is not None for r in self.records)

    def read(self, record: Record, *, channels: int | None = None) -> np.ndarray:
        """Return the record's image as ``(H, W, C)`` uint8 (see ``medlens.io``)."""
        if "#" in record.path and record.path.split("#", 1)[0] in self.arrays:
            from medlens.io.images import to_channels

            src, ref = record.path.split("#", 1)
            split, idx = ref.split("/")
            arr = self.arrays[src][split][int(idx)]
            if arr.ndim == 2:
                arr = arr[..., None]
            return to_channels(np.ascontiguousarray(arr), channels)
        from medlens.io.images import read_image

        return read_image(record.path, channels=channels)

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        counts = Counter(
            r.label for r in self.records if r.label is not None and (split is None or r.split == split)
        )
        return {c: counts.get(i, 0) for i, c in enumerate(self.classes)}

    def subset(self, records: list[Record]) -> DatasetIndex:
        """A new index over ``records`` sharing classes, arrays and info."""
        return DatasetIndex(
            root=self.root,
            layout=self.layout,
            classes=list(self.classes),
            records=list(records),
            problems=list(self.problems),
            task=self.task,
            patient_labels=self.patient_labels,
            arrays=self.arrays,
            info=dict(self.info),
        )
