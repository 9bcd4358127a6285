"""Exact and near-duplicate detection.

Exact duplicates: a hash of the decoded pixels (same picture, whatever the encoding) and
of the file bytes. Near duplicates: a 64-bit perceptual hash (the DCT hash of
``imagehash.phash``, computed with OpenCV for speed) and Hamming distance ≤ threshold.
Pairs are found with a multi-index ("band") search: split the 64 bits into
``threshold + 1`` bands; by the pigeonhole principle two hashes within the threshold
agree exactly on at least one band, so only items sharing a band value are compared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from itertools import pairwise

import numpy as np

#: Images whose grey standard deviation is below this carry too little structure for a
#: perceptual hash (blank background tiles would all "match"); they get no phash.
BLANK_STD = 2.0


def pixel_hash(arr: np.ndarray) -> str:
    """Hash of the decoded pixel array, including its shape and dtype."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.shape}{arr.dtype.str}".encode())
    h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def phash64(grey: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a 2D uint8 grey image (as ``imagehash.phash``)."""
    import cv2

    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def thumb8(grey: np.ndarray) -> np.ndarray:
    """8×8 area-averaged grey thumbnail, flattened to 64 uint8 (for verifying hash matches)."""
    import cv2

    return cv2.resize(grey, (8, 8), interpolation=cv2.INTER_AREA).ravel()


def hamming(a: int, b: int) -> int:
    return int(a ^ b).bit_count()


def near_pairs(hashes: np.ndarray, threshold: int, *, chunk: int = 1024) -> list[tuple[int, int, int]]:
    """All pairs ``(i, j, distance)`` with ``i < j`` and Hamming distance ≤ ``threshold``.

    Args:
        hashes: ``(N,)`` uint64 perceptual hashes.
        threshold: largest Hamming distance counted as a near duplicate (0–63).
    """
    if not 0 <= threshold < 64:
        raise ValueError(f"near-duplicate threshold must be in 0..63, got {threshold}")
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    if n < 2:
        return []
    bands = threshold + 1
    edges = np.linspace(0, 64, bands + 1).round().astype(int)
    found: set[tuple[int, int]] = set()
    out: list[tuple[int, int, int]] = []
    for lo, hi in pairwise(edges):
        width = int(hi - lo)
        if width == 0:
            continue
        mask = np.uint64((1 << width) - 1)
        keys = (h >> np.uint64(lo)) & mask
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        ends = np.r_[starts[1:], n]
        for s, e in zip(starts, ends, strict=True):
            if e - s < 2:
                continue
            idx = np.sort(order[s:e])
            for a, b, d in _pairs_within(h, idx, threshold, chunk):
                if (a, b) not in found:
                    found.add((a, b))
                    out.append((a, b, d))
    out.sort()
    return out


def _pairs_within(
    h: np.ndarray, idx: np.ndarray, threshold: int, chunk: int
) -> Iterable[tuple[int, int, int]]:
    sub = h[idx]
    m = len(idx)
    for r0 in range(0, m, chunk):
        rows = sub[r0 : r0 + chunk]
        dist = np.bitwise_count(rows[:, None] ^ sub[None, :])
        ii, jj = np.nonzero(dist <= threshold)
        ii = ii + r0
        keep = ii < jj
        for a, b in zip(ii[keep], jj[keep], strict=True):
            yield int(idx[a]), int(idx[b]), int(dist[a - r0, b])


class UnionFind:
    """Groups items linked by pairs (duplicate clusters)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for x in self.parent:
            out.setdefault(self.find(x), []).append(x)
        return sorted((sorted(g) for g in out.values() if len(g) > 1), key=lambda g: g[0])
