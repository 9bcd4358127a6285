"""Shared drawing helpers for the synthetic generators.

Colour is made the way a microscope makes it: stain concentrations are drawn as float
maps and turned into RGB with the Beer-Lambert law, so a per-patient change of stain
vectors or gains shifts every pixel consistently (as real stain variation does) and is
independent of the label.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from medlens.errors import BadInputError

# Fixed tags keep the random streams of the generators apart for a given seed.
TAG_IDC, TAG_BLOOD, TAG_DERM = 101, 202, 303


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """An independent, reproducible generator for ``(seed, *keys)``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *(int(k) for k in keys)])


def check_fraction(name: str, value: float) -> float:
    """Validate a number in [0, 1] (difficulty, fractions)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def check_count(name: str, value: int, minimum: int = 1) -> int:
    """Validate a positive integer parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def prepare_root(root: str | os.PathLike[str], overwrite: bool) -> Path:
    """Create ``root``; refuse a non-empty one unless ``overwrite`` (no silent mixing)."""
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise BadInputError(f"{path}: exists and is not a folder; give a folder to write into")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise BadInputError(
            f"{path}: folder is not empty; give an empty or new folder, or pass "
            "overwrite=True to write over same-named files"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def latent_scores(rng: np.random.Generator, labels: np.ndarray, difficulty: float) -> np.ndarray:
    """A 'how malignant does it look' score per item, in [0, 1].

    Class means move together and spreads widen as ``difficulty`` rises: at 0 the two
    classes do not overlap, at 1 they are the same distribution.
    """
    sep = (1.0 - difficulty) ** 1.3
    mu = 0.5 + (np.asarray(labels, dtype=np.float64) - 0.5) * 0.8 * sep
    sd = 0.05 + 0.13 * difficulty
    return np.clip(mu + rng.normal(0.0, sd, size=mu.shape), 0.0, 1.0)


def jitter01(rng: np.random.Generator, m: float, sd: float = 0.1) -> float:
    """One feature's own view of the latent score (features are not fully redundant)."""
    return float(np.clip(m + rng.normal(0.0, sd), 0.0, 1.0))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise, roughly N(0, 0.6), by cubic upsampling of a coarse grid."""
    import cv2

    h, w = shape
    grid = rng.normal(0.0, 1.0, size=(max(2, cells), max(2, cells))).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def fine_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """High-frequency texture (chromatin, granules) with unit-ish spread."""
    import cv2

    n = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
    if sigma > 0:
        n = cv2.GaussianBlur(n, (0, 0), sigma)
        s = float(n.std())
        if s > 0:
            n /= s
    return n


def blobs(
    rng: np.random.Generator,
    centres: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    angle: np.ndarray,
    irregularity: np.ndarray | float,
    n: int = 14,
    max_harmonic: int = 4,
) -> np.ndarray:
    """Vectorised :func:`blob` for ``K`` shapes: int32 ``(K, n, 2)`` in 1/16 pixel units."""
    k = len(centres)
    t = _angles(n)
    h = np.arange(2, max_harmonic + 1, dtype=np.float64)
    amp = (
        rng.standard_normal((k, len(h)))
        / h**0.7
        * np.asarray(irregularity, dtype=np.float64).reshape(-1, 1)
    )
    phase = rng.uniform(0, 2 * np.pi, (k, len(h)))
    r = 1.0 + np.einsum("kh,khn->kn", amp, np.cos(h[None, :, None] * t + phase[..., None]))
    np.clip(r, 0.35, 2.0, out=r)
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 1)
    angle = np.asarray(angle, dtype=np.float64).reshape(-1, 1)
    x, y = a * r * np.cos(t), b * r * np.sin(t)
    ca, sa = np.cos(angle), np.sin(angle)
    out = np.empty((k, n, 2), dtype=np.float64)
    out[..., 0] = centres[:, :1] + ca * x - sa * y
    out[..., 1] = centres[:, 1:2] + sa * x + ca * y
    return np.round(out * 16).astype(np.int32)


_ANGLES: dict[int, np.ndarray] = {}


def _angles(n: int) -> np.ndarray:
    if n not in _ANGLES:
        _ANGLES[n] = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return _ANGLES[n]


def fill_many(img: np.ndarray, polys: np.ndarray, values: np.ndarray | float) -> None:
    """Fill ``K`` polygons from :func:`blobs`, each with its own value (later on top)."""
    import cv2

    if np.ndim(values) == 0:
        v = float(values)
        for poly in polys:
            cv2.fillPoly(img, [poly], v, cv2.LINE_8, 4)
        return
    for poly, v in zip(polys, np.asarray(values, dtype=np.float64).tolist()):
        cv2.fillPoly(img, [poly], v, cv2.LINE_8, 4)


def fill(img: np.ndarray, pts: np.ndarray, value: float) -> None:
    """Fill one float polygon ``(n, 2)`` in place with sub-pixel vertex precision."""
    import cv2

    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], value, cv2.LINE_8, 4)


def polyline(img: np.ndarray, pts: np.ndarray, value: float | tuple, thickness: float) -> None:
    """Draw an open polyline in place (sub-pixel vertices, thickness in pixels)."""
    import cv2

    line = cv2.LINE_AA if img.dtype == np.uint8 else cv2.LINE_8
    pts16 = [np.round(pts * 16).astype(np.int32)]
    cv2.polylines(img, pts16, False, value, max(1, round(thickness)), line, 4)


def disc(
    img: np.ndarray, cx: float, cy: float, r: float, value: float | tuple, thickness: int = -1
) -> None:
    """Draw a filled (or outlined) circle in place with sub-pixel centre and radius."""
    import cv2

    cv2.circle(
        img,
        (round(cx * 16), round(cy * 16)),
        max(1, round(r * 16)),
        value,
        thickness,
        cv2.LINE_8,
        4,
    )


def unit_vec(v: np.ndarray) -> np.ndarray:
    v = np.clip(np.asarray(v, dtype=np.float64), 1e-3, None)
    return v / np.linalg.norm(v)


def jitter_vec(rng: np.random.Generator, v: np.ndarray, amount: float) -> np.ndarray:
    """A stain vector perturbed by ``amount`` (per-patient stain variation)."""
    return unit_vec(unit_vec(v) + rng.normal(0.0, amount, size=3))


def beer_lambert(conc: list[np.ndarray], vectors: list[np.ndarray], i0: np.ndarray) -> np.ndarray:
    """RGB float image ``(H, W, 3)`` from stain concentration maps and OD vectors."""
    stack = np.stack([np.asarray(c, dtype=np.float32) for c in conc], axis=-1)
    np.maximum(stack, 0.0, out=stack)
    od = stack @ np.asarray(vectors, dtype=np.float32)
    return np.exp(-od) * np.asarray(i0, dtype=np.float32)


def finish(
    rgb: np.ndarray,
    rng: np.random.Generator,
    out_hw: tuple[int, int],
    blur_sigma: float,
    noise_sd: float,
) -> np.ndarray:
    """Downsample (area), blur, add sensor noise and quantise to ``uint8``."""
    import cv2

    h, w = out_hw
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    if blur_sigma > 0.05:
        rgb = cv2.GaussianBlur(rgb, (0, 0), blur_sigma)
    if noise_sd > 0:
        rgb = rgb + rng.normal(0.0, noise_sd, size=rgb.shape).astype(np.float32)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def encode_png(arr: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 array (deterministic)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_jpeg(arr: np.ndarray, quality: int = 92) -> bytes:
    """JPEG bytes of an ``(H, W, 3)`` uint8 array (deterministic for a given libjpeg)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def write_bytes(path: Path, data: bytes) -> None:
    """Write one generated image.

    Images are written directly (an fsync per small file would make thousands of patches
    slow); the manifest CSV, written last and atomically, marks a finished data set.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
