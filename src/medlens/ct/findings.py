"""The result of lung-nodule detection: one :class:`Finding` per detected nodule.

Shared by the pipeline (which makes them), the outputs (``nodules.csv``), the FROC
evaluation and the report. Coordinates follow :mod:`medlens.io.geometry`: ``center_xyz``
is LPS mm, ``center_irc`` is the continuous array index ``(i, r, c)`` of the same point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: The columns of ``nodules.csv``, in order (:meth:`Finding.to_row`).
NODULE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "index_i", "index_r", "index_c",
                  "diameter_mm", "nodule_prob", "malignancy_prob", "why")


@dataclass
class Finding:
    """One detected nodule candidate in one scan.

    Attributes:
        seriesuid: the scan it was found in (LUNA16 series uid / DICOM SeriesInstanceUID).
        center_xyz: centre in LPS mm ``(x, y, z)``.
        center_irc: the same centre as a continuous array index ``(i, r, c)``.
        diameter_mm: equivalent-sphere diameter of the candidate region, mm.
        nodule_prob: probability that it is a nodule (the false-positive reduction model).
        malignancy_prob: probability that it is malignant (``None``: not scored).
        voxels: voxels of the candidate region (0 when unknown).
        why: what moved the ranker's logit most for this finding (descriptor, its value and
            how much the logit drops when it is set to the training mean), ``None`` without a ranker.
    """

    seriesuid: str
    center_xyz: tuple[float, float, float]
    center_irc: tuple[float, float, float]
    diameter_mm: float
    nodule_prob: float
    malignancy_prob: float | None = None
    voxels: int = 0
    why: str | None = None

    def to_row(self) -> dict[str, Any]:
        """The ``nodules.csv`` row (:data:`NODULE_COLUMNS`), plain Python numbers."""
        x, y, z = (float(v) for v in self.center_xyz)
        i, r, c = (float(v) for v in self.center_irc)
        return {"seriesuid": self.seriesuid, "coordX": x, "coordY": y, "coordZ": z,
                "index_i": i, "index_r": r, "index_c": c, "diameter_mm": float(self.diameter_mm),
                "nodule_prob": float(self.nodule_prob),
                "malignancy_prob": None if self.malignancy_prob is None else float(self.malignancy_prob),
                "why": self.why}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Finding:
        """Inverse of :meth:`to_row` (a ``nodules.csv`` row; empty malignancy → ``None``)."""
        mal = row.get("malignancy_prob")
        return cls(seriesuid=str(row["seriesuid"]),
                   center_xyz=(float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])),
                   center_irc=(float(row["index_i"]), float(row["index_r"]), float(row["index_c"])),
                   diameter_mm=float(row["diameter_mm"]), nodule_prob=float(row["nodule_prob"]),
                   malignancy_prob=None if mal in (None, "") or (isinstance(mal, float) and np.isnan(mal))
                   else float(mal), why=row.get("why") or None)


def one_per_lump(centres_xyz: np.ndarray, diameters_mm: np.ndarray, probs: np.ndarray, *,
                 within: float, limit: int | None = None) -> np.ndarray:
    """Indices of the findings to keep, most probable first, when a finding whose centre lies
    within ``within`` × the larger radius of the two of a more probable kept finding is dropped:
    non-maximum suppression for lumps (``within`` 0 keeps all); at most ``limit`` are kept.
    The blob detector suppresses its weaker blobs with it too (``within`` 1).

    Why: the U-Net and the blob detector at several scales often put two or three candidates on
    one nodule (three on LIDC-IDRI-0001's 24 mm nodule). LUNA16's FROC ignores the extra hits, but
    each takes a place of the reading budget (``max_findings`` per scan) that another nodule needed,
    and a reader sees one nodule listed three times. Why more than one radius: a blob's diameter is
    one of a few fixed scales (18 mm for that 24 mm nodule), so its centre is often farther than
    the estimated radius from a second candidate on the same nodule.
    """
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")
    if within <= 0 or len(order) < 2:
        return order[:limit]
    c = np.asarray(centres_xyz, dtype=np.float64).reshape(-1, 3)
    r = np.asarray(diameters_mm, dtype=np.float64) / 2.0
    kept: list[int] = []
    for k in order:
        if kept and np.any(np.linalg.norm(c[kept] - c[k], axis=1) < within * np.maximum(r[kept], r[k])):
            continue
        kept.append(int(k))
        if len(kept) == limit:
            break
    return np.asarray(kept, dtype=np.int64)
