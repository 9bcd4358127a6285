"""Robust 2D image reading: PNG, JPEG, TIFF (8/16-bit, grey/RGB/RGBA/CMYK), DICOM.

Every failure is an :class:`ImageReadError` naming the file and the reason, so a data
set can skip the file and go on.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from medlens.errors import BadInputError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".gif", ".webp"}
)
#: Images with more pixels than this are refused (decompression-bomb guard).
MAX_PIXELS = 120_000_000
#: Smallest usable side; 1×1 images carry no information.
MIN_SIDE = 2


class ImageReadError(BadInputError):
    """An image file could not be used. ``path`` and ``reason`` are kept separately."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_image(
    path: str | os.PathLike[str], *, channels: int | None = None, keep_depth: bool = False
) -> np.ndarray:
    """Read one 2D image as ``(H, W, C)``.

    Args:
        path: image file (PNG/JPEG/TIFF/BMP or single-frame DICOM).
        channels: convert to 1 (grey) or 3 (RGB) channels; ``None`` keeps grey as 1 and
            everything else as 3 (alpha is composited on white, CMYK converted).
        keep_depth: keep 16-bit data as ``uint16`` instead of rescaling to ``uint8``.

    Raises:
        ImageReadError: zero-byte, truncated, not an image, too large, too small, or
            an unsupported mode — with the file named.
    """
    p = Path(path)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    if not p.is_file():
        raise ImageReadError(p, "file not found")
    if p.stat().st_size == 0:
        raise ImageReadError(p, "zero-byte file")
    if is_dicom(p):
        arr = _read_dicom(p)
    else:
        arr = _read_pil(p)
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise ImageReadError(p, f"image is only {arr.shape[1]}×{arr.shape[0]} pixels")
    arr = to_depth(arr, keep_depth)
    return to_channels(arr, channels)


def is_dicom(p: Path) -> bool:
    """Whether ``p`` is a DICOM file (by extension, else by the ``DICM`` preamble)."""
    if p.suffix.lower() in {".dcm", ".dicom"}:
        return True
    try:
        with p.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_pil(p: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL warns above ~89 Mpx; our own MAX_PIXELS check below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageReadError(
                        p, f"image is {w}×{h} = {w * h:,} pixels, over the {MAX_PIXELS:,} limit"
                    )
                im.load()
                return pil_to_array(im, p)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(p, f"refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise ImageReadError(p, "not a readable image (content does not match any format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e)
        if "truncated" in msg.lower() or "broken" in msg.lower() or "end of file" in msg.lower():
            raise ImageReadError(p, f"truncated or corrupt image data ({msg})") from None
        raise ImageReadError(p, f"cannot decode image ({msg})") from None


def pil_to_array(im, p: Path) -> np.ndarray:  # noqa: ANN001
    """An opened PIL image as an ``(H, W, C)`` array (``p`` names the file in errors)."""
    from PIL import Image

    mode = im.mode
    if mode in ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba).convert("RGB")
        elif mode == "L":
            return np.asarray(im, dtype=np.uint8)[..., None]
        elif mode == "1":
            return (np.asarray(im, dtype=np.uint8) * 255)[..., None]
        else:
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ImageReadError(p, "image contains NaN or infinite values")
        return arr[..., None] if arr.ndim == 2 else arr
    raise ImageReadError(p, f"unsupported image mode {mode!r}")


def _read_dicom(p: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(p))
        arr = ds.pixel_array
    except InvalidDicomError as e:
        raise ImageReadError(p, f"not a valid DICOM file ({e})") from None
    except Exception as e:  # pydicom raises many types for truncated pixel data
        raise ImageReadError(p, f"cannot read DICOM pixel data ({type(e).__name__}: {e})") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageReadError(p, f"multi-frame DICOM ({frames} frames); give a single-frame image")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 2:
        arr = arr.astype(np.float64)
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        arr = arr * slope + intercept
        if photometric == "MONOCHROME1":
            arr = arr.max() - arr
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return (scaled * 65535).round().astype(np.uint16)[..., None]
    if arr.ndim == 3 and arr.shape[-1] == 3:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        return np.ascontiguousarray(arr.astype(np.uint8))
    raise ImageReadError(p, f"unsupported DICOM pixel array shape {arr.shape}")


def to_depth(arr: np.ndarray, keep_depth: bool) -> np.ndarray:
    """``arr`` as uint8 (min-max scaled), or kept as uint16 with ``keep_depth``."""
    if arr.dtype == np.uint8:
        return arr
    if keep_depth and arr.dtype == np.uint16:
        return arr
    a = arr.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return ((a - lo) / (hi - lo) * 255.0).round().astype(np.uint8)


def to_channels(arr: np.ndarray, channels: int | None) -> np.ndarray:
    """An ``(H, W, C)`` array with ``channels`` channels (1 ↔ 3; ``None`` keeps them)."""
    c = arr.shape[2]
    if channels is None or channels == c:
        return np.ascontiguousarray(arr)
    if channels == 3 and c == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if channels == 1 and c == 3:
        w = np.array([0.299, 0.587, 0.114])
        grey = (arr.astype(np.float64) @ w).round().clip(0, np.iinfo(arr.dtype).max)
        return grey.astype(arr.dtype)[..., None]
    raise ValueError(f"cannot convert {c} channels to {channels}")
