"""Small learnable image sets shared by the training tests."""

from __future__ import annotations

import numpy as np


def bright_centre(n: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 1, 12, 12)`` uint8 images and labels; class 1 is brighter in the centre, so a
    tiny network learns it in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 120, (n, 1, 12, 12)).astype(np.uint8)
    x[y == 1, :, 4:8, 4:8] += 100
    return x, y
