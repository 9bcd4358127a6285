"""One axis convention for the whole of medlens: voxel index ↔ patient millimetres.

Convention (used by every reader, data set, metric and predictor):

* **Arrays** are indexed ``(..., D, H, W)`` = ``(I, R, C)``: slice, row, column (channel
  axes, if any, come first). This is numpy's order for a SimpleITK array
  (``sitk.GetArrayFromImage``); nibabel's ``get_fdata()`` is the transpose of it.
* **World coordinates** are patient millimetres ``(x, y, z)`` in the DICOM/ITK **LPS**
  frame: +x towards the patient's left, +y posterior, +z superior. nibabel and NIfTI
  affines use RAS (+x right, +y anterior): the same point has ``x`` and ``y`` negated.
* A :class:`Geometry` stores ``spacing``, ``origin`` and ``direction`` in **ITK order**,
  exactly as SimpleITK reports them and as the files hold them: ``spacing[0]`` is the step
  along the column axis C (the last array axis), ``origin`` is the LPS position of the
  centre of voxel ``(0, 0, 0)``, ``direction`` is the ``ndim × ndim`` cosine matrix
  flattened row-major whose *columns* are the world directions of the C, R, I axes.
  :attr:`Geometry.array_spacing` is the spacing in array order ``(I, R, C)``, which is what
  metrics on arrays (HD95, volumes) need.
* The mapping is ITK's: ``xyz = origin + direction @ (spacing * (c, r, i))``.
  :meth:`Geometry.index_to_world` takes ``(i, r, c)`` (array order) and
  :meth:`Geometry.world_to_index` returns it, as floats (voxel centres are integers).
* 2D images are the same with one axis fewer: ``ndim == 2``, arrays ``(..., H, W)``,
  index ``(r, c)``, world ``(x, y)``. :meth:`Geometry.as_3d` makes one slice of it.

A :class:`Geometry` is frozen and JSON-serialisable (:meth:`Geometry.to_dict` gives the
``{"spacing", "origin", "direction"}`` dict that :func:`medlens.io.volumes.write_volume`
accepts as ``like``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: World frame of :class:`Geometry` coordinates.
FRAME = "LPS"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _floats(values: Any, name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in np.asarray(values, dtype=np.float64).ravel())
    except (TypeError, ValueError):
        raise ValueError(f"Geometry: {name} must be numbers, got {values!r}") from None
    if not all(np.isfinite(out)):
        raise ValueError(f"Geometry: {name} must be finite, got {list(out)}")
    return out


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a 2D image or 3D volume in patient space (see the module docstring).

    Attributes:
        spacing: voxel size in mm, ITK order ``(x, y[, z])`` = along ``(C, R[, I])``.
        origin: LPS mm position of the centre of the first voxel, ``(x, y[, z])``.
        direction: ``ndim × ndim`` direction cosines, row-major; column ``k`` is the world
            direction of ITK axis ``k`` (``C``, ``R``, ``I``).
    """

    spacing: tuple[float, ...] = (1.0, 1.0, 1.0)
    origin: tuple[float, ...] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        sp, org, d = (_floats(self.spacing, "spacing"), _floats(self.origin, "origin"),
                      _floats(self.direction, "direction"))
        n = len(sp)
        if n not in (2, 3):
            raise ValueError(f"Geometry: spacing must have 2 or 3 values (2D or 3D), got {list(sp)}")
        if len(org) != n or len(d) != n * n:
            raise ValueError(f"Geometry: a {n}D grid needs {n} origin values and {n * n} direction "
                             f"values, got {len(org)} and {len(d)}")
        if min(sp) <= 0:
            raise ValueError(f"Geometry: spacing must be positive (mm), got {list(sp)}")
        if abs(np.linalg.det(np.asarray(d).reshape(n, n))) < 1e-6:
            raise ValueError(f"Geometry: direction matrix is singular: {list(d)}")
        object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "origin", org)
        object.__setattr__(self, "direction", d)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def identity(cls, ndim: int = 3) -> Geometry:
        """Spacing 1 mm, origin 0, identity direction (what an image without geometry gets)."""
        if ndim not in (2, 3):
            raise ValueError(f"Geometry.identity: ndim must be 2 or 3, got {ndim}")
        return cls((1.0,) * ndim, (0.0,) * ndim, tuple(np.eye(ndim).ravel()))

    @classmethod
    def from_sitk(cls, image: Any) -> Geometry:
        """Geometry of a SimpleITK image (2D, 3D; of a 4D image, its first three axes)."""
        dim = image.GetDimension()
        sp, org = list(image.GetSpacing()), list(image.GetOrigin())
        d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
        n = min(dim, 3)
        return cls(tuple(sp[:n]), tuple(org[:n]), tuple(d[:n, :n].ravel()))

    @classmethod
    def from_nibabel(cls, img: Any) -> Geometry:
        """Geometry of a nibabel image (``img.affine``: RAS, nibabel voxel order ``(c, r, i)``)."""
        return cls.from_ras_affine(np.asarray(img.affine, dtype=np.float64))

    @classmethod
    def from_ras_affine(cls, affine: np.ndarray) -> Geometry:
        """From a 4×4 NIfTI/nibabel affine (RAS mm from voxel ``(c, r, i)``)."""
        a = np.asarray(affine, dtype=np.float64)
        if a.shape != (4, 4):
            raise ValueError(f"Geometry.from_ras_affine: expected a 4×4 affine, got shape {a.shape}")
        lps = _LPS_TO_RAS @ a  # the flip is its own inverse
        m = lps[:3, :3]
        spacing = np.linalg.norm(m, axis=0)
        return cls(tuple(spacing), tuple(lps[:3, 3]), tuple((m / spacing).ravel()))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict` (also accepts :meth:`medlens.io.volumes.Volume` dicts)."""
        try:
            return cls(tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]))
        except (KeyError, TypeError):
            raise ValueError(f"Geometry.from_dict: need spacing, origin and direction, got {d!r}") from None

    def to_dict(self) -> dict[str, list[float]]:
        """``{"spacing", "origin", "direction"}`` as JSON lists (ITK order, LPS mm)."""
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    # -- properties ---------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Spatial dimensions: 2 or 3."""
        return len(self.spacing)

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing in array order ``(I, R, C)`` (``(R, C)`` in 2D), mm: for metrics on arrays."""
        return tuple(reversed(self.spacing))

    @property
    def direction_matrix(self) -> np.ndarray:
        """``(ndim, ndim)`` direction cosines; column ``k`` is ITK axis ``k`` (C, R, I)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(self.ndim, self.ndim)

    @property
    def voxel_volume(self) -> float:
        """mm³ (mm² in 2D) of one voxel."""
        return float(np.prod(self.spacing))

    @property
    def affine(self) -> np.ndarray:
        """``(ndim+1, ndim+1)`` homogeneous matrix: array index ``(i, r, c, 1)`` → LPS
        ``(x, y, z, 1)`` mm. Its columns are in medlens' array order (I, R, C), i.e. the ITK
        matrix ``direction @ diag(spacing)`` with the index columns reversed."""
        n = self.ndim
        a = np.eye(n + 1)
        a[:n, :n] = (self.direction_matrix * np.asarray(self.spacing))[:, ::-1]
        a[:n, n] = self.origin
        return a

    @property
    def ras_affine(self) -> np.ndarray:
        """4×4 NIfTI/nibabel affine: voxel ``(c, r, i, 1)`` (nibabel's array order) → RAS mm.

        Use it with ``nibabel.Nifti1Image(array.T, geometry.ras_affine)`` for a medlens
        array ``(I, R, C)``. A 2D geometry is taken as one slice (:meth:`as_3d`).
        """
        g = self if self.ndim == 3 else self.as_3d()
        a = np.eye(4)
        a[:3, :3] = g.direction_matrix * np.asarray(g.spacing)
        a[:3, 3] = g.origin
        return _LPS_TO_RAS @ a

    # -- mapping ------------------------------------------------------------------------
    def index_to_world(self, irc: Any) -> np.ndarray:
        """Array indices ``(..., ndim)`` in order ``(i, r, c)`` → LPS mm ``(..., ndim)`` ``(x, y, z)``."""
        p = self._points(irc, "index_to_world")
        return p @ self.affine[: self.ndim, : self.ndim].T + np.asarray(self.origin)

    def world_to_index(self, points_xyz: Any) -> np.ndarray:
        """LPS mm ``(..., ndim)`` ``(x, y, z)`` → continuous array indices ``(i, r, c)`` (floats;
        round them for the nearest voxel)."""
        p = self._points(points_xyz, "world_to_index")
        inv = np.linalg.inv(self.affine[: self.ndim, : self.ndim])
        return (p - np.asarray(self.origin)) @ inv.T

    def _points(self, values: Any, where: str) -> np.ndarray:
        p = np.asarray(values, dtype=np.float64)
        if p.shape[-1:] != (self.ndim,):
            raise ValueError(f"Geometry.{where}: points must have shape (..., {self.ndim}), got {p.shape}")
        return p

    # -- derived grids ------------------------------------------------------------------
    def as_3d(self, slice_spacing: float = 1.0) -> Geometry:
        """A 2D geometry as one slice of a 3D one (z spacing ``slice_spacing``, z origin 0)."""
        if self.ndim == 3:
            return self
        d = np.eye(3)
        d[:2, :2] = self.direction_matrix
        return Geometry((*self.spacing, float(slice_spacing)), (*self.origin, 0.0), tuple(d.ravel()))

    def resampled(self, old_shape: Any, new_shape: Any) -> Geometry:
        """The grid after resizing an array from ``old_shape`` to ``new_shape`` (array order,
        the trailing ``ndim`` axes; edges kept, as area/bilinear resizing does): spacing
        scales by ``old / new`` per axis and the first voxel centre moves by half the change."""
        old = np.asarray(old_shape, dtype=np.float64)[-self.ndim:][::-1]  # ITK order
        new = np.asarray(new_shape, dtype=np.float64)[-self.ndim:][::-1]
        if old.shape != (self.ndim,) or new.shape != (self.ndim,) or (new <= 0).any():
            raise ValueError(f"Geometry.resampled: shapes {old_shape} → {new_shape} do not fit a "
                             f"{self.ndim}D grid")
        spacing = np.asarray(self.spacing) * old / new
        origin = np.asarray(self.origin) + self.direction_matrix @ ((spacing - np.asarray(self.spacing)) / 2)
        return Geometry(tuple(spacing), tuple(origin), self.direction)
