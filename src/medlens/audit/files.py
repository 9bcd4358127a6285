"""Per-file checks: readable, format matches extension, mode, bit depth — decoded once.

:func:`probe_record` reads a file's bytes once, hashes them, reads the header (PIL, or
SimpleITK for volumes, or pydicom for DICOM) and decodes the pixels. Large JPEGs are
decoded downscaled with PIL's ``draft`` (DCT scaling, ~8× faster at 2048 px) and every
image larger than ``max_side`` is reduced to exactly ``max_side`` on its longer side so
that pixel statistics (sharpness above all) compare across image sizes.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.records import DatasetIndex, Record

#: File name endings read as 3D volumes (header only; no pixel statistics).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd", ".nhdr")
#: Extension → the format PIL (or the DICOM magic) should report for it.
EXPECTED_FORMAT = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".webp": "WEBP",
    ".dcm": "DICOM",
    ".dicom": "DICOM",
}
_SUPPORTED_MODES = {
    "1": 1, "L": 8, "P": 8, "LA": 8, "PA": 8, "RGB": 8, "RGBA": 8, "RGBX": 8, "CMYK": 8,
    "YCbCr": 8, "LAB": 8, "HSV": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16,
    "I": 32, "F": 32,
}  # fmt: skip


@dataclass
class Probe:
    """What one file told us. ``array`` is the decoded ``(H, W, C)`` image (maybe reduced)."""

    path: str
    ok: bool = False
    reason: str | None = None
    kind: str = "image"  # "image" | "volume" | "array"
    format: str | None = None
    ext_mismatch: str | None = None
    mode: str | None = None
    bit_depth: int | None = None
    channels: int | None = None
    width: int | None = None
    height: int | None = None
    depth: int | None = None
    file_size: int | None = None
    jpeg_quant: float | None = None
    file_sha: str | None = None
    scale: float = 1.0  # original width / analysed width
    array: np.ndarray | None = None
    extra: dict[str, Any] | None = None


def is_volume_path(path: str) -> bool:
    low = path.lower()
    return any(low.endswith(s) for s in VOLUME_SUFFIXES)


def probe_record(index: DatasetIndex, record: Record, *, max_side: int = 512) -> Probe:
    """Check and decode one record; never raises for a bad file (the reason is kept)."""
    if "#" in record.path and record.path.split("#", 1)[0] in index.arrays:
        return _probe_array(index, record)
    p = Path(record.path)
    probe = Probe(path=record.path)
    if is_volume_path(record.path):
        probe.kind = "volume"
        return _probe_volume(p, probe)
    try:
        probe.file_size = p.stat().st_size
    except OSError as e:
        probe.reason = f"file not found or not accessible ({e.strerror or e})"
        return probe
    if probe.file_size == 0:
        probe.reason = "zero-byte file"
        return probe
    try:
        data = p.read_bytes()
    except OSError as e:
        probe.reason = f"cannot read file ({e.strerror or e})"
        return probe
    probe.file_sha = hashlib.sha256(data).hexdigest()
    ext = _suffix(p)
    if (len(data) >= 132 and data[128:132] == b"DICM") or ext in (".dcm", ".dicom"):
        _probe_dicom(p, probe, ext)
    else:
        _probe_pil(data, probe, ext, max_side)
    return probe


def _suffix(p: Path) -> str:
    return p.suffix.lower()


def _check_ext(probe: Probe, ext: str) -> None:
    expected = EXPECTED_FORMAT.get(ext)
    if expected and probe.format and expected != probe.format:
        probe.ext_mismatch = f"extension {ext} but the content is {probe.format}"


def _probe_pil(data: bytes, probe: Probe, ext: str, max_side: int) -> None:
    from PIL import Image, UnidentifiedImageError

    from medlens.io.images import MAX_PIXELS, MIN_SIDE, ImageReadError, pil_to_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                probe.format = im.format
                probe.mode = im.mode
                probe.width, probe.height = im.size
                probe.bit_depth = _SUPPORTED_MODES.get(im.mode)
                probe.channels = len(im.getbands())
                _check_ext(probe, ext)
                if im.format == "JPEG":
                    q = getattr(im, "quantization", None) or {}
                    if 0 in q:
                        probe.jpeg_quant = float(np.mean(q[0]))
                if im.mode not in _SUPPORTED_MODES:
                    probe.reason = f"unsupported image mode {im.mode!r}"
                    return
                w, h = im.size
                if w * h > MAX_PIXELS:
                    probe.reason = f"image is {w}×{h} pixels, over the {MAX_PIXELS:,} limit"
                    return
                if min(w, h) < MIN_SIDE:
                    probe.reason = f"image is only {w}×{h} pixels"
                    return
                if getattr(im, "n_frames", 1) > 1 and im.format not in ("GIF",):
                    probe.extra = {"frames": int(im.n_frames)}
                if im.format == "JPEG" and max(w, h) > 2 * max_side:
                    k = max(w, h) / max_side
                    im.draft(None, (max(1, int(w / k)), max(1, int(h / k))))
                im.load()
                arr = pil_to_array(im, Path(probe.path))
    except ImageReadError as e:
        probe.reason = e.reason
        return
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        probe.reason = f"refused as a possible decompression bomb ({e})"
        return
    except UnidentifiedImageError:
        probe.reason = "not a readable image (content does not match any format)"
        return
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e)
        low = msg.lower()
        if "truncated" in low or "broken" in low or "end of file" in low:
            probe.reason = f"truncated or corrupt image data ({msg})"
        else:
            probe.reason = f"cannot decode image ({msg})"
        return
    probe.array = _reduce(arr, max_side)
    probe.scale = probe.width / probe.array.shape[1]
    probe.ok = True


def _reduce(arr: np.ndarray, max_side: int) -> np.ndarray:
    """Resize so the longer side is ``max_side`` (area interpolation); smaller kept as is."""
    h, w = arr.shape[:2]
    if max(h, w) <= max_side:
        return arr
    import cv2

    k = max_side / max(h, w)
    out = cv2.resize(arr, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    return out[..., None] if out.ndim == 2 else out


def _probe_dicom(p: Path, probe: Probe, ext: str) -> None:
    from medlens.io.images import ImageReadError, read_image

    probe.format = "DICOM"
    _check_ext(probe, ext)
    try:
        arr = read_image(p, keep_depth=True)
    except ImageReadError as e:
        probe.reason = e.reason
        return
    probe.height, probe.width, probe.channels = arr.shape
    probe.bit_depth = 8 * arr.dtype.itemsize
    probe.mode = "RGB" if probe.channels == 3 else f"MONO{probe.bit_depth}"
    probe.array = arr
    probe.ok = True


def _probe_volume(p: Path, probe: Probe) -> Probe:
    import SimpleITK as sitk

    try:
        probe.file_size = p.stat().st_size
        probe.file_sha = _sha_file(p)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        reader.ReadImageInformation()
    except (OSError, RuntimeError) as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        probe.reason = f"cannot read volume header ({first})"
        return probe
    size = list(reader.GetSize())
    probe.format = reader.GetImageIO() or "ITK"
    probe.width, probe.height = size[0], size[1] if len(size) > 1 else 1
    probe.depth = size[2] if len(size) > 2 else 1
    probe.channels = reader.GetNumberOfComponents()
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    probe.mode = pixel
    probe.bit_depth = _itk_bits(pixel)
    probe.extra = {"spacing": [float(s) for s in reader.GetSpacing()], "dimension": len(size)}
    probe.ok = True
    return probe


def _itk_bits(pixel: str) -> int | None:
    for token, bits in (("8-bit", 8), ("16-bit", 16), ("32-bit", 32), ("64-bit", 64)):
        if token in pixel:
            return bits
    return None


def _sha_file(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _probe_array(index: DatasetIndex, record: Record) -> Probe:
    probe = Probe(path=record.path, kind="array", format="NPZ")
    try:
        arr = index.read(record)
    except (KeyError, IndexError, ValueError) as e:
        probe.reason = f"array item not found ({e})"
        return probe
    probe.height, probe.width, probe.channels = arr.shape
    probe.bit_depth = 8 * arr.dtype.itemsize
    probe.mode = "RGB" if probe.channels == 3 else "L"
    probe.array = arr
    probe.ok = True
    return probe


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """8-bit view for statistics (16-bit/float rescaled by its own range)."""
    from medlens.io.images import to_depth

    return to_depth(arr, False)
