"""What a candidate looks like, in numbers: shape and intensity descriptors for ranking.

Why: on phantoms the 3D crop network learns from a few dozen nodules and ranks candidates
poorly (AUC 0.79 among the candidates of fresh phantoms), while the physics that tells a
nodule from a vessel is simple to measure: a nodule is a compact, roughly spherical lump
brighter than the lung around it; a vessel is a tube that runs on out of the box; the
chest wall is a large bright region. These descriptors, measured on a fixed box in mm
around each candidate (the finest curvatures on a finer 12 mm box), feed
:class:`medlens.ct.ranker.CandidateRanker`. They are physical (HU, mm, ratios), so they do
not depend on the scanner's voxel size.

Everything is batched over the candidates except the connected-component step (one
``ndimage.label`` per crop and threshold, on a 24×40×40 box).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medlens.ct.crops import CropSpec, extract_crops
from medlens.ct.findings import Finding
from medlens.io.volumes import Volume

#: The box the descriptors are measured on: 30 × 40 × 40 mm, 1.25 × 1 × 1 mm voxels, HU
#: window −1000…400 (the crop's 0–1 values map back to HU).
FEATURE_CROP = CropSpec((24, 40, 40), (1.25, 1.0, 1.0), (-1000.0, 400.0))
SPHERES_MM = (2.0, 4.0, 6.0, 9.0)
SHELLS_MM = ((4.0, 8.0), (6.0, 11.0), (9.0, 14.0))
SCALES_MM = (1.5, 2.5, 4.0)
#: Small nodules (3–6 mm: a ball of radius r answers most at σ = r/√3, 0.9–1.7 mm) need finer
#: scales than the box above resolves (1.25 mm slices): those are measured on a 12 mm box of
#: 0.5 mm voxels. Then the scale where the weakest downward curvature peaks (Lindeberg's scale
#: selection) gives the curvatures of the lump at its own size, so a 4 mm and a 12 mm nodule look
#: alike to the ranker (before: small nodules ranked low, below vessels).
FINE_CROP = CropSpec((24, 24, 24), (0.5, 0.5, 0.5), (-1000.0, 400.0))
FINE_SCALES_MM = (0.6, 0.8, 1.0, 1.25)
LUMP_HU = (-600.0, -300.0)  # thresholds of the bright lump: ground glass and solid
NEAR_MM = 3.0  # the lump is the bright component that covers most of this ball at the centre
LUMP_BALL_MM = 12.0  # the lump is looked at inside this ball: a nodule fits, a vessel or the wall runs out
AIR_HU = -700.0  # lung: a nodule is surrounded by it, a candidate in the mediastinum or wall is not

FEATURE_NAMES: tuple[str, ...] = (
    *(f"mean_hu_r{r:g}mm" for r in SPHERES_MM),
    *(f"contrast_{a:g}_{b:g}mm" for a, b in SHELLS_MM),
    *(f"shell_air_{a:g}_{b:g}mm" for a, b in SHELLS_MM),
    "box_air",
    *(f"{k}_s{s:g}mm" for s in SCALES_MM for k in ("curv_max", "curv_mid", "curv_min", "blob_ratio")),
    *(f"{k}_{int(-t)}hu" for t in LUMP_HU
      for k in ("lump_log_volume", "lump_elongation", "lump_flatness", "lump_surface_share", "lump_ball_exits")),
    *(f"{k}_s{s:g}mm" for s in FINE_SCALES_MM for k in ("curv_max", "curv_mid", "curv_min", "blob_ratio")),
    *(f"best_scale_{k}" for k in ("curv_max", "curv_mid", "curv_min", "blob_ratio", "log_mm")),
    "generator_score", "from_unet", "candidate_diameter_mm", "candidate_log_voxels",
)
#: What the candidate generator said of a candidate (the last columns of FEATURE_NAMES): they
#: describe the phantom-trained U-Net's behaviour as much as the candidate.
GENERATOR_FEATURES = FEATURE_NAMES[-4:]
#: Not a ranking input: the lung share of the whole box gates candidates (a lung nodule has lung
#: around it; a candidate in the mediastinum or the chest wall does not). Phantom candidates
#: never have less than 0.25 of it, so as an input a linear ranker could only extrapolate.
GATE_FEATURES = ("box_air",)
#: The descriptors measured on the image alone (HU, mm, ratios): physical, scanner-independent.
IMAGE_FEATURES = tuple(n for n in FEATURE_NAMES[:-4] if n not in GATE_FEATURES)


def _grid_mm(spec: CropSpec) -> list[np.ndarray]:
    """Per axis, the crop voxels' offsets from the crop centre in mm."""
    return [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(spec.shape, spec.spacing_mm, strict=True)]


def _gauss_kernels(t: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampled Gaussian (sum 1) and its first and second derivatives at offsets ``t`` (mm)."""
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g /= g.sum()
    return g, -t / sigma**2 * g, (t**2 / sigma**4 - 1 / sigma**2) * g


def hessian_at_centre(hu: np.ndarray, spec: CropSpec, sigma_mm: float) -> np.ndarray:
    """Hessians ``(N, 3, 3)`` (HU/mm²) of the Gaussian-smoothed crops ``(N, I, R, C)`` at their
    centres: each entry is one separable contraction over the whole batch."""
    ker = [_gauss_kernels(t, sigma_mm) for t in _grid_mm(spec)]
    h = np.empty((len(hu), 3, 3), dtype=np.float64)
    for a in range(3):
        for b in range(a, 3):
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            k = [ker[ax][order[ax]] for ax in range(3)]
            h[:, a, b] = h[:, b, a] = np.einsum("nijk,i,j,k->n", hu, *k, optimize=True)
    return h


def _lump(hu: np.ndarray, r: np.ndarray, coords: np.ndarray, vox_mm3: float, threshold: float) -> list[float]:
    """Descriptors of the bright component at the centre of one crop, inside the ball of
    :data:`LUMP_BALL_MM` (zeros when none): log volume (mm³), elongation and flatness (ratios of
    its principal extents), the share of the ball's surface it covers (a nodule: none; a
    vessel: two small discs; the chest wall or mediastinum: much) and the number of separate
    places where it leaves the ball (a nodule 0, a vessel 2, a branching 3+)."""
    ball = r <= LUMP_BALL_MM
    bright = (hu > threshold) & ball
    near = bright & (r <= NEAR_MM)
    if not near.any():
        return [0.0, 0.0, 0.0, 0.0, 0.0]
    lab, _ = ndimage.label(bright)
    ids, counts = np.unique(lab[near], return_counts=True)
    comp = lab == ids[np.argmax(counts)]
    n = int(comp.sum())
    pts = coords[comp.ravel()]
    ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T) + 1e-6 * np.eye(3))) if n > 3 else np.ones(3)
    surface = ball & (r > LUMP_BALL_MM - 1.5)
    on_surface = comp & surface
    exits = ndimage.label(on_surface)[1] if on_surface.any() else 0
    return [float(np.log1p(n * vox_mm3)), float(np.sqrt(ev[2] / ev[0])), float(np.sqrt(ev[1] / ev[0])),
            float(on_surface.sum() / max(int(surface.sum()), 1)), float(exits)]


def crop_features(crops: np.ndarray, fine_crops: np.ndarray, spec: CropSpec = FEATURE_CROP,
                  fine_spec: CropSpec = FINE_CROP) -> np.ndarray:
    """Image descriptors ``(N, F_img)`` of crops ``(N, I, R, C)`` on ``spec``'s 0–1 window and of
    the same candidates' ``fine_crops`` on ``fine_spec`` (the fine-scale curvatures)."""
    lo, hi = spec.hu_window
    hu = np.asarray(crops, dtype=np.float64) * (hi - lo) + lo
    n = len(hu)
    zz, yy, xx = np.meshgrid(*_grid_mm(spec), indexing="ij")
    r = np.sqrt(zz**2 + yy**2 + xx**2)
    flat = hu.reshape(n, -1)
    cols: list[np.ndarray] = []
    means = {}
    for rad in sorted({*SPHERES_MM, *(a for a, _ in SHELLS_MM)}):
        m = (r <= rad).ravel()
        means[rad] = flat[:, m].mean(axis=1)
    cols += [means[rad] for rad in SPHERES_MM]
    shells = [((r > a) & (r <= b)).ravel() for a, b in SHELLS_MM]
    cols += [means[a] - flat[:, sh].mean(axis=1) for (a, _), sh in zip(SHELLS_MM, shells, strict=True)]
    cols += [(flat[:, sh] < AIR_HU).mean(axis=1) for sh in shells]
    cols.append((flat < AIR_HU).mean(axis=1))  # lung in the whole box: ~0 in the mediastinum or the wall
    coarse = curvatures(hu, spec, SCALES_MM)
    cols += _curvature_columns(coarse)
    coords = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
    vox = float(np.prod(spec.spacing_mm))
    lumps = np.array([[v for t in LUMP_HU for v in _lump(hu[k], r, coords, vox, t)] for k in range(n)],
                     dtype=np.float64).reshape(n, 5 * len(LUMP_HU))
    if not n:
        return np.zeros((0, len(FEATURE_NAMES) - 4))
    lo, hi = fine_spec.hu_window
    fine = curvatures(np.asarray(fine_crops, dtype=np.float64) * (hi - lo) + lo, fine_spec, FINE_SCALES_MM)
    every = np.concatenate([fine, coarse], axis=1)
    scales = np.array([*FINE_SCALES_MM, *SCALES_MM])
    best = np.argmax(every[:, :, 2], axis=1)  # where even the weakest curvature is strongest: the lump's size
    sel = every[np.arange(n), best]
    return np.column_stack([*cols, lumps, *_curvature_columns(fine), sel, _blob_ratio(sel), np.log(scales[best])])


def curvatures(hu: np.ndarray, spec: CropSpec, scales: Sequence[float]) -> np.ndarray:
    """Scale-normalised downward curvatures ``(N, len(scales), 3)`` (HU) of crops ``(N, I, R, C)``
    at their centres, strongest first: −σ²λ₁ ≥ −σ²λ₂ ≥ −σ²λ₃ (Hessian eigenvalues ascending). A
    ball is strongly positive on all three; a tube has the last ≈ 0 (along its axis)."""
    return np.stack([-(s**2) * np.linalg.eigvalsh(hessian_at_centre(hu, spec, s)) for s in scales], axis=1)


def _blob_ratio(curv: np.ndarray) -> np.ndarray:
    return curv[..., 2] / (np.abs(curv[..., 0]) + 1.0)


def _curvature_columns(curv: np.ndarray) -> list[np.ndarray]:
    """Per scale: curv_max, curv_mid, curv_min and the blob ratio curv_min / |curv_max|."""
    return [c for k in range(curv.shape[1]) for c in (*curv[:, k].T, _blob_ratio(curv[:, k]))]


def candidate_features(volume: Volume, candidates: Sequence[Finding], spec: CropSpec = FEATURE_CROP) -> np.ndarray:
    """Descriptors ``(N, len(FEATURE_NAMES))`` of ``candidates`` in ``volume`` (HU): the crop's
    image descriptors, then what the candidate generator said of it (its score, whether the
    U-Net or the blob detector found it, its size)."""
    if not candidates:
        return np.zeros((0, len(FEATURE_NAMES)))
    centres = np.array([f.center_irc for f in candidates], dtype=np.float64)
    spacing = volume.geometry.array_spacing
    img = crop_features(extract_crops(volume.array, spacing, centres, spec),
                        extract_crops(volume.array, spacing, centres, FINE_CROP), spec)
    gen = np.array([[f.nodule_prob, float(f.voxels > 0), f.diameter_mm, np.log1p(f.voxels)] for f in candidates],
                   dtype=np.float64)
    return np.column_stack([img, gen])
