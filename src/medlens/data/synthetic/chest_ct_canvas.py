"""Drawing primitives of the chest-CT phantoms: a mm-addressed voxel canvas and random helpers.

Why a module of its own: :mod:`medlens.data.synthetic.chest_ct_anatomy` lays out the body,
lungs, vessels, airways and nodules with these; keeping the geometry apart keeps the anatomy
readable. Arrays are ``(D, H, W)`` = ``(I, R, C)``; world coordinates are LPS mm with an
identity direction.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


class Canvas:
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


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix (3, 3)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1."""
    return v / (np.linalg.norm(v) + 1e-12)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], spacing_irc: tuple[float, float, float],
                  scale_mm: float) -> np.ndarray:
    """A smooth random field of unit-ish std with features of ``scale_mm``, drawn on a grid
    coarse by that scale and interpolated up (cheap on a 512×512 scan)."""
    step = np.maximum(1, np.floor(scale_mm / np.asarray(spacing_irc))).astype(int)
    coarse = rng.standard_normal(tuple(int(-(-n // s)) + 2 for n, s in zip(shape, step, strict=True)))
    coarse = ndimage.gaussian_filter(coarse.astype(np.float32), 0.7)
    coarse /= max(float(coarse.std()), 1e-6)
    up = ndimage.zoom(coarse, step, order=1, grid_mode=False)
    return np.ascontiguousarray(up[tuple(slice(0, n) for n in shape)], dtype=np.float32)


def blend(hu: np.ndarray, frac: np.ndarray, value: float) -> None:
    """``hu ← hu + (value − hu)·frac`` in place, touching only voxels with ``frac > 0``."""
    nz = frac > 0
    hu[nz] += (np.float32(value) - hu[nz]) * frac[nz]


def sample_voxels(rng: np.random.Generator, mask: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` random ``(i, r, c)`` indices where ``mask`` is true (rejection sampling:
    no index list of a whole 512×512×130 volume is built)."""
    frac = max(float(mask[::4, ::8, ::8].mean()), 1e-4)
    draw = rng.integers(0, mask.size, int(min(4 * n / frac + 64, 4_000_000)))
    hit = draw[mask.ravel()[draw]][:n]
    return np.stack(np.unravel_index(hit, mask.shape), axis=-1) if len(hit) else np.zeros((0, 3), int)


def lung_points(rng: np.random.Generator, cv: Canvas, lung: np.ndarray, side: int, cx0: float,
                 n: int) -> list[np.ndarray]:
    """``n`` random voxel centres (mm) of the lung on ``side`` (-1 right, +1 left of ``cx0``)."""
    idx = sample_voxels(rng, lung, 3 * n)
    idx = idx[np.sign(cv.x[idx[:, 2]] - cx0) == side][:n]
    return [np.array([cv.x[c], cv.y[r], cv.z[i]], dtype=np.float64) for i, r, c in idx]


def world_to_index(cv: Canvas, xyz: np.ndarray) -> np.ndarray:
    """LPS mm → (i, r, c) for the identity-direction canvas."""
    cri = (np.asarray(xyz, dtype=np.float64) - cv.org) / cv.sp
    return cri[::-1]
