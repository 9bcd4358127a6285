"""Synthetic H&E breast-tissue patches in the Kaggle IDC layout.

Why: the demo and every test need IDC-like data without the real (large, licensed) set.
Patches are drawn as hematoxylin/eosin concentration maps (stroma with collagen fibres,
fat, ducts, lymphocytes, tumour nests) and coloured with per-patient stain vectors, so
stain varies by patient but does not carry the label. Malignancy is a latent score whose
class distributions overlap more as ``difficulty`` rises; nucleus size, density,
pleomorphism and hyperchromasia each read that score with their own noise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlens.data.synthetic import drawing as d

H_VEC = np.array([0.60, 0.74, 0.34])  # hematoxylin OD vector (fitted to real IDC colours)
E_VEC = np.array([0.15, 0.85, 0.50])  # eosin
SCALE = 2  # render at 2× and area-downsample (anti-aliasing)


@dataclass(frozen=True)
class _Stain:
    h_vec: np.ndarray
    e_vec: np.ndarray
    h_gain: float
    e_gain: float
    i0: np.ndarray


def _patient_stain(rng: np.random.Generator) -> _Stain:
    return _Stain(
        h_vec=d.jitter_vec(rng, H_VEC, 0.07),
        e_vec=d.jitter_vec(rng, E_VEC, 0.07),
        h_gain=float(rng.uniform(0.7, 1.35)),
        e_gain=float(rng.uniform(0.65, 1.4)),
        i0=np.clip(rng.uniform(228, 250) + rng.normal(0, 4, 3), 200, 255),
    )


def _fibres(rng: np.random.Generator, img: np.ndarray, u: float, theta: float, n: int) -> None:
    """Wavy collagen fibres roughly along ``theta`` (added to the eosin map)."""
    import cv2

    s = img.shape[0]
    layer = np.zeros_like(img)
    t = np.linspace(-0.75, 0.75, 14)[None] * s
    th = theta + rng.normal(0, 0.25, (n, 1))
    off = rng.uniform(-0.6, 0.6, (n, 1)) * s
    wave = (
        rng.uniform(1, 4, (n, 1))
        * u
        * np.sin(t / (rng.uniform(8, 20, (n, 1)) * u) + rng.uniform(0, 6.3, (n, 1)))
    )
    x = s / 2 + t * np.cos(th) - (off + wave) * np.sin(th)
    y = s / 2 + t * np.sin(th) + (off + wave) * np.cos(th)
    pts = np.round(np.stack([x, y], 2) * 16).astype(np.int32)
    half = n // 2
    for group, value, width in ((pts[:half], 0.3, 1.2 * u), (pts[half:], 0.2, 2.4 * u)):
        if len(group):
            cv2.polylines(layer, list(group), False, value, max(1, round(width)), cv2.LINE_8, 4)
    img += cv2.GaussianBlur(layer, (0, 0), 0.7 * u)


def _nuclei(
    rng: np.random.Generator,
    img: np.ndarray,
    pts: np.ndarray,
    r: np.ndarray | float,
    elong: np.ndarray | float,
    angle: np.ndarray | float,
    irreg: float,
    h: np.ndarray | float,
) -> None:
    """Draw ``len(pts)`` nuclei of radius ``r`` (area-preserving elongation) into ``img``."""
    if len(pts) == 0:
        return
    r = np.asarray(r, dtype=np.float64)
    a = r * np.sqrt(1 + np.asarray(elong, dtype=np.float64))
    d.fill_many(img, d.blobs(rng, pts, a, r * r / a, angle, irreg), h)


def render_idc_patch(
    rng: np.random.Generator, m: float, stain: _Stain, size: int = 50, difficulty: float = 0.5
) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 patch for malignancy score ``m`` in [0, 1]."""
    s = size * SCALE
    u = s / 100.0  # drawing unit: half a pixel of a 50-px patch (sizes scale with `size`)
    m_den, m_size, m_pleo, m_chrom = (
        d.jitter01(rng, m, 0.03 + 0.12 * difficulty) for _ in range(4)
    )
    cellular = rng.uniform(0.3, 1.0)  # label-free cellularity of the background tissue

    emap = 0.5 + 0.14 * d.smooth_noise(rng, (s, s), 5)
    emap *= rng.uniform(0.6, 1.2)  # stroma density (nuisance)
    hmap = 0.1 + 0.05 * d.smooth_noise(rng, (s, s), 6)
    theta = rng.uniform(0, math.pi)
    _fibres(rng, emap, u, theta, int(rng.integers(5, 15)))

    # Benign epithelium: ducts with a pale lumen and a ring of small regular nuclei.
    for _ in range(rng.poisson(1.2 * (1 - m_den))):
        cx, cy = rng.uniform(0, s, 2)
        rad = rng.uniform(8, 16) * u
        d.disc(emap, cx, cy, rad + 4 * u, 0.3)
        d.disc(emap, cx, cy, rad - 3 * u, 0.15)
        d.disc(hmap, cx, cy, rad - 3 * u, 0.03)
        k = max(6, int(2 * math.pi * rad / (3.6 * u)))
        a = 2 * math.pi * np.arange(k) / k + rng.normal(0, 0.05, k)
        pts = np.stack([cx + rad * np.cos(a), cy + rad * np.sin(a)], 1)
        _nuclei(rng, hmap, pts, rng.uniform(1.6, 2.2, k) * u, 0.6, a + math.pi / 2, 0.05, 0.95)

    # Tumour nests: crowded, enlarged, pleomorphic, hyperchromatic nuclei.
    n_tum = rng.poisson(2 + 45 * m_den**1.5)
    if n_tum:
        centres = rng.uniform(0.15 * s, 0.85 * s, (1 + rng.poisson(1.5), 2))
        spread = rng.uniform(12, 25) * u
        pts = centres[rng.integers(0, len(centres), n_tum)] + rng.normal(0, spread, (n_tum, 2))
        r0 = (2.0 + 2.6 * m_size) * u
        cyto = d.blobs(rng, pts, r0 * 1.9, r0 * 1.6, rng.uniform(0, math.pi, n_tum), 0.2)
        d.fill_many(emap, cyto, 0.3)
        d.fill_many(hmap, cyto, 0.2)
        tex = 1 + (0.12 + 0.3 * m_chrom) * d.fine_noise(rng, (s, s), 0.6 * u)
        nuc = np.zeros((s, s), np.float32)
        radii = r0 * np.maximum(0.5, 1 + (0.08 + 0.3 * m_pleo) * rng.normal(size=n_tum))
        h = (0.9 + 0.8 * m_chrom) * rng.uniform(0.85, 1.15, n_tum)
        _nuclei(
            rng,
            nuc,
            pts,
            radii,
            rng.uniform(0, 0.6, n_tum),
            rng.uniform(0, math.pi, n_tum),
            0.04 + 0.3 * m_pleo,
            h,
        )
        hmap = np.maximum(hmap, nuc * tex)

    # Stromal fibroblasts (spindles along the fibres) and lymphocytes: label-free context.
    n_f = rng.poisson(30 * cellular)
    _nuclei(
        rng,
        hmap,
        rng.uniform(0, s, (n_f, 2)),
        1.4 * u,
        rng.uniform(2, 6, n_f),
        theta + rng.normal(0, 0.2, n_f),
        0.05,
        0.9,
    )
    n_l = rng.poisson(rng.exponential(3 + 12 * difficulty) * cellular)
    _nuclei(
        rng,
        hmap,
        rng.uniform(0, s, (n_l, 2)),
        rng.uniform(1.5, 2.0, n_l) * u,
        0.1,
        0.0,
        0.0,
        rng.uniform(1.2, 1.5, n_l),
    )

    # Fat: packed empty adipocytes with thin membranes (either class).
    if rng.random() < 0.4 * (1 - 0.7 * d.jitter01(rng, m, 0.2)):
        sp = rng.uniform(12, 24) * u
        g = np.arange(-1, s / sp + 1) * sp
        gx, gy = np.meshgrid(g, g)
        cen = np.stack([gx.ravel(), gy.ravel()], 1) + rng.normal(0, 0.2 * sp, (gx.size, 2))
        fx, fy = rng.uniform(0, s, 2)
        keep = np.hypot(cen[:, 0] - fx, cen[:, 1] - fy) < rng.uniform(15, 40) * u
        cells = d.blobs(rng, cen[keep], 0.62 * sp, 0.62 * sp, 0.0, 0.1)
        d.fill_many(hmap, cells, 0.0)
        d.fill_many(emap, cells, 0.0)
        import cv2

        cv2.polylines(emap, list(cells), True, 0.5, max(1, round(0.8 * u)), cv2.LINE_8, 4)

    rgb = d.beer_lambert(
        [hmap * stain.h_gain, emap * stain.e_gain], [stain.h_vec, stain.e_vec], stain.i0
    )
    blur = rng.uniform(0.0, 0.35 + 0.5 * difficulty)
    return d.finish(rgb, rng, (size, size), blur, 1.5 + 3 * difficulty)


def _patient_grid(
    rng: np.random.Generator, n: int, n_pos: int, size: int
) -> list[tuple[int, int, int]]:
    """Patch coordinates on a virtual slide; positives cluster in a tumour region."""
    side = math.ceil(math.sqrt(n * 2.5))
    cells = rng.choice(side * side, size=n, replace=False)
    cols, rows = cells % side, cells // side
    tc, tr = rng.uniform(0, side, 2)
    dist = np.hypot(cols - tc, rows - tr) + rng.normal(0, 0.5, n)
    order = np.argsort(dist, kind="stable")
    labels = np.zeros(n, int)
    labels[order[:n_pos]] = 1
    x0, y0 = 1 + size * int(rng.integers(0, 20)), 1 + size * int(rng.integers(0, 20))
    return [
        (x0 + size * int(c), y0 + size * int(r), int(lab)) for c, r, lab in zip(cols, rows, labels)
    ]


def make_idc_like(
    root: str | os.PathLike[str],
    *,
    patients: int = 12,
    patches_per_patient: int = 120,
    size: int = 50,
    difficulty: float = 0.5,
    positive_fraction: float = 0.35,
    single_class_fraction: float = 0.0,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write an IDC-like data set: ``<root>/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png``.

    Args:
        root: empty or new folder to write into.
        patients: number of patients (numeric ids like the real set, e.g. ``10253``).
        patches_per_patient: patches per patient.
        size: patch side in pixels (real set: 50).
        difficulty: 0 = trivially separable classes, 1 = almost no signal.
        positive_fraction: mean share of class-1 patches; varies per patient.
        single_class_fraction: share of patients with one class only (as in the real
            set, where most patients have only IDC patches); 0 gives every patient both.
        seed: the same seed writes byte-identical files.
        overwrite: allow a non-empty ``root`` (same-named files are replaced).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    patients = d.check_count("patients", patients)
    per = d.check_count("patches_per_patient", patches_per_patient, 2)
    size = d.check_count("size", size, 8)
    difficulty = d.check_fraction("difficulty", difficulty)
    positive_fraction = d.check_fraction("positive_fraction", positive_fraction)
    single_class_fraction = d.check_fraction("single_class_fraction", single_class_fraction)
    out = d.prepare_root(root, overwrite)

    top = d.rng_for(seed, d.TAG_IDC)
    ids = np.sort(top.choice(np.arange(8800, 17000), size=patients, replace=False))
    n_single = round(single_class_fraction * patients)
    single = set(top.choice(patients, size=n_single, replace=False).tolist()) if n_single else set()
    for i, pid in enumerate(ids):
        rng = d.rng_for(seed, d.TAG_IDC, i + 1)
        stain = _patient_stain(rng)
        if i in single:
            n_pos = per if rng.random() < max(positive_fraction, 0.5) else 0
        else:
            frac = rng.beta(4 * positive_fraction + 0.5, 4 * (1 - positive_fraction) + 0.5)
            n_pos = int(np.clip(round(frac * per), 1, per - 1))
        grade = rng.normal(0, 0.04)  # patient-level tumour grade
        grid = _patient_grid(rng, per, n_pos, size)
        labels = np.array([g[2] for g in grid])
        scores = np.clip(d.latent_scores(rng, labels, difficulty) + grade * labels, 0, 1)
        for (x, y, lab), m in zip(grid, scores):
            img = render_idc_patch(rng, float(m), stain, size, difficulty)
            name = f"{pid}_idx5_x{x}_y{y}_class{lab}.png"
            d.write_bytes(out / str(pid) / str(lab) / name, d.encode_png(img))
    return out
