"""Chest-CT-like phantoms in Hounsfield units, with lung nodules and their truth.

Why: the lung-CT pipeline (``medlens.ct``) needs scans that look like LUNA16/LIDC chest CT
to be tested, demonstrated and benchmarked anywhere, deterministically, in seconds. The
phantoms hold what makes nodule detection hard: vessels (bright branching tubes that look
like nodules in a single axial slice — the real source of false positives), airways
(dark tubes with bright walls), solid, part-solid and ground-glass nodules of 3–30 mm
(sizes in mm, so anisotropic spacing matters), some touching the pleura, and noise.

Anatomy is laid out as fractions of the field of view; nodules and vessels are sized in
mm. Arrays are ``(D, H, W)`` = ``(I, R, C)``; world coordinates are LPS mm with an
identity direction (+x patient left = columns, +y posterior = rows, +z superior = slices).

Layouts written by :func:`make_chest_ct_like`:

* ``fmt="luna16"``: ``root/subset0/<seriesuid>.mhd`` + ``.raw`` (int16 HU),
  ``root/annotations.csv`` (``seriesuid,coordX,coordY,coordZ,diameter_mm,malignancy``; the
  ``malignancy`` column — median of four simulated readers, 1–5 — is an addition LUNA16
  lacks), ``root/candidates.csv`` (``seriesuid,coordX,coordY,coordZ,class``).
* ``fmt="dicom"``: ``root/<patient_id>/<study_uid>/<series_uid>/000001.dcm …`` (stored
  values ``HU + 1024`` as unsigned 16 bit with ``RescaleIntercept -1024``; files are
  numbered from the top of the chest down, so file order is the reverse of slice position)
  plus the same ``annotations.csv`` and ``candidates.csv`` at root.

Both also write ``root/truth.json``: per scan its seriesuid, shape, spacing, origin and,
per nodule, centre (mm and voxel), diameter, kind, whether it is juxta-pleural, the four
readers' ratings, median malignancy and the LIDC label (malignant when ≥ 2 readers rated
4 or 5; ratings are drawn so that this equals "median ≥ 4").
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medlens.io.geometry import Geometry
from medlens.options import look_up_option

FORMATS = ("luna16", "dicom")
NODULE_KINDS = ("solid", "part_solid", "ground_glass")
#: UID root of the pydicom organisation (deterministic UIDs via entropy sources).
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."
AIR_HU, LUNG_HU, FAT_HU, SOFT_HU, VESSEL_HU, BONE_HU = -1000.0, -850.0, -100.0, 35.0, 40.0, 600.0


@dataclass
class PhantomNodule:
    """Truth for one nodule of a phantom (mm in LPS, voxel index in array order)."""

    center_xyz: tuple[float, float, float]
    center_irc: tuple[float, float, float]
    diameter_mm: float
    kind: str
    juxta_pleural: bool
    ratings: tuple[int, ...]
    malignancy: float
    malignant: bool
    hu: float


@dataclass
class ChestCTPhantom:
    """One generated scan.

    Attributes:
        seriesuid: the scan's id (file stem for LUNA16, SeriesInstanceUID for DICOM).
        hu: ``(D, H, W)`` int16 Hounsfield units.
        geometry: spacing/origin (identity direction), LPS mm.
        lung_mask: ``(D, H, W)`` bool, both lungs (airways inside them included).
        nodule_labels: ``(D, H, W)`` int16, ``k + 1`` where nodule ``k`` covers ≥ half a voxel.
        nodules: truth per nodule.
        candidates: ``(x, y, z, class)`` rows for ``candidates.csv`` (nodules class 1,
            points on vessels, airway walls and random lung tissue class 0).
    """

    seriesuid: str
    hu: np.ndarray
    geometry: Geometry
    lung_mask: np.ndarray
    nodule_labels: np.ndarray
    nodules: list[PhantomNodule] = field(default_factory=list)
    candidates: list[tuple[float, float, float, int]] = field(default_factory=list)


# -- drawing helpers ------------------------------------------------------------------------
class _Canvas:
    """Voxel grid with mm coordinates; draws tubes/ellipsoids in their bounding boxes only."""

    def __init__(self, shape: tuple[int, int, int], spacing_xyz: tuple[float, float, float],
                 origin_xyz: tuple[float, float, float]):
        self.shape = shape
        self.sp = np.asarray(spacing_xyz, dtype=np.float64)
        self.org = np.asarray(origin_xyz, dtype=np.float64)
        d, h, w = shape
        self.z = (self.org[2] + self.sp[2] * np.arange(d)).astype(np.float32)
        self.y = (self.org[1] + self.sp[1] * np.arange(h)).astype(np.float32)
        self.x = (self.org[0] + self.sp[0] * np.arange(w)).astype(np.float32)

    def box(self, lo_xyz: np.ndarray, hi_xyz: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Array slices covering the mm box ``[lo, hi]``; None when it misses the grid."""
        lo = np.floor((np.asarray(lo_xyz) - self.org) / self.sp).astype(int)
        hi = np.ceil((np.asarray(hi_xyz) - self.org) / self.sp).astype(int) + 1
        lim = np.asarray(self.shape[::-1])
        lo, hi = np.clip(lo, 0, lim), np.clip(hi, 0, lim)
        if (hi <= lo).any():
            return None
        return slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])

    def coords(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.x[sl[2]][None, None, :], self.y[sl[1]][None, :, None], self.z[sl[0]][:, None, None]

    def tube(self, a: np.ndarray, b: np.ndarray, radius: float,
             out: np.ndarray, edge_mm: float = 0.6) -> None:
        """Max-blend the partial-volume fraction of a capsule (segment a→b, mm) into ``out``."""
        m = radius + edge_mm
        sl = self.box(np.minimum(a, b) - m, np.maximum(a, b) + m)
        if sl is None:
            return
        x, y, z = self.coords(sl)
        ab = b - a
        L2 = float(ab @ ab) or 1e-9
        t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / L2, 0, 1)
        dist = np.sqrt((x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2)
        frac = np.clip(0.5 + (radius - dist) / edge_mm, 0, 1).astype(np.float32)
        np.maximum(out[sl], frac, out=out[sl])

    def ellipsoid(self, c: np.ndarray, axes: np.ndarray, rot: np.ndarray, edge_mm: float = 0.6,
                  lobes: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        """Partial-volume fraction of an ellipsoid (centre, semi-axes mm, rotation) in its box;
        ``lobes`` = (unit directions (k, 3), relative heights (k,)) bulges it out (lobulated margin)."""
        bulge = 1.0 + (float(lobes[1].max()) if lobes is not None and len(lobes[1]) else 0.0)
        m = float(axes.max()) * bulge + edge_mm
        sl = self.box(c - m, c + m)
        if sl is None:
            return None
        x, y, z = self.coords(sl)
        p = np.stack(np.broadcast_arrays(x - c[0], y - c[1], z - c[2]), axis=-1)  # (..., 3)
        q = p @ rot  # coordinates in the ellipsoid's frame
        rho = np.sqrt(((q / axes) ** 2).sum(-1))
        if lobes is not None and len(lobes[1]):
            unit = q / (np.linalg.norm(q, axis=-1, keepdims=True) + 1e-6)
            rho = rho / (1.0 + (np.exp((unit @ lobes[0].T - 1.0) / 0.12) * lobes[1]).max(-1))
        r_eq = float(np.cbrt(np.prod(axes)))
        frac = np.clip(0.5 - (rho - 1.0) * r_eq / edge_mm, 0, 1).astype(np.float32)
        return sl, frac


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


# -- the phantom ----------------------------------------------------------------------------
def chest_ct_phantom(
    seed: int | np.random.Generator = 0,
    *,
    shape: tuple[int, int, int] = (40, 96, 96),
    spacing_xyz: tuple[float, float, float] = (0.8, 0.8, 2.5),
    origin_xyz: tuple[float, float, float] | None = None,
    n_nodules: int | None = None,
    nodules_per_scan: tuple[int, int] = (1, 3),
    noise_hu: float = 20.0,
    seriesuid: str = "phantom",
) -> ChestCTPhantom:
    """Generate one chest-CT-like scan in memory (see the module docstring).

    Args:
        seed: an int or a ``numpy.random.Generator`` (everything is drawn from it).
        shape: ``(D, H, W)`` voxels, at least ``(8, 32, 32)``.
        spacing_xyz: voxel size in mm, ITK order (column, row, slice).
        origin_xyz: LPS mm of voxel (0, 0, 0); default: field of view centred in x/y, a
            scanner-like negative z.
        n_nodules: exact number of nodules (overrides ``nodules_per_scan``).
        nodules_per_scan: inclusive range the number of nodules is drawn from.
        noise_hu: standard deviation of the Gaussian noise added to every voxel.
        seriesuid: recorded in the result.

    Returns:
        The phantom with its HU array, masks, nodule truth and candidate points.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    d, h, w = (int(s) for s in shape)
    if d < 8 or h < 32 or w < 32:
        raise ValueError(f"chest_ct_phantom: shape must be at least (8, 32, 32), got {shape}")
    sx, sy, sz = (float(s) for s in spacing_xyz)
    if min(sx, sy, sz) <= 0:
        raise ValueError(f"chest_ct_phantom: spacing_xyz must be positive, got {spacing_xyz}")
    lo_n, hi_n = (int(v) for v in nodules_per_scan)
    if lo_n < 0 or hi_n < lo_n:
        raise ValueError(f"chest_ct_phantom: nodules_per_scan must be (lo, hi) with 0 <= lo <= hi, "
                         f"got {nodules_per_scan}")
    if noise_hu < 0:
        raise ValueError(f"chest_ct_phantom: noise_hu must be >= 0, got {noise_hu}")
    fov_x, fov_y = w * sx, h * sy
    if origin_xyz is None:
        origin_xyz = (round(-(w - 1) / 2 * sx + float(rng.uniform(-3, 3)), 3),
                      round(-(h - 1) / 2 * sy + float(rng.uniform(-3, 3)), 3),
                      round(float(rng.uniform(-350, -150)), 3))
    cv = _Canvas((d, h, w), (sx, sy, sz), origin_xyz)
    cx0, cy0 = origin_xyz[0] + (w - 1) / 2 * sx, origin_xyz[1] + (h - 1) / 2 * sy  # FOV centre
    z0, z1 = float(cv.z[0]), float(cv.z[-1])
    u = ((cv.z - z0) / max(z1 - z0, 1e-6))[:, None, None]  # 0 inferior … 1 superior
    x = cv.x[None, None, :] - cx0
    y = cv.y[None, :, None] - cy0

    # body: ellipse with a fat rim, vertebra and ribs — the same in every slice, so drawn
    # once in 2D (ribs on two slices of three) and copied into the volume
    bx, by = 0.46 * fov_x * rng.uniform(0.95, 1.02), 0.36 * fov_y * rng.uniform(0.95, 1.05)
    x2, y2 = x[0], y[0]  # (1, W), (H, 1)
    rb = (x2 / bx) ** 2 + (y2 / by) ** 2
    body = rb < 1.0  # (H, W)
    plain = np.where(body, np.where(rb >= 0.80, FAT_HU, SOFT_HU), AIR_HU).astype(np.float32)
    plain[((x2 / (0.07 * fov_x)) ** 2 + ((y2 - 0.24 * by) / (0.06 * fov_y)) ** 2) < 1] = BONE_HU

    # lungs: two ellipses that taper towards the apex and stop above the diaphragm
    taper = np.sqrt(np.clip((0.98 - u) / 0.45, 0, 1)) * np.sqrt(np.clip((u - 0.02) / 0.12, 0, 1))
    scale2 = np.where(taper > 0, 0.45 + 0.55 * taper, 0.0).astype(np.float32) ** 2  # (D, 1, 1)
    lung = np.zeros((d, h, w), dtype=bool)
    lungs_geo = []
    for side in (-1, 1):
        lcx = side * 0.22 * fov_x * rng.uniform(0.95, 1.05)
        lcy = -0.03 * fov_y
        lax, lay = 0.135 * fov_x * rng.uniform(0.93, 1.05), 0.25 * fov_y * rng.uniform(0.93, 1.05)
        q = (((x2 - lcx) / lax) ** 2 + ((y2 - lcy) / lay) ** 2).astype(np.float32)  # (H, W)
        lung |= (q[None] < scale2) & body[None]
        lungs_geo.append((lcx + cx0, lcy + cy0, lax, lay))
    # ribs: small bright ellipses in the chest wall beside each lung
    rib = np.zeros((h, w), dtype=bool)
    for ang in np.linspace(0.15, math.pi - 0.15, 7):
        for side in (-1, 1):
            rx, ry = side * 0.405 * fov_x * abs(math.cos(ang)) ** 0.7, -0.30 * fov_y * math.sin(ang) * 0.9
            if (rx / bx) ** 2 + (ry / by) ** 2 > 0.85:
                rx, ry = rx * 0.93, ry * 0.93
            rib |= ((x2 - rx) / (0.022 * fov_x)) ** 2 + ((y2 - ry) / (0.02 * fov_y)) ** 2 < 1
    with_ribs = np.where(rib & body, np.float32(BONE_HU), plain)
    hu = np.empty((d, h, w), dtype=np.float32)
    hu[:] = plain
    hu[np.arange(d) % 3 != 0] = with_ribs
    np.putmask(hu, lung, np.float32(LUNG_HU + rng.uniform(-25, 25)))  # lungs over ribs: ribs stay outside
    # parenchyma texture: low-frequency density variation (±~25 HU) and a gravity-dependent
    # gradient (posterior lung denser), as in real CT where the lung is never flat -850 HU
    texture = _smooth_field(rng, (d, h, w), (sz, sy, sx), 4.0) * np.float32(rng.uniform(10, 30))
    texture += (y / (0.5 * fov_y)).astype(np.float32) * np.float32(rng.uniform(5, 25))
    hu += np.where(lung, texture, np.float32(0))
    del texture

    # vessels: trees from each hilum to random points of the lung, plus short head-foot
    # running vessels (round bright dots in one axial slice: the nodule look-alikes)
    vessel = np.zeros((d, h, w), dtype=np.float32)
    segments: list[tuple[np.ndarray, np.ndarray, float]] = []
    zmid = z0 + 0.45 * (z1 - z0)
    r_max = min(2.6, 0.035 * fov_x)
    for side, (lcx, lcy, lax, lay) in zip((-1, 1), lungs_geo, strict=True):
        hilum = np.array([lcx - side * 0.55 * lax, lcy + 0.1 * lay, zmid])
        pts = _lung_points(rng, cv, lung, side, cx0, 20)
        for target in pts:
            mid = hilum + (target - hilum) * rng.uniform(0.35, 0.6) + rng.normal(0, 0.1, 3) * [lax, lay, lax]
            segments.append((hilum, mid, r_max * rng.uniform(0.6, 1.0)))
            segments.append((mid, target, r_max * rng.uniform(0.35, 0.6)))
            for _ in range(3):  # thin twigs off the branch: most real lung vessels are < 1.5 mm
                root = mid + (target - mid) * rng.uniform(0.2, 1.0)
                twig = root + rng.normal(0, 1, 3) * [0.25 * lax, 0.25 * lay, 0.25 * lax]
                segments.append((root, twig, max(0.35, r_max * rng.uniform(0.12, 0.3))))
        for p0 in _lung_points(rng, cv, lung, side, cx0, 4):
            run = np.array([rng.normal(0, 0.15), rng.normal(0, 0.15), 1.0]) * rng.uniform(8, 25)
            segments.append((p0 - run / 2, p0 + run / 2, r_max * rng.uniform(0.45, 0.9)))
    for a, b, r in segments:
        cv.tube(a, b, r, vessel)
    _blend(hu, vessel * lung, VESSEL_HU)

    # airways: trachea down to the carina, main bronchi into the lungs, a few branches
    wall = np.zeros((d, h, w), dtype=np.float32)
    lumen = np.zeros((d, h, w), dtype=np.float32)
    r_tr = min(7.0, 0.06 * fov_x)
    carina = np.array([cx0, cy0 - 0.12 * fov_y, z0 + 0.6 * (z1 - z0)])
    top = np.array([cx0, cy0 - 0.14 * fov_y, z1 + 5.0])
    airway_segments = [(top, carina, r_tr)]
    for side, (lcx, lcy, lax, _lay) in zip((-1, 1), lungs_geo, strict=True):
        hil = np.array([lcx - side * 0.3 * lax, lcy - 0.05 * fov_y, carina[2] - 0.12 * (z1 - z0)])
        airway_segments.append((carina, hil, 0.7 * r_tr))
        for _ in range(2):
            dirn = _unit(np.array([side * rng.uniform(0.3, 1), rng.uniform(-0.6, 0.6), rng.uniform(-1, 1)]))
            airway_segments.append((hil, hil + dirn * rng.uniform(0.5, 0.9) * lax * 1.5, 0.35 * r_tr))
    for a, b, r in airway_segments:
        cv.tube(a, b, r + max(0.8, 0.25 * r), wall)
        cv.tube(a, b, r, lumen)
    _blend(hu, np.where(wall > lumen, wall, 0), SOFT_HU)
    _blend(hu, lumen, AIR_HU)
    airway_lumen = lumen > 0.5

    # nodules
    n = int(n_nodules) if n_nodules is not None else int(rng.integers(lo_n, hi_n + 1))
    labels = np.zeros((d, h, w), dtype=np.int16)
    nodules: list[PhantomNodule] = []
    for _ in range(n):
        nod = _place_nodule(rng, cv, lung, airway_lumen, labels, nodules)
        if nod is None:
            continue
        (sl, frac), truth = nod
        blended = hu[sl] + (truth.hu - hu[sl]) * frac
        if truth.kind == "part_solid":  # a solid core inside the ground-glass halo
            core = cv.ellipsoid(np.asarray(truth.center_xyz), np.full(3, truth.diameter_mm / 2 * 0.45),
                                np.eye(3))
            if core is not None:
                csl, cfrac = core
                sub = tuple(slice(c.start - s.start, c.stop - s.start) for c, s in zip(csl, sl, strict=True))
                blended[sub] += (SOFT_HU - 5 - blended[sub]) * cfrac
        # heterogeneous inside (real nodules are not uniform): smooth ±~30 HU variation
        blended += _smooth_field(rng, blended.shape, (sz, sy, sx), 1.5) * np.float32(30.0) * frac
        hu[sl] = np.maximum(hu[sl], blended) if truth.kind == "ground_glass" else blended
        if truth.kind == "solid" and truth.diameter_mm >= 8 and rng.random() < 0.4:  # spiculated margin
            spic = np.zeros((d, h, w), dtype=np.float32)
            c0 = np.asarray(truth.center_xyz)
            for _ in range(int(rng.integers(4, 9))):
                tip = c0 + _unit(rng.normal(size=3)) * truth.diameter_mm / 2 * rng.uniform(1.3, 1.9)
                cv.tube(c0, tip, float(rng.uniform(0.3, 0.6)), spic)
            _blend(hu, spic * lung * (labels == 0), truth.hu)
        labels[sl][frac >= 0.5] = len(nodules) + 1
        nodules.append(truth)

    # the scanner: partial-volume blur (in-plane point spread and the slice profile), then noise
    # correlated over neighbouring voxels (reconstruction kernels make grain, not white noise)
    blur_mm = float(rng.uniform(0.3, 0.8))
    ndimage.gaussian_filter(hu, (0.25, blur_mm / sy, blur_mm / sx), output=hu, truncate=3.0)
    if noise_hu > 0:
        noise = rng.standard_normal(size=hu.shape, dtype=np.float32)
        grain = float(rng.uniform(0.4, 0.9))
        ndimage.gaussian_filter(noise, (0, grain, grain), output=noise, truncate=3.0)
        noise *= np.float32(noise_hu / max(float(noise[:, ::7, ::7].std()), 1e-6))
        hu += noise
        del noise
    np.rint(hu, out=hu)
    np.clip(hu, -1024, 3071, out=hu)
    hu_i16 = hu.astype(np.int16)
    geometry = Geometry((sx, sy, sz), tuple(float(o) for o in origin_xyz))
    candidates = _candidates(rng, cv, lung, segments, airway_segments, nodules)
    return ChestCTPhantom(seriesuid, hu_i16, geometry, lung, labels, nodules, candidates)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], spacing_irc: tuple[float, float, float],
                  scale_mm: float) -> np.ndarray:
    """A smooth random field of unit-ish std with features of ``scale_mm``, drawn on a grid
    coarse by that scale and interpolated up (cheap on a 512×512 scan)."""
    step = np.maximum(1, np.floor(scale_mm / np.asarray(spacing_irc))).astype(int)
    coarse = rng.standard_normal(tuple(int(-(-n // s)) + 2 for n, s in zip(shape, step, strict=True)))
    coarse = ndimage.gaussian_filter(coarse.astype(np.float32), 0.7)
    coarse /= max(float(coarse.std()), 1e-6)
    up = ndimage.zoom(coarse, step, order=1, grid_mode=False)
    return np.ascontiguousarray(up[tuple(slice(0, n) for n in shape)], dtype=np.float32)


def _blend(hu: np.ndarray, frac: np.ndarray, value: float) -> None:
    """``hu ← hu + (value − hu)·frac`` in place, touching only voxels with ``frac > 0``."""
    nz = frac > 0
    hu[nz] += (np.float32(value) - hu[nz]) * frac[nz]


def _sample_voxels(rng: np.random.Generator, mask: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` random ``(i, r, c)`` indices where ``mask`` is true (rejection sampling:
    no index list of a whole 512×512×130 volume is built)."""
    frac = max(float(mask[::4, ::8, ::8].mean()), 1e-4)
    draw = rng.integers(0, mask.size, int(min(4 * n / frac + 64, 4_000_000)))
    hit = draw[mask.ravel()[draw]][:n]
    return np.stack(np.unravel_index(hit, mask.shape), axis=-1) if len(hit) else np.zeros((0, 3), int)


def _lung_points(rng: np.random.Generator, cv: _Canvas, lung: np.ndarray, side: int, cx0: float,
                 n: int) -> list[np.ndarray]:
    """``n`` random voxel centres (mm) of the lung on ``side`` (-1 right, +1 left of ``cx0``)."""
    idx = _sample_voxels(rng, lung, 3 * n)
    idx = idx[np.sign(cv.x[idx[:, 2]] - cx0) == side][:n]
    return [np.array([cv.x[c], cv.y[r], cv.z[i]], dtype=np.float64) for i, r, c in idx]


def _place_nodule(rng: np.random.Generator, cv: _Canvas, lung: np.ndarray, airway: np.ndarray,
                  labels: np.ndarray, placed: list[PhantomNodule]
                  ) -> tuple[tuple[tuple[slice, slice, slice], np.ndarray], PhantomNodule] | None:
    """Rejection-sample an ellipsoid nodule inside a lung; ~30 % are juxta-pleural: 75–97 %
    of the ellipsoid inside the lung, cut flat by the wall (the rest is chest wall)."""
    lung_idx = _sample_voxels(rng, lung & ~airway, 240)
    if len(lung_idx) == 0:
        return None
    kind = str(rng.choice(NODULE_KINDS, p=[0.55, 0.2, 0.25]))
    juxta = bool(rng.random() < 0.3)
    diam = float(np.exp(rng.uniform(np.log(3.0), np.log(30.0))))
    for attempt in range(240):
        if attempt and attempt % 30 == 0:
            diam = max(3.0, diam * 0.75)
        if attempt == 180:
            juxta = False
        r = diam / 2
        i, rr, c = lung_idx[attempt % len(lung_idx)]
        centre = np.array([cv.x[c], cv.y[rr], cv.z[i]], dtype=np.float64) + rng.uniform(-0.5, 0.5, 3) * cv.sp
        if any(np.linalg.norm(centre - np.asarray(p.center_xyz)) < r + p.diameter_mm / 2 + 2.0 for p in placed):
            continue
        axes = r * np.exp(rng.uniform(-0.15, 0.15, 3))
        axes *= r / np.cbrt(np.prod(axes))  # equivalent diameter stays ``diam``
        rot = _random_rotation(rng)
        n_lobes = int(rng.integers(0, 5)) if diam >= 6 else 0
        dirs = rng.normal(size=(n_lobes, 3))
        lobes = (dirs / np.linalg.norm(dirs, axis=1, keepdims=True), rng.uniform(0.08, 0.22, n_lobes))
        got = cv.ellipsoid(centre, axes, rot, lobes=lobes)
        if got is None:
            continue
        sl, frac = got
        inside = frac >= 0.5
        if inside.sum() == 0 or (labels[sl][inside] > 0).any() or airway[sl][inside].any():
            continue
        in_lung = float(lung[sl][inside].mean())
        grown = cv.ellipsoid(centre, axes * 1.22 + 1.5, rot)  # lobes + 1.5 mm: free of the wall or not
        margin_in_lung = float(lung[grown[0]][grown[1] >= 0.5].mean()) if grown else 0.0
        if juxta and not (0.75 <= in_lung <= 0.97 and margin_in_lung < 1.0):
            continue
        if not juxta and margin_in_lung < 1.0:
            continue
        frac = frac * lung[sl]  # a juxta-pleural nodule sits on the wall, not inside it
        hu = {"solid": float(rng.uniform(0, 120)), "part_solid": float(rng.uniform(-550, -400)),
              "ground_glass": float(rng.uniform(-600, -300))}[kind]
        ratings = _ratings(rng, diam, kind)
        irc = _world_to_index(cv, centre)
        truth = PhantomNodule(
            center_xyz=tuple(round(float(v), 4) for v in centre),  # type: ignore[arg-type]
            center_irc=tuple(round(float(v), 4) for v in irc),  # type: ignore[arg-type]
            diameter_mm=round(diam, 3), kind=kind, juxta_pleural=juxta, ratings=ratings,
            malignancy=float(np.median(ratings)), malignant=sum(v >= 4 for v in ratings) >= 2, hu=hu)
        return (sl, frac), truth
    return None


def _world_to_index(cv: _Canvas, xyz: np.ndarray) -> np.ndarray:
    """LPS mm → (i, r, c) for the identity-direction canvas."""
    cri = (np.asarray(xyz, dtype=np.float64) - cv.org) / cv.sp
    return cri[::-1]


def _ratings(rng: np.random.Generator, diam: float, kind: str) -> tuple[int, ...]:
    """Four readers' malignancy ratings (1–5): larger and part-solid nodules are more often
    malignant. Drawn so that "≥ 2 readers rate 4 or 5" and "median ≥ 4" agree."""
    logit = (diam - 12.0) / 4.0 + {"solid": 0.0, "part_solid": 1.0, "ground_glass": -0.5}[kind]
    malignant = rng.random() < 1 / (1 + math.exp(-logit))
    if malignant:
        r = sorted(int(v) for v in rng.integers(4, 6, 4))
        if rng.random() < 0.4:
            r[0] = 3
    else:
        r = sorted(int(v) for v in rng.integers(1, 4, 4))
        if rng.random() < 0.3:
            r[-1] = 4
    return tuple(int(v) for v in rng.permutation(r))


def _candidates(rng: np.random.Generator, cv: _Canvas, lung: np.ndarray,
                vessels: list[tuple[np.ndarray, np.ndarray, float]],
                airways: list[tuple[np.ndarray, np.ndarray, float]],
                nodules: list[PhantomNodule]) -> list[tuple[float, float, float, int]]:
    """Class 1 at each nodule; ~20 class-0 points on vessels, airway walls and lung tissue."""
    rows: list[tuple[float, float, float, int]] = [(*n.center_xyz, 1) for n in nodules]

    def ok(p: np.ndarray) -> bool:
        i, r, c = np.rint(_world_to_index(cv, p)).astype(int)
        if not (0 <= i < lung.shape[0] and 0 <= r < lung.shape[1] and 0 <= c < lung.shape[2]) or not lung[i, r, c]:
            return False
        return all(np.linalg.norm(p - np.asarray(n.center_xyz)) > n.diameter_mm / 2 + 3.0 for n in nodules)

    def add(points: list[np.ndarray], want: int) -> None:
        got = 0
        for p in points:
            if got == want:
                break
            if ok(p):
                rows.append((*(round(float(v), 4) for v in p), 0))  # type: ignore[arg-type]
                got += 1

    vessel_pts = [a + (b - a) * rng.uniform(0.2, 1.0) for a, b, _ in (vessels[k] for k in rng.permutation(len(vessels)))]
    add(vessel_pts, 10)
    wall_pts = []
    for k in rng.permutation(len(airways))[:8]:
        a, b, r = airways[k]
        axis = _unit(b - a)
        side = _unit(np.cross(axis, rng.normal(size=3)))
        wall_pts.append(a + (b - a) * rng.uniform(0.3, 1.0) + side * (r + 0.5))
    add(wall_pts, 3)
    random_pts = [np.array([cv.x[c], cv.y[r], cv.z[i]], dtype=np.float64)
                  for i, r, c in _sample_voxels(rng, lung, 40)]
    add(random_pts, 20 - (len(rows) - len(nodules)))
    return rows


# -- writers --------------------------------------------------------------------------------
def _uid(*parts: Any) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=_UID_PREFIX, entropy_srcs=["medlens-chest-ct", *map(str, parts)]))


def make_chest_ct_like(
    root: str | Path,
    *,
    n_scans: int = 4,
    shape: tuple[int, int, int] = (40, 96, 96),
    spacing_xyz: tuple[float, float, float] = (0.8, 0.8, 2.5),
    seed: int = 0,
    fmt: str = "luna16",
    nodules_per_scan: tuple[int, int] = (1, 3),
    noise_hu: float = 20.0,
    vary_spacing: bool = False,
) -> Path:
    """Write ``n_scans`` chest-CT phantoms under ``root`` in the LUNA16 or DICOM layout.

    Args:
        root: an empty or new folder.
        n_scans: number of scans (patients).
        shape: ``(D, H, W)`` voxels per scan.
        spacing_xyz: voxel size in mm (column, row, slice).
        seed: the same seed writes byte-identical files.
        fmt: ``"luna16"`` or ``"dicom"`` (see the module docstring).
        nodules_per_scan: inclusive range of the number of nodules per scan.
        noise_hu: Gaussian noise (HU standard deviation).
        vary_spacing: draw each scan's spacing as scanners vary it (pixels 0.6–0.9 mm, slices
            1–2.5 mm) instead of ``spacing_xyz``: a model trained on them sees nodules at many
            voxel sizes.

    Returns:
        ``root``. The truth is in ``root/truth.json`` (see :func:`read_truth`).
    """
    from medlens.io.atomic import atomic_write_json, atomic_write_text

    fmt = look_up_option(fmt, FORMATS, what="synthetic chest CT format")
    if n_scans < 1:
        raise ValueError(f"make_chest_ct_like: n_scans must be >= 1, got {n_scans}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scans: list[dict[str, Any]] = []
    ann_rows: list[list[Any]] = []
    cand_rows: list[list[Any]] = []
    for k in range(n_scans):
        series_uid = _uid(seed, k, "series")
        if vary_spacing:
            pixel = round(float(rng.uniform(0.6, 0.9)), 4)
            spacing_xyz = (pixel, pixel, float(rng.choice([1.0, 1.25, 1.5, 2.0, 2.5])))
        ph = chest_ct_phantom(rng, shape=shape, spacing_xyz=spacing_xyz,
                              nodules_per_scan=nodules_per_scan, noise_hu=noise_hu, seriesuid=series_uid)
        entry: dict[str, Any] = {"seriesuid": series_uid, "shape": list(ph.hu.shape),
                                 "spacing": list(ph.geometry.spacing), "origin": list(ph.geometry.origin),
                                 "direction": list(ph.geometry.direction),
                                 "nodules": [asdict(n) for n in ph.nodules]}
        if fmt == "luna16":
            entry["path"] = f"subset0/{series_uid}.mhd"
            _write_mhd(root / "subset0", series_uid, ph)
        else:
            patient = f"SYNCT-{k:04d}"
            study_uid = _uid(seed, k, "study")
            rel = Path(patient) / study_uid / series_uid
            entry.update(path=str(rel), patient_id=patient, study_uid=study_uid)
            _write_dicom_series(root / rel, ph, patient_id=patient, study_uid=study_uid, seed=seed, k=k)
        scans.append(entry)
        for n in ph.nodules:
            ann_rows.append([series_uid, *n.center_xyz, n.diameter_mm, n.malignancy])
        for x, y, z, cls in ph.candidates:
            cand_rows.append([series_uid, x, y, z, cls])
    atomic_write_text(root / "annotations.csv",
                      _csv(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "malignancy"], ann_rows))
    atomic_write_text(root / "candidates.csv", _csv(["seriesuid", "coordX", "coordY", "coordZ", "class"], cand_rows))
    atomic_write_json(root / "truth.json", {"format": fmt, "seed": seed, "scans": scans})
    return root


def read_truth(root: str | Path) -> dict[str, Any]:
    """The ``truth.json`` that :func:`make_chest_ct_like` wrote under ``root``."""
    import json

    return json.loads((Path(root) / "truth.json").read_text(encoding="utf-8"))


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(header)
    wr.writerows(rows)
    return buf.getvalue()


def _write_mhd(folder: Path, stem: str, ph: ChestCTPhantom) -> None:
    """``<stem>.mhd`` + ``<stem>.raw`` written in a temporary folder and renamed in (raw first)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(ph.hu)
    img.SetSpacing(ph.geometry.spacing)
    img.SetOrigin(ph.geometry.origin)
    img.SetDirection(ph.geometry.direction)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=folder))
    try:
        sitk.WriteImage(img, str(tmp / f"{stem}.mhd"), useCompression=False)
        for suffix in (".raw", ".mhd"):
            (tmp / f"{stem}{suffix}").replace(folder / f"{stem}{suffix}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_dicom_series(folder: Path, ph: ChestCTPhantom, *, patient_id: str, study_uid: str,
                        seed: int, k: int) -> None:
    """One CT Image Storage file per slice, numbered from the top of the chest down."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    from medlens.io.atomic import atomic_write

    d, h, w = ph.hu.shape
    sx, sy, sz = ph.geometry.spacing
    ox, oy, oz = ph.geometry.origin
    frame_uid = _uid(seed, k, "frame")
    for n, i in enumerate(range(d - 1, -1, -1), start=1):
        sop_uid = _uid(seed, k, "sop", i)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = ph.seriesuid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientID = patient_id
        ds.PatientName = f"Phantom^{patient_id}"
        ds.StudyDate = "20260101"
        ds.Modality = "CT"
        ds.Manufacturer = "medlens synthetic phantom"
        ds.SeriesNumber = 1
        ds.InstanceNumber = n
        z = oz + i * sz
        ds.ImagePositionPatient = [f"{ox:.4f}", f"{oy:.4f}", f"{z:.4f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{z:.4f}"
        ds.PixelSpacing = [f"{sy:.6g}", f"{sx:.6g}"]  # row spacing (y), column spacing (x)
        ds.SliceThickness = f"{sz:.6g}"
        ds.Rows, ds.Columns = h, w
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        ds.PixelData = (ph.hu[i].astype(np.int32) + 1024).astype("<u2").tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
        atomic_write(folder / f"{n:06d}.dcm", lambda fh, data=data: fh.write(data))
