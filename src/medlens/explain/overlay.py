"""Heat-map overlays as PNG: 2D maps over the image, 3D maps as the three slices through
the map's peak plus maximum-intensity projections along each axis."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medlens.io.atomic import atomic_write_bytes

#: Panels smaller than this (pixels) are enlarged so a reader can see them.
MIN_PANEL = 160


Norm = tuple[Sequence[float], Sequence[float]]


def to_display(
    image: torch.Tensor | np.ndarray, norm: Norm | None = None
) -> np.ndarray:
    """One model input ``(C, *spatial)`` → float RGB ``(*spatial, 3)`` in [0, 1].

    Args:
        norm: the ``(mean, std)`` per channel the input was normalised with (the model
            package's ``normalize``). The normalisation is undone, so the picture has the
            colours the user sees (pink H&E stays pink). Without it, each image is
            stretched to [0, 1]: only for inputs whose normalisation is unknown.
    """
    arr = (
        image.detach().float().cpu().numpy()
        if isinstance(image, torch.Tensor)
        else np.asarray(image, np.float32)
    )
    if norm is not None:
        shape = (-1,) + (1,) * (arr.ndim - 1)
        mean = np.broadcast_to(np.asarray(norm[0], np.float32).reshape(-1), (arr.shape[0],))
        std = np.broadcast_to(np.asarray(norm[1], np.float32).reshape(-1), (arr.shape[0],))
        arr = np.clip(arr * std.reshape(shape) + mean.reshape(shape), 0.0, 1.0)
    arr = arr[:3] if arr.shape[0] >= 3 else arr[:1]
    if norm is None:
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    arr = np.moveaxis(arr, 0, -1)
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr


def blend(
    rgb: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45, cmap: str = "jet"
) -> np.ndarray:
    """Colour ``heat`` (H, W) in [0, 1] and blend it over ``rgb`` (H, W, 3) → uint8.

    The colour's weight grows with the heat (``alpha`` at the peak, 0 where the map is
    0), so the image keeps its own colours where the model does not look.
    """
    from matplotlib import colormaps

    h = np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0, 1)
    coloured = colormaps[cmap](h)[..., :3]
    a = (alpha * h)[..., None]
    out = (1 - a) * rgb + a * coloured
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def enlarge_panel(panel: np.ndarray) -> np.ndarray:
    """``panel`` repeated pixel-wise so that its longer side reaches ``MIN_PANEL``."""
    k = max(1, int(np.ceil(MIN_PANEL / max(panel.shape[:2]))))
    return np.kron(panel, np.ones((k, k, 1), dtype=panel.dtype)) if k > 1 else panel


def panel_grid(panels: list[list[np.ndarray]], pad: int = 4) -> np.ndarray:
    """Rows of RGB uint8 panels as one image on white, ``pad`` pixels apart."""
    h = max(p.shape[0] for row in panels for p in row)
    w = max(p.shape[1] for row in panels for p in row)
    rows = []
    for row in panels:
        cells = []
        for p in row:
            cell = np.full((h + pad, w + pad, 3), 255, np.uint8)
            cell[: p.shape[0], : p.shape[1]] = p
            cells.append(cell)
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)


def overlay_image(
    image: torch.Tensor | np.ndarray,
    heat: np.ndarray,
    *,
    alpha: float = 0.45,
    norm: Norm | None = None,
) -> np.ndarray:
    """RGB uint8 picture of one explanation.

    Args:
        image: model input ``(C, H, W)`` or ``(C, D, H, W)``.
        heat: map ``(H, W)`` or ``(D, H, W)`` in [0, 1].
        norm: ``(mean, std)`` the input was normalised with (see :func:`to_display`).

    2D: image | overlay side by side. 3D: top row, the axial/coronal/sagittal slices
    through the map's peak; bottom row, maximum projections of map and image.
    """
    rgb = to_display(image, norm)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != rgb.shape[:-1]:
        raise ValueError(f"map shape {heat.shape} does not match image {rgb.shape[:-1]}")
    if heat.ndim == 2:
        img8 = (rgb * 255).round().astype(np.uint8)
        return panel_grid([[enlarge_panel(img8), enlarge_panel(blend(rgb, heat, alpha=alpha))]])
    if heat.ndim != 3:
        raise ValueError(f"maps must be 2D or 3D, got shape {heat.shape}")
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    slices, projections = [], []
    for axis in range(3):
        sl = blend(
            np.take(rgb, peak[axis], axis=axis), np.take(heat, peak[axis], axis=axis), alpha=alpha
        )
        pj = blend(rgb.max(axis=axis), heat.max(axis=axis), alpha=alpha)
        slices.append(enlarge_panel(sl))
        projections.append(enlarge_panel(pj))
    return panel_grid([slices, projections])


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def save_overlay(
    path: str | os.PathLike[str],
    image: torch.Tensor | np.ndarray,
    heat: np.ndarray,
    *,
    alpha: float = 0.45,
    norm: Norm | None = None,
) -> Path:
    """Write the overlay of one explanation as a PNG (atomically)."""
    return atomic_write_bytes(path, png_bytes(overlay_image(image, heat, alpha=alpha, norm=norm)))
