"""Chest-CT phantom volumes in Hounsfield units: body, lungs, vessels, airways and nodules.

Why: see :mod:`medlens.data.synthetic.chest_ct` (the public entry): this module builds one
scan in memory (:func:`chest_ct_phantom`) with its nodule truth and candidate points; the
writers (:mod:`medlens.data.synthetic.chest_ct_writers`) put scans on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medlens.data.synthetic.chest_ct_canvas import (
    Canvas,
    blend,
    lung_points,
    random_rotation,
    sample_voxels,
    smooth_field,
    unit,
    world_to_index,
)
from medlens.io.geometry import Geometry

NODULE_KINDS = ("solid", "part_solid", "ground_glass")
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
    cv = Canvas((d, h, w), (sx, sy, sz), origin_xyz)
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
        # the diaphragm's dome pushes up into each lung's base: in the lowest axial slices the lung
        # is a crescent around a bright convex bump (on LIDC-IDRI-0001, such bumps were false positives)
        dome = (((x2 - lcx) / (0.8 * lax)) ** 2 + ((y2 - lcy) / (0.8 * lay)) ** 2).astype(np.float32)[None] \
            + ((u - 0.02) / 0.22) ** 2 < 1.0
        lung |= (q[None] < scale2) & body[None] & ~dome
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
    texture = smooth_field(rng, (d, h, w), (sz, sy, sx), 4.0) * np.float32(rng.uniform(10, 30))
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
        pts = lung_points(rng, cv, lung, side, cx0, 20)
        for target in pts:
            mid = hilum + (target - hilum) * rng.uniform(0.35, 0.6) + rng.normal(0, 0.1, 3) * [lax, lay, lax]
            segments.append((hilum, mid, r_max * rng.uniform(0.6, 1.0)))
            segments.append((mid, target, r_max * rng.uniform(0.35, 0.6)))
            for _ in range(3):  # thin twigs off the branch: most real lung vessels are < 1.5 mm
                root = mid + (target - mid) * rng.uniform(0.2, 1.0)
                twig = root + rng.normal(0, 1, 3) * [0.25 * lax, 0.25 * lay, 0.25 * lax]
                segments.append((root, twig, max(0.35, r_max * rng.uniform(0.12, 0.3))))
        for p0 in lung_points(rng, cv, lung, side, cx0, 4):
            run = np.array([rng.normal(0, 0.15), rng.normal(0, 0.15), 1.0]) * rng.uniform(8, 25)
            segments.append((p0 - run / 2, p0 + run / 2, r_max * rng.uniform(0.45, 0.9)))
    # hilar trunks: the pulmonary arteries and veins enter each lung from the mediastinum at the
    # hilum, about twice as thick as any branch inside it; cut across in an axial slice, attached to
    # the mediastinum, they are round and bright — the false positives LIDC-IDRI-0001 showed a
    # ranker that never saw them. Drawn without random draws: the rest of a seed's phantom stays.
    r_trunk = min(5.0, 0.05 * fov_x)
    for side, (lcx, lcy, lax, lay) in zip((-1, 1), lungs_geo, strict=True):
        hilum = np.array([lcx - side * 0.55 * lax, lcy + 0.1 * lay, zmid])
        segments.append((hilum - np.array([side * 0.8 * lax, 0.0, 0.0]), hilum, r_trunk))  # from the mediastinum
        for up in (-1, 1):  # upper and lower lobar trunks, running head-foot along the medial lung
            lobar = hilum + np.array([side * 0.15 * lax, 0.15 * up * lay, up * 0.25 * (z1 - z0)])
            segments.append((hilum, lobar, 0.7 * r_trunk))
    for a, b, r in segments:
        cv.tube(a, b, r, vessel)
    blend(hu, vessel * lung, VESSEL_HU)

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
            dirn = unit(np.array([side * rng.uniform(0.3, 1), rng.uniform(-0.6, 0.6), rng.uniform(-1, 1)]))
            airway_segments.append((hil, hil + dirn * rng.uniform(0.5, 0.9) * lax * 1.5, 0.35 * r_tr))
    for a, b, r in airway_segments:
        cv.tube(a, b, r + max(0.8, 0.25 * r), wall)
        cv.tube(a, b, r, lumen)
    blend(hu, np.where(wall > lumen, wall, 0), SOFT_HU)
    blend(hu, lumen, AIR_HU)
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
        blended += smooth_field(rng, blended.shape, (sz, sy, sx), 1.5) * np.float32(30.0) * frac
        hu[sl] = np.maximum(hu[sl], blended) if truth.kind == "ground_glass" else blended
        if truth.kind == "solid" and truth.diameter_mm >= 8 and rng.random() < 0.4:  # spiculated margin
            spic = np.zeros((d, h, w), dtype=np.float32)
            c0 = np.asarray(truth.center_xyz)
            for _ in range(int(rng.integers(4, 9))):
                tip = c0 + unit(rng.normal(size=3)) * truth.diameter_mm / 2 * rng.uniform(1.3, 1.9)
                cv.tube(c0, tip, float(rng.uniform(0.3, 0.6)), spic)
            blend(hu, spic * lung * (labels == 0), truth.hu)
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


def _place_nodule(rng: np.random.Generator, cv: Canvas, lung: np.ndarray, airway: np.ndarray,
                  labels: np.ndarray, placed: list[PhantomNodule]
                  ) -> tuple[tuple[tuple[slice, slice, slice], np.ndarray], PhantomNodule] | None:
    """Rejection-sample an ellipsoid nodule inside a lung; ~30 % are juxta-pleural: 75–97 %
    of the ellipsoid inside the lung, cut flat by the wall (the rest is chest wall)."""
    lung_idx = sample_voxels(rng, lung & ~airway, 240)
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
        rot = random_rotation(rng)
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
        irc = world_to_index(cv, centre)
        truth = PhantomNodule(
            center_xyz=tuple(round(float(v), 4) for v in centre),  # type: ignore[arg-type]
            center_irc=tuple(round(float(v), 4) for v in irc),  # type: ignore[arg-type]
            diameter_mm=round(diam, 3), kind=kind, juxta_pleural=juxta, ratings=ratings,
            malignancy=float(np.median(ratings)), malignant=sum(v >= 4 for v in ratings) >= 2, hu=hu)
        return (sl, frac), truth
    return None


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


def _candidates(rng: np.random.Generator, cv: Canvas, lung: np.ndarray,
                vessels: list[tuple[np.ndarray, np.ndarray, float]],
                airways: list[tuple[np.ndarray, np.ndarray, float]],
                nodules: list[PhantomNodule]) -> list[tuple[float, float, float, int]]:
    """Class 1 at each nodule; ~20 class-0 points on vessels, airway walls and lung tissue."""
    rows: list[tuple[float, float, float, int]] = [(*n.center_xyz, 1) for n in nodules]

    def ok(p: np.ndarray) -> bool:
        i, r, c = np.rint(world_to_index(cv, p)).astype(int)
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
        axis = unit(b - a)
        side = unit(np.cross(axis, rng.normal(size=3)))
        wall_pts.append(a + (b - a) * rng.uniform(0.3, 1.0) + side * (r + 0.5))
    add(wall_pts, 3)
    random_pts = [np.array([cv.x[c], cv.y[r], cv.z[i]], dtype=np.float64)
                  for i, r, c in sample_voxels(rng, lung, 40)]
    add(random_pts, 20 - (len(rows) - len(nodules)))
    return rows
