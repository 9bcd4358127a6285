"""3D crops around candidate centres, and the cache that lets training epochs skip reading scans.

A crop is a fixed box in **millimetres** (``CropSpec.shape`` voxels of ``CropSpec.spacing_mm``,
array order (I, R, C)) sampled with trilinear interpolation from the scan, so a model sees
nodules at the same physical size whatever the scan's spacing (LUNA16 slices run from 0.6
to 2.5 mm). Intensities go through the project's fixed HU window
(:class:`medlens.transforms.intensity.FixedWindow`, float 0–1).

:class:`ScanCache` keeps each decoded scan as an ``int16`` ``.npy`` (read memory-mapped) with
its geometry in a ``.json`` beside it: epochs, stages and re-runs read slices and crops from
it instead of decoding DICOM/MetaImage again (the book's disk cache).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medlens.io.atomic import atomic_write, atomic_write_json
from medlens.io.geometry import Geometry
from medlens.io.volumes import Volume
from medlens.transforms.intensity import FixedWindow

#: Air: what lies outside the scan when a crop reaches past its edge.
AIR_HU = -1000.0


@dataclass(frozen=True)
class CropSpec:
    """The box a crop model sees.

    Attributes:
        shape: voxels (I, R, C) of the crop.
        spacing_mm: mm per crop voxel along (I, R, C); ``shape * spacing_mm`` is the field.
        hu_window: HU mapped to 0 and 1 (clipped outside).
    """

    shape: tuple[int, int, int] = (32, 48, 48)
    spacing_mm: tuple[float, float, float] = (1.5, 1.0, 1.0)
    hu_window: tuple[float, float] = (-1000.0, 400.0)

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 4:
            raise ValueError(f"CropSpec.shape must be 3 sides >= 4 voxels, got {self.shape}")
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise ValueError(f"CropSpec.spacing_mm must be 3 positive mm values, got {self.spacing_mm}")
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))
        object.__setattr__(self, "spacing_mm", tuple(float(v) for v in self.spacing_mm))
        object.__setattr__(self, "hu_window", tuple(float(v) for v in self.hu_window))

    @property
    def field_mm(self) -> tuple[float, float, float]:
        """The crop's extent in mm (I, R, C)."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing_mm, strict=True))  # type: ignore[return-value]

    @property
    def window(self) -> FixedWindow:
        return FixedWindow(lower=self.hu_window[0], upper=self.hu_window[1], output="float32")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CropSpec:
        return cls(tuple(d["shape"]), tuple(d["spacing_mm"]), tuple(d["hu_window"]))  # type: ignore[arg-type]


def extract_crops(hu: np.ndarray, array_spacing: tuple[float, ...], centers_irc: np.ndarray,
                  spec: CropSpec) -> np.ndarray:
    """Crops ``(N, *spec.shape)`` float32 in [0, 1] centred on ``centers_irc`` ``(N, 3)``.

    Args:
        hu: the scan in HU, ``(I, R, C)`` (a memory map is fine: only the boxes are read).
        array_spacing: the scan's voxel size along (I, R, C), mm.
        centers_irc: continuous voxel indices of the crop centres.
    """
    centers = np.asarray(centers_irc, dtype=np.float64).reshape(-1, 3)
    out = np.empty((len(centers), *spec.shape), dtype=np.float32)
    # crop-voxel offsets from the centre in scan-voxel units, one axis at a time (separable grid)
    steps = np.asarray(spec.spacing_mm) / np.asarray(array_spacing, dtype=np.float64)
    offs = [(np.arange(n) - (n - 1) / 2.0) * st for n, st in zip(spec.shape, steps, strict=True)]
    half = np.array([np.abs(o).max() for o in offs]) + 2
    dims = np.asarray(hu.shape)
    window = spec.window
    for k, c in enumerate(centers):
        lo = np.floor(c - half).astype(int)
        hi = np.ceil(c + half).astype(int) + 1
        src_lo, src_hi = np.maximum(lo, 0), np.minimum(hi, dims)
        box = np.full(hi - lo, AIR_HU, dtype=np.float32)
        if np.all(src_hi > src_lo):
            dst = tuple(slice(a - b, e - b) for a, e, b in zip(src_lo, src_hi, lo, strict=True))
            box[dst] = hu[tuple(slice(a, e) for a, e in zip(src_lo, src_hi, strict=True))]
        grid = np.meshgrid(*(o + ci - li for o, ci, li in zip(offs, c, lo, strict=True)), indexing="ij")
        sample = ndimage.map_coordinates(box, grid, order=1, mode="nearest", prefilter=False)
        out[k] = window.apply(sample[None])[0]
    return out


def sphere_mask(shape: tuple[int, ...], geometry: Geometry, centers_xyz: np.ndarray,
                diameters_mm: np.ndarray, *, box: tuple[slice, ...] | None = None) -> np.ndarray:
    """Bool mask ``shape`` (or of ``box`` within it) of balls of the given diameters (mm) around
    world centres: nodule masks for training the candidate model from annotations."""
    box = box or tuple(slice(0, n) for n in shape)
    out = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
    sp = np.asarray(geometry.array_spacing)
    centres = geometry.world_to_index(np.asarray(centers_xyz, dtype=np.float64).reshape(-1, 3))
    for c, d in zip(centres, np.asarray(diameters_mm, dtype=np.float64).ravel(), strict=True):
        r_vox = (d / 2.0) / sp
        lo = np.maximum(np.floor(c - r_vox).astype(int), [s.start for s in box])
        hi = np.minimum(np.ceil(c + r_vox).astype(int) + 1, [s.stop for s in box])
        if np.any(hi <= lo):
            continue
        axes = [(np.arange(a, b) - ci) * si for a, b, ci, si in zip(lo, hi, c, sp, strict=True)]
        ii, rr, cc = np.meshgrid(*axes, indexing="ij", sparse=True)
        ball = ii**2 + rr**2 + cc**2 <= (d / 2.0) ** 2
        sl = tuple(slice(a - s.start, b - s.start) for a, b, s in zip(lo, hi, box, strict=True))
        out[sl] |= ball
    return out


class ScanCache:
    """Decoded scans on disk as ``int16`` ``.npy`` + geometry ``.json``, read memory-mapped.

    The key is the scan's path, size and modification time, so an edited input is read
    again; nothing is written next to the input (the cache has its own folder).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(self, path: str | Path) -> str:
        p = Path(path).resolve()
        st = p.stat() if p.is_file() else max((f.stat() for f in p.iterdir() if f.is_file()),
                                               key=lambda s: s.st_mtime_ns, default=p.stat())
        return hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]

    def load(self, path: str | Path, reader: Callable[[Path], Volume]) -> Volume:
        """The scan at ``path`` from the cache, or read with ``reader`` (e.g.
        :func:`medlens.ct.scan.read_ct`) and cached; ``array`` is an int16 memory map in HU."""
        key = self.key(path)
        arr_path, meta_path = self.root / f"{key}.npy", self.root / f"{key}.json"
        if arr_path.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            return Volume(np.load(arr_path, mmap_mode="r"), Geometry.from_dict(meta["geometry"]),
                          path=str(path), meta=meta["meta"])
        vol = reader(Path(path))
        arr = np.clip(np.rint(np.asarray(vol.array, dtype=np.float32)), -32768, 32767).astype(np.int16)
        self.root.mkdir(parents=True, exist_ok=True)

        atomic_write(arr_path, lambda f: np.save(f, arr))
        meta = {k: v for k, v in vol.meta.items() if isinstance(v, (str, int, float, bool, type(None)))}
        atomic_write_json(meta_path, {"geometry": vol.geometry.to_dict(), "meta": meta})
        return Volume(np.load(arr_path, mmap_mode="r"), vol.geometry, path=str(path), meta=meta)
