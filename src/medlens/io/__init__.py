"""Reading and writing images and volumes.

Data contract (stated once, used everywhere):

* 2D images are returned by :func:`read_image` as ``numpy`` arrays ``(H, W, C)`` with
  ``C`` in {1, 3}, dtype ``uint8`` (16-bit inputs are rescaled to 8 bits by their own
  range unless ``keep_depth=True``). Models and caches use channel-first ``(C, H, W)``.
* Volumes travel with their geometry: spacing, origin and direction in mm, patient
  (LPS) coordinates, as returned by SimpleITK, held in one
  :class:`medlens.io.geometry.Geometry`. One axis convention everywhere: arrays are
  ``(..., D, H, W)`` = (slice, row, column); world points are LPS ``(x, y, z)`` mm;
  :mod:`medlens.io.geometry` converts between them.
* Label masks are a different kind of array: resampled nearest-neighbour, never
  intensity-normalised.
* No reader ever writes to, moves or deletes an input file.
"""

from __future__ import annotations

from medlens.io.images import IMAGE_EXTENSIONS, ImageReadError, read_image

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "read_image"]
