"""Deterministic image preprocessing with OpenCV: stain normalisation (histology), resize/pad,
histogram equalisation, CLAHE.

Applied once when images are decoded into the uint8 cache, and identically at
prediction time (the model package stores this config), so training and serving see
the same pixels.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medlens.transforms.stain import StainReference


class PreprocessConfig(BaseModel):
    """How a decoded ``(H, W, C)`` uint8 image becomes the model's ``(C, S, S)`` input."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(64, ge=8, le=2048, description="square side in pixels")
    channels: Literal[1, 3] = 3
    resize: Literal["stretch", "pad", "crop"] = Field(
        "pad", description="stretch to the square, pad the short side (keeps aspect), or centre-crop"
    )
    equalize: Literal["none", "hist", "clahe"] = "none"
    equalize_on: Literal["luminance", "channels"] = "luminance"
    clahe_clip: float = Field(2.0, gt=0)
    clahe_grid: int = Field(8, ge=1)
    stain_normalize: Literal["none", "macenko", "reinhard"] = Field(
        "none", description="H&E stain normalisation (RGB histology) to a reference fitted on the training "
        "split: Macenko (stain vectors) or Reinhard (Lab colour moments); needs the medlens[stain] extra")
    colour_constancy: Literal["none", "shades_of_gray"] = Field(
        "none", description="per-image colour constancy (RGB): Shades of Gray (Finlayson & Trezzi 2004, "
        "Minkowski norm 6) divides each channel by its estimated illuminant, so photos from cameras and "
        "lights of different colour look alike (used for multi-clinic dermoscopy, Barata et al. 2015)")
    stain_reference: StainReference | None = Field(
        None, description="the fitted reference (filled in by training and stored in the package; "
        "give one only to reuse another run's)")

    @model_validator(mode="after")
    def _stain_needs_rgb(self) -> PreprocessConfig:
        if self.stain_normalize != "none" and self.channels != 3:
            raise ValueError("stain_normalize needs RGB input (channels 3)")
        ref = self.stain_reference
        if ref is not None and self.stain_normalize != "none" and ref.method != self.stain_normalize:
            raise ValueError(f"stain_reference was fitted for {ref.method}, not {self.stain_normalize}")
        return self


def preprocess_image(img: np.ndarray, cfg: PreprocessConfig, *,
                     stain_failures: list[str] | None = None) -> np.ndarray:
    """``(H, W, C)`` uint8 → ``(C, size, size)`` uint8 (channel-first).

    With ``cfg.stain_normalize`` the image is first mapped to the stored reference stain (before
    equalisation and resizing, on the decoded pixels); an image it cannot normalise (too little
    tissue, a numerical failure) passes through unchanged and the reason is appended to
    ``stain_failures`` when given, for the caller's count.
    """
    if img.ndim == 2:
        img = img[..., None]
    if img.dtype != np.uint8:
        raise TypeError(f"preprocess_image expects uint8, got {img.dtype}")
    img = _channels(img, cfg.channels)
    if cfg.stain_normalize != "none":
        img = _stain(img, cfg, stain_failures)
    img = _equalize(img, cfg)
    img = _resize(img, cfg.size, cfg.resize)
    if img.ndim == 2:
        img = img[..., None]
    if cfg.colour_constancy == "shades_of_gray" and img.shape[2] == 3:
        img = shades_of_gray(img)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def illuminant(img: np.ndarray, p: float = 6.0) -> np.ndarray:
    """The Shades of Gray estimate of the light's colour in ``(H, W, 3)``: the per-channel
    Minkowski ``p``-mean, ``(3,)``."""
    x = np.asarray(img, dtype=np.float32)
    return np.power(np.mean(np.power(x, p), axis=(0, 1)), 1.0 / p)


def shades_of_gray(img: np.ndarray, p: float = 6.0) -> np.ndarray:
    """``(H, W, 3)`` uint8 with the illuminant of Shades of Gray (the per-channel Minkowski
    ``p``-mean; ``p`` = 1 is Grey World, ∞ is White Patch) turned neutral; grey stays grey and the
    mean brightness is kept."""
    x = img.astype(np.float32)
    illum = np.maximum(illuminant(x, p), 1e-3)
    gain = illum.mean() / illum
    return np.clip(x * gain, 0, 255).astype(np.uint8)


def _stain(img: np.ndarray, cfg: PreprocessConfig, failures: list[str] | None) -> np.ndarray:
    from medlens.errors import ConfigError
    from medlens.transforms.stain import normalize_stain

    if cfg.stain_reference is None:  # training fits it before decoding; a package always has it
        raise ConfigError(f"preprocess.stain_normalize is {cfg.stain_normalize} but no stain_reference was "
                          "fitted; train the model (which fits it on the training split) or give one")
    out, reason = normalize_stain(img, cfg.stain_reference)
    if reason is not None and failures is not None:
        failures.append(reason)
    return out


def _channels(img: np.ndarray, channels: int) -> np.ndarray:
    c = img.shape[2]
    if c == channels:
        return img
    if channels == 3 and c == 1:
        return np.repeat(img, 3, axis=2)
    if channels == 1 and c == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
    if c == 4:
        return _channels(img[..., :3], channels)
    raise ValueError(f"cannot convert an image with {c} channels to {channels}")


def _equalize(img: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    if cfg.equalize == "none":
        return img
    if cfg.equalize == "hist":
        op = cv2.equalizeHist
    else:
        clahe = cv2.createCLAHE(clipLimit=cfg.clahe_clip, tileGridSize=(cfg.clahe_grid, cfg.clahe_grid))
        op = clahe.apply
    if img.shape[2] == 1:
        return op(np.ascontiguousarray(img[..., 0]))[..., None]
    if cfg.equalize_on == "channels":
        return np.stack([op(np.ascontiguousarray(img[..., i])) for i in range(img.shape[2])], axis=2)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    lab[..., 0] = op(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _resize(img: np.ndarray, size: int, mode: str) -> np.ndarray:
    h, w = img.shape[:2]
    if mode == "pad" and h != w:
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        img = cv2.copyMakeBorder(img, top, side - h - top, left, side - w - left, cv2.BORDER_REFLECT_101
                                 if min(h, w) > 1 else cv2.BORDER_REPLICATE)
    elif mode == "crop" and h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = img[top : top + side, left : left + side]
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    out = cv2.resize(img, (size, size), interpolation=interp)
    return out
