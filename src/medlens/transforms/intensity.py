"""Intensity policies: how raw voxel values become the network's input, written down.

An intensity policy is a small pydantic model, one of a union keyed on ``kind``, so it can
be chosen by a recipe, saved in ``config.json`` and in a model package, and applied again
at prediction time (nnU-Net's "plans" hold the same decision):

* ``percentile`` (default): per channel, window to the ``lower``–``upper`` percentiles of the
  volume (0.5–99.5 %) and scale to ``uint8`` 0–255. This is what medlens has always done for
  volumes (MRI in arbitrary units); the model then sees ``uint8 / 255``.
* ``fixed``: a fixed window ``lower``–``upper`` in the file's units (CT in Hounsfield units,
  e.g. −1000…400 for lung), scaled to ``uint8`` 0–255 or ``float32`` 0–1.
* ``zscore``: per channel, subtract the mean and divide by the standard deviation of the
  *foreground* (``nonzero`` voxels, an ``otsu`` threshold, or ``all``); ``float32``.

Every policy's :meth:`apply` takes a channel-first array ``(C, ...)`` (any number of spatial
axes: 2D and 3D alike) and returns an array of the same shape. Images only: masks are
never intensity-normalised.

:func:`to_float` is the model's input contract for stored arrays: ``uint8`` → ``[0, 1]``,
floats passed through.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def apply(self, array: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _channels(array: np.ndarray) -> np.ndarray:
        a = np.asarray(array)
        if a.ndim < 2:
            raise ValueError(f"intensity policy: expected a channel-first array (C, ...), got shape {a.shape}")
        return a


class PercentileWindow(_Policy):
    """Window each channel to its ``lower``–``upper`` percentiles, then scale to uint8."""

    kind: Literal["percentile"] = "percentile"
    lower: float = Field(0.5, ge=0, le=100)
    upper: float = Field(99.5, ge=0, le=100)

    @model_validator(mode="after")
    def _order(self) -> PercentileWindow:
        if self.lower >= self.upper:
            raise ValueError(f"percentile window: lower ({self.lower}) must be below upper ({self.upper})")
        return self

    def apply(self, array: np.ndarray) -> np.ndarray:
        """``(C, ...)`` → ``uint8`` of the same shape (a constant channel becomes 0)."""
        a = self._channels(array)
        out = np.empty(a.shape, dtype=np.uint8)
        for c in range(a.shape[0]):
            v = a[c].astype(np.float32)
            lo, hi = np.percentile(v, [self.lower, self.upper])
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            out[c] = np.clip((v - lo) * scale, 0, 255).round().astype(np.uint8)
        return out


class FixedWindow(_Policy):
    """A fixed window in the data's own units (e.g. CT Hounsfield units), the same for
    every volume and channel."""

    kind: Literal["fixed"] = "fixed"
    lower: float = -1000.0
    upper: float = 400.0
    output: Literal["uint8", "float32"] = "uint8"

    @model_validator(mode="after")
    def _order(self) -> FixedWindow:
        if self.lower >= self.upper:
            raise ValueError(f"fixed window: lower ({self.lower}) must be below upper ({self.upper})")
        return self

    def apply(self, array: np.ndarray) -> np.ndarray:
        """``(C, ...)`` → uint8 0–255 (or float32 0–1) of the same shape; values outside the
        window are clipped to its ends."""
        a = self._channels(array).astype(np.float32)
        unit = np.clip((a - np.float32(self.lower)) / np.float32(self.upper - self.lower), 0.0, 1.0)
        if self.output == "float32":
            return unit.astype(np.float32)
        return (unit * 255.0).round().astype(np.uint8)


class ZScore(_Policy):
    """Zero mean, unit standard deviation over each channel's foreground (nnU-Net's MRI
    normalisation). Voxels outside the foreground are normalised with the same numbers."""

    kind: Literal["zscore"] = "zscore"
    foreground: Literal["nonzero", "otsu", "all"] = "nonzero"
    eps: float = Field(1e-8, gt=0)

    def foreground_mask(self, channel: np.ndarray) -> np.ndarray:
        """Boolean mask of the voxels whose statistics are used (all voxels if it is empty)."""
        if self.foreground == "nonzero":
            m = channel != 0
        elif self.foreground == "otsu":
            from skimage.filters import threshold_otsu

            m = channel > threshold_otsu(channel) if np.ptp(channel) > 0 else np.ones(channel.shape, bool)
        else:
            m = np.ones(channel.shape, bool)
        return m if m.any() else np.ones(channel.shape, bool)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """``(C, ...)`` → float32 of the same shape."""
        a = self._channels(array)
        out = np.empty(a.shape, dtype=np.float32)
        for c in range(a.shape[0]):
            v = a[c].astype(np.float64)
            fg = v[self.foreground_mask(v)]
            out[c] = (v - fg.mean()) / max(float(fg.std()), self.eps)
        return out


#: The serialisable policy: ``{"kind": "percentile" | "fixed" | "zscore", ...}``.
IntensityPolicy = Annotated[PercentileWindow | FixedWindow | ZScore, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(IntensityPolicy)

#: Today's (and the default) volume policy: per-channel 0.5–99.5 percentile window to uint8.
DEFAULT_INTENSITY = PercentileWindow()


def parse_intensity(value: Any) -> PercentileWindow | FixedWindow | ZScore:
    """A policy from a dict (``{"kind": ...}``), a policy instance, or ``None`` (the default).

    Raises:
        pydantic.ValidationError: unknown ``kind`` or bad fields (the message names them).
    """
    if value is None:
        return DEFAULT_INTENSITY
    if isinstance(value, _Policy):
        return value  # type: ignore[return-value]
    return _ADAPTER.validate_python(value)


def intensity_to_dict(policy: Any) -> dict[str, Any]:
    """JSON-ready dict of a policy (``None``: the default one)."""
    return parse_intensity(policy).model_dump(mode="json")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, ...)`` → float in [0, 1] (the model's input contract); floats as they are."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def apply_to_group(policy: Any, images: list[np.ndarray]) -> list[np.ndarray]:
    """Apply ``policy`` to 2D images ``(C, H, W)`` that are slices of one volume (one
    patient's folder of slices) as if they were that volume: the statistics (percentiles,
    foreground mean/std) come from all of them together, so a slice keeps its brightness
    relative to its neighbours — normalising each slice alone would stretch a slice without
    lesion until normal tissue looks as bright as a lesion. Sizes may differ between slices.
    """
    if not images:
        return []
    pol = parse_intensity(policy)
    c = images[0].shape[0]
    if any(im.shape[0] != c for im in images):
        raise ValueError("apply_to_group: slices of one volume must have the same channel count")
    flat = pol.apply(np.concatenate([im.reshape(c, -1) for im in images], axis=1))
    out, start = [], 0
    for im in images:
        n = im[0].size
        out.append(flat[:, start:start + n].reshape(im.shape))
        start += n
    return out
