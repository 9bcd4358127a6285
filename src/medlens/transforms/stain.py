"""Stain normalisation of H&E histology: Macenko (2009) or Reinhard (2001), through torchstain.

Why: laboratories stain differently (haematoxylin/eosin amounts, scanner white point), and a
network trained on one lab's colours meets another lab's. Normalising every image to one
reference stain removes part of that difference before the network sees it.

The reference is fitted on the *training* split only and is robust to odd slides: the pixels
of each training patient (a few dozen of their images) are pooled and fitted once per patient,
and the reference is the median over patients (stain vectors renormalised to unit length), not
one image that may be atypical. It is stored in :class:`StainReference` inside the
preprocessing config, so the package applies it again, identically, at predict, evaluate and
explain time. torchstain's numpy backend does the colour algebra (no torch/tensorflow needed).

Images without enough tissue (blank or white patches, where neither method is defined) and
images on which the normaliser fails numerically pass through unchanged with a reason; callers
count them in the log. torchstain is the optional ``medlens[stain]`` extra, imported lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medlens.errors import BadInputError, ConfigError

log = logging.getLogger(__name__)

METHODS = ("none", "macenko", "reinhard")
IO = 240  # transmitted light intensity (Macenko's and torchstain's default)
BETA = 0.15  # optical density below which a channel counts as transparent (background)
MIN_TISSUE_FRACTION = 0.05  # less tissue than this: the image passes through unchanged
MIN_TISSUE_PIXELS = 16
PIXELS_PER_GROUP = 200_000  # pixels pooled per patient for the reference fit (subsampled)


class StainReference(BaseModel):
    """The target stain, fitted on training images (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["macenko", "reinhard"]
    stain_matrix: list[list[float]] | None = Field(None, description="macenko: (3, 2) optical-density "
                                                   "vectors of haematoxylin and eosin (columns), RGB rows")
    max_concentration: list[float] | None = Field(None, description="macenko: 99th-percentile H and E amounts")
    lab_mean: list[float] | None = Field(None, description="reinhard: mean of L, a, b (torchstain's scale)")
    lab_std: list[float] | None = Field(None, description="reinhard: SD of L, a, b")
    n_images: int = Field(0, ge=0, description="training images the reference was fitted on")
    n_groups: int = Field(0, ge=0, description="patients (or image groups) whose fits the median pools")
    source: str = "train split"


def _backend() -> Any:
    try:
        from torchstain.numpy import normalizers
    except ImportError:  # an optional extra
        raise ConfigError("stain normalisation needs torchstain: pip install 'medlens[stain]'") from None
    return normalizers


def tissue_mask(img: np.ndarray, *, io: float = IO, beta: float = BETA) -> np.ndarray:
    """``(H, W)`` bool: pixels absorbing light in every channel (Macenko's own tissue rule:
    optical density ``-log((I + 1) / io) >= beta`` in R, G and B)."""
    od = -np.log((img[..., :3].astype(np.float32) + 1.0) / io)
    return np.all(od >= beta, axis=-1)


def _enough_tissue(img: np.ndarray) -> bool:
    n = int(tissue_mask(img).sum())
    return n >= MIN_TISSUE_PIXELS and n >= MIN_TISSUE_FRACTION * img.shape[0] * img.shape[1]


def normalize_stain(img: np.ndarray, ref: StainReference) -> tuple[np.ndarray, str | None]:
    """Map an ``(H, W, 3)`` uint8 RGB image to the reference stain.

    Returns:
        ``(image, None)`` on success; ``(the input unchanged, reason)`` when the image has too
        little tissue or the normaliser fails on it (never raises for an image's content).
    """
    if img.ndim != 3 or img.shape[2] != 3:
        return img, f"not an RGB image (shape {img.shape})"
    if not _enough_tissue(img):
        return img, "too little tissue"
    if ref.method == "reinhard" and float(img.reshape(-1, 3).std(0).max()) < 0.5:
        # Reinhard divides by the patch's SD: whether float rounding leaves it at 0 (an error)
        # or a few 1e-7 (an absurd colour) depends on the numpy build, so refuse it here
        return img, "reinhard failed: the patch has one colour (SD 0), nothing to standardise"
    nz = _backend()
    try:
        with np.errstate(divide="raise", invalid="raise", over="ignore", under="ignore"):
            if ref.method == "macenko":
                norm = nz.NumpyMacenkoNormalizer()
                norm.HERef = np.asarray(ref.stain_matrix, dtype=np.float64)
                norm.maxCRef = np.asarray(ref.max_concentration, dtype=np.float64)
                out, _, _ = norm.normalize(img, Io=IO, beta=BETA, stains=False)
            else:
                norm = nz.NumpyReinhardNormalizer()
                norm.target_means = np.asarray(ref.lab_mean, dtype=np.float32)
                norm.target_stds = np.asarray(ref.lab_std, dtype=np.float32)
                out = norm.normalize(img)
    except (FloatingPointError, ValueError, IndexError, np.linalg.LinAlgError) as e:
        return img, f"{ref.method} failed: {type(e).__name__}: {e}"
    out = np.asarray(out)
    if out.shape != img.shape:
        return img, f"{ref.method} returned shape {out.shape}"
    return np.ascontiguousarray(out, dtype=np.uint8), None


def _pooled_pixels(images: Sequence[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Pixels of the images with enough tissue, as one ``(N, 1, 3)`` uint8 'image' (subsampled)."""
    kept = [im[..., :3].reshape(-1, 3) for im in images if im.ndim == 3 and im.shape[2] >= 3
            and _enough_tissue(im)]
    if not kept:
        return np.empty((0, 1, 3), np.uint8), 0
    px = np.concatenate(kept)
    if len(px) > PIXELS_PER_GROUP:
        px = px[rng.choice(len(px), PIXELS_PER_GROUP, replace=False)]
    return px[:, None, :], len(kept)


def fit_reference(groups: Mapping[str, Sequence[np.ndarray]], method: str, *, seed: int = 0) -> StainReference:
    """The reference stain from training images grouped by patient: one fit per group on its
    pooled pixels, then the median over groups.

    Args:
        groups: patient (or any group) → ``(H, W, 3)`` uint8 RGB images of the training split.
        method: ``macenko`` or ``reinhard``.

    Raises:
        ConfigError: unknown method.
        BadInputError: no group had an image with enough tissue to fit on.
    """
    if method not in METHODS[1:]:
        raise ConfigError(f"stain_normalize must be one of {', '.join(METHODS)}, got {method!r}")
    nz = _backend()
    rng = np.random.default_rng(seed)
    fits: list[tuple[np.ndarray, np.ndarray]] = []
    n_images = 0
    for name in sorted(groups):
        px, n = _pooled_pixels(groups[name], rng)
        if n == 0:
            continue
        try:
            with np.errstate(divide="raise", invalid="raise", over="ignore", under="ignore"):
                if method == "macenko":
                    norm = nz.NumpyMacenkoNormalizer()
                    norm.fit(px, Io=IO, beta=BETA)
                    a, b = np.asarray(norm.HERef, float), np.asarray(norm.maxCRef, float)
                else:
                    norm = nz.NumpyReinhardNormalizer()
                    norm.fit(px)
                    a, b = np.asarray(norm.target_means, float), np.asarray(norm.target_stds, float)
        except (FloatingPointError, ValueError, IndexError, np.linalg.LinAlgError) as e:
            log.info("stain reference: group %s left out (%s: %s)", name, type(e).__name__, e)
            continue
        if np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
            fits.append((a, b))
            n_images += n
    if not fits:
        raise BadInputError("stain normalisation: no training image has enough tissue to fit a reference "
                            f"(needs ≥ {MIN_TISSUE_FRACTION:.0%} of pixels absorbing light); "
                            "leave preprocess.stain_normalize at none for this data")
    a = np.median(np.stack([f[0] for f in fits]), axis=0)
    b = np.median(np.stack([f[1] for f in fits]), axis=0)
    common = {"method": method, "n_images": n_images, "n_groups": len(fits)}
    if method == "macenko":
        a = a / np.linalg.norm(a, axis=0, keepdims=True)
        return StainReference(stain_matrix=np.round(a, 6).tolist(), max_concentration=np.round(b, 6).tolist(),
                              **common)
    return StainReference(lab_mean=np.round(a, 6).tolist(), lab_std=np.round(b, 6).tolist(), **common)
