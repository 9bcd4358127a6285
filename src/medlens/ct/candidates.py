"""Candidate nodules: a 2D U-Net on context slices flags voxels; connected components group them.

As in "Deep Learning with PyTorch" part 2: the network sees a focus slice with ``context``
slices above and below as channels (7 channels for the book's 3) and predicts the nodule
voxels of the focus slice. At inference every slice of the lung bounding box goes through in
batches under ``torch.inference_mode``; the flagged voxels (probability ≥ threshold) are
grouped with :func:`scipy.ndimage.label`, and each group becomes a candidate with a centre
(probability-weighted, continuous voxel index and LPS mm) and an equivalent-sphere diameter.
The network is any registered 2D U-Net (``unet`` with small channels by default).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from medlens.ct.findings import Finding
from medlens.ct.lungs import LungMask
from medlens.io.geometry import Geometry
from medlens.transforms.intensity import FixedWindow


def context_offsets(context: int) -> np.ndarray:
    """Slice offsets ``-context … +context`` of the input channels."""
    return np.arange(-context, context + 1)


def context_stack(volume: np.ndarray, slices: np.ndarray, context: int) -> np.ndarray:
    """``(B, 2·context+1, H, W)``: for each focus slice its neighbours (edges repeated).

    ``volume`` is ``(D, H, W)`` (already windowed); ``slices`` the focus indices ``(B,)``.
    """
    idx = np.clip(np.asarray(slices)[:, None] + context_offsets(context)[None], 0, volume.shape[0] - 1)
    return volume[idx]


def pad_to(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the last two sides of ``x`` up to multiples of ``divisor`` (edge values); returns the
    padded tensor and the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


@torch.inference_mode()
def predict_probability(model: nn.Module, hu: np.ndarray, lungs: LungMask, *, window: FixedWindow,
                        context: int = 3, batch_size: int = 8, divisor: int = 16,
                        device: torch.device | str = "cpu") -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """Nodule probability of every voxel in the lung bounding box.

    Args:
        hu: the scan in HU ``(D, H, W)`` (a memory map is fine).
        lungs: its lung mask; only ``lungs.bbox`` is computed, and voxels outside the
            (coarse) mask get 0.

    Returns:
        ``(prob, box)``: float32 probabilities of shape of the box, and the box.
    """
    model.eval()
    box = lungs.bbox
    # every slice (context reaches beyond the box along I), the box in-plane, windowed once
    region = window.apply(np.asarray(hu[:, box[1], box[2]], dtype=np.float32)[None])[0]
    z0, z1 = box[0].start, box[0].stop
    prob = np.zeros((z1 - z0, *region.shape[1:]), dtype=np.float32)
    for s in range(z0, z1, batch_size):
        focus = np.arange(s, min(s + batch_size, z1))
        x = torch.from_numpy(np.ascontiguousarray(context_stack(region, focus, context))).to(device)
        x, (h, w) = pad_to(x, divisor)
        prob[focus - z0] = torch.sigmoid(model(x)[:, 0, :h, :w].float()).cpu().numpy()
    prob *= lungs.full(box)
    return prob, box


def group_candidates(prob: np.ndarray, box: tuple[slice, slice, slice], geometry: Geometry, *, seriesuid: str,
                     threshold: float = 0.5, lungs: LungMask | None = None, min_voxels: int = 2,
                     max_candidates: int = 300) -> list[Finding]:
    """Connected components of ``prob >= threshold`` as :class:`Finding` candidates.

    The centre is the probability-weighted centroid (continuous voxel index of the whole
    volume, and LPS mm); the diameter is that of a sphere of the component's volume;
    ``nodule_prob`` is the component's highest voxel probability (the classifier replaces
    it). Components with fewer than ``min_voxels`` voxels, or centred outside ``lungs``,
    are dropped; at most ``max_candidates`` are kept, most probable first.
    """
    flagged = prob >= threshold
    labels, n = ndimage.label(flagged, structure=ndimage.generate_binary_structure(3, 2))
    if n == 0:
        return []
    # per-component sums over the flagged voxels only (ndimage.maximum with an index is ~100×
    # slower on a whole scan)
    flat = np.flatnonzero(flagged)
    lab = labels.ravel()[flat] - 1
    p = prob.ravel()[flat].astype(np.float64)
    voxels = np.bincount(lab, minlength=n)
    peak = np.zeros(n)
    np.maximum.at(peak, lab, p)
    weight = np.bincount(lab, weights=p, minlength=n)
    irc = np.unravel_index(flat, prob.shape)
    centres = np.stack([np.bincount(lab, weights=p * ax, minlength=n) for ax in irc], axis=1) / weight[:, None]
    centres += np.array([s.start for s in box], dtype=np.float64)
    keep = voxels >= min_voxels
    if lungs is not None:
        keep &= lungs.contains(centres)
    order = [int(k) for k in np.argsort(-peak) if keep[k]][:max_candidates]
    if not order:
        return []
    xyz = geometry.index_to_world(centres[order])
    vox_mm3 = geometry.voxel_volume
    out = []
    for j, k in enumerate(order):
        diameter = float((6.0 * voxels[k] * vox_mm3 / np.pi) ** (1.0 / 3.0))
        out.append(Finding(seriesuid=seriesuid, center_xyz=tuple(float(v) for v in xyz[j]),  # type: ignore[arg-type]
                           center_irc=tuple(float(v) for v in centres[k]),  # type: ignore[arg-type]
                           diameter_mm=diameter, nodule_prob=float(peak[k]), malignancy_prob=None,
                           voxels=int(voxels[k])))
    return out
