"""Perceptual hash and the band search for near-duplicate pairs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medlens.audit.hashing import UnionFind, near_pairs, phash64, pixel_hash
from tests.audit.conftest import patch


def _brute(h: np.ndarray, t: int) -> list[tuple[int, int, int]]:
    out = []
    for i in range(len(h)):
        for j in range(i + 1, len(h)):
            d = int(h[i] ^ h[j]).bit_count()
            if d <= t:
                out.append((i, j, d))
    return out


@pytest.mark.parametrize("threshold", [0, 3, 10])
def test_band_search_equals_brute_force(threshold: int) -> None:
    rng = np.random.default_rng(threshold)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64)
    # plant near copies with 0..threshold+2 flipped bits
    extra = []
    for k in range(40):
        flips = rng.choice(64, size=k % (threshold + 3), replace=False)
        v = int(base[k])
        for b in flips:
            v ^= 1 << int(b)
        extra.append(v)
    h = np.concatenate([base, np.array(extra, dtype=np.uint64)])
    assert near_pairs(h, threshold) == _brute(h, threshold)


def test_band_search_rejects_bad_threshold() -> None:
    with pytest.raises(ValueError, match="0..63"):
        near_pairs(np.zeros(3, np.uint64), 64)


def test_phash_matches_imagehash() -> None:
    import imagehash

    rng = np.random.default_rng(1)
    for _ in range(10):
        grey = np.asarray(Image.fromarray(patch(rng, 64)).convert("L"))
        ours = phash64(grey)
        ref = int(str(imagehash.phash(Image.fromarray(grey))), 16)
        assert (ours ^ ref).bit_count() <= 6  # same algorithm, different resize/DCT code


def test_pixel_hash_sees_shape_and_content() -> None:
    a = np.zeros((4, 6, 1), np.uint8)
    assert pixel_hash(a) == pixel_hash(a.copy())
    assert pixel_hash(a) != pixel_hash(a.reshape(6, 4, 1))
    b = a.copy()
    b[0, 0, 0] = 1
    assert pixel_hash(a) != pixel_hash(b)


def test_union_find_groups() -> None:
    uf = UnionFind()
    for a, b in [(5, 1), (1, 3), (7, 8)]:
        uf.union(a, b)
    uf.find(9)
    assert uf.groups() == [[1, 3, 5], [7, 8]]
