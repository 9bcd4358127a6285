"""Synthetic dermoscopy photos (nevus vs melanoma) in the ISIC layout.

Why: skin-lesion workflows need JPEG photos with a ``labels.csv`` like the ISIC archive,
including the artefacts that fool models in practice (hair, vignetting, ruler marks, gel
bubbles). Lesions follow the ABCD rule: benign ones are symmetric with a regular border
and one or two browns; malignant ones are asymmetric with an irregular border and several
colours (dark brown/black, blue-grey, red, white). A latent malignancy score, whose class
distributions overlap more as ``difficulty`` rises, drives every one of these features.
Image size varies per image independently of the label.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from medlens.data.synthetic import drawing as d
from medlens.io.atomic import atomic_write_text

_LIGHT_BROWN = np.array([175, 120, 85], np.float32)
_DARK_BROWN = np.array([105, 62, 42], np.float32)
_MALIGNANT_COLOURS = np.array(
    [[50, 32, 30], [105, 115, 140], [185, 85, 90], [230, 220, 215], [90, 50, 40]], np.float32
)


def _radial_polygon(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    radius: float,
    asym: float,
    border: float,
    n: int = 180,
) -> np.ndarray:
    """Lesion outline: low harmonics make it asymmetric, high ones make the border ragged."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n) + 0.12 * rng.normal() * np.cos(2 * t + rng.uniform(0, 6.3))  # ellipticity
    for k in (1, 2, 3):
        r += asym * rng.normal(0, 1) / k * np.cos(k * t + rng.uniform(0, 6.3))
    for k in range(5, 16):
        r += border * rng.normal(0, 1) / math.sqrt(k) * np.cos(k * t + rng.uniform(0, 6.3))
    r = np.clip(r, 0.45, 1.8) * radius
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _soft_mask(shape: tuple[int, int], poly: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    m = np.zeros(shape, np.float32)
    d.fill(m, poly, 1.0)
    return cv2.GaussianBlur(m, (0, 0), max(0.5, sigma)) if sigma > 0 else m


def render_dermoscopy(
    rng: np.random.Generator,
    m: float,
    skin: np.ndarray,
    hw: tuple[int, int],
    difficulty: float = 0.5,
) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 dermoscopy-like photo for malignancy score ``m``."""
    import cv2

    h, w = hw
    side = min(h, w)
    jit = 0.04 + 0.15 * difficulty
    m_asym, m_border, m_col, m_size = (d.jitter01(rng, m, jit) for _ in range(4))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    img = skin[None, None] * (1 + 0.05 * d.smooth_noise(rng, (h, w), 5)[..., None])
    img *= (1 + 0.015 * d.fine_noise(rng, (h, w), 1.0))[..., None]

    cx, cy = w / 2 + rng.normal(0, 0.06 * side), h / 2 + rng.normal(0, 0.06 * side)
    radius = side * (rng.uniform(0.17, 0.27) + 0.06 * m_size)
    poly = _radial_polygon(rng, cx, cy, radius, 0.02 + 0.3 * m_asym**2, 0.01 + 0.16 * m_border**2)
    alpha = _soft_mask((h, w), poly, radius * (0.12 - 0.08 * m_border) * rng.uniform(0.6, 1.2))

    # Benign base: concentric browns, darker centre (symmetric).
    rr = np.hypot(xx - cx, yy - cy) / radius
    centre_dark = np.clip(1 - rr, 0, 1)[..., None] * rng.uniform(0.2, 0.9)
    lesion = _LIGHT_BROWN * rng.uniform(0.85, 1.1) * (1 - centre_dark) + _DARK_BROWN * centre_dark
    # Pigment network: regular for nevi, distorted and patchy for melanoma.
    period = side * rng.uniform(0.025, 0.04)
    warp = m_border * 3.0 * d.smooth_noise(rng, (h, w), 8)
    net = (np.sin(xx / period * 2 + warp) * np.sin(yy / period * 2 - warp)) ** 2
    lesion *= (
        1 - rng.uniform(0.05, 0.18) * net * (0.5 + 0.5 * d.smooth_noise(rng, (h, w), 4) * m_col)
    )[..., None]

    # Malignant colours: irregular off-centre blotches (black, blue-grey, red, white regression).
    n_blot = rng.poisson(6 * m_col**2)
    for _ in range(n_blot):
        col = _MALIGNANT_COLOURS[rng.integers(0, len(_MALIGNANT_COLOURS))]
        a = rng.uniform(0, 2 * math.pi)
        bx, by = (
            cx + rng.uniform(0.1, 0.7) * radius * math.cos(a),
            cy + rng.uniform(0.1, 0.7) * radius * math.sin(a),
        )
        bp = _radial_polygon(rng, bx, by, radius * rng.uniform(0.15, 0.4), 0.2, 0.1, 48)
        wgt = (
            _soft_mask((h, w), bp, radius * 0.08)[..., None]
            * rng.uniform(0.6, 0.95)
            * min(1.0, 0.3 + m_col)
        )
        lesion = lesion * (1 - wgt) + col * wgt
    # Dots/globules at the periphery, more and more irregular with m.
    k = rng.poisson(2 + 25 * m_border)
    a = rng.uniform(0, 2 * math.pi, k)
    rad = radius * rng.uniform(0.3, 0.95, k) ** (1 - 0.7 * m_border)
    gp = np.stack([cx + rad * np.cos(a), cy + rad * np.sin(a)], 1)
    dots = np.zeros((h, w), np.float32)
    d.fill_many(
        dots,
        d.blobs(rng, gp, side * 0.008 * rng.uniform(0.7, 1.5, k), side * 0.007, 0.0, 0.2, 8),
        1.0,
    )
    dots = cv2.GaussianBlur(dots, (0, 0), 0.8)[..., None]
    lesion = lesion * (1 - 0.7 * dots) + _DARK_BROWN * 0.5 * 0.7 * dots

    opacity = rng.uniform(0.75, 0.95)
    img = img * (1 - opacity * alpha[..., None]) + lesion * opacity * alpha[..., None]
    _artefacts(rng, img, side, xx, yy)
    img = d.finish(img, rng, (h, w), rng.uniform(0.0, 0.8), 1.5)
    return img


def _artefacts(
    rng: np.random.Generator, img: np.ndarray, side: int, xx: np.ndarray, yy: np.ndarray
) -> None:
    """Hair, gel bubbles, ruler marks and dermatoscope vignetting (all label-free)."""
    import cv2

    h, w = img.shape[:2]
    if rng.random() < 0.45:  # hair
        hair = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(2, 22))):
            p0 = rng.uniform(-0.2, 1.2, 2) * (w, h)
            ang = rng.uniform(0, 2 * math.pi)
            curl = rng.normal(0, 0.01)
            steps = int(rng.integers(10, 30))
            angs = ang + curl * np.arange(steps) * 3
            seg = side * 0.03
            pts = p0 + np.cumsum(np.stack([np.cos(angs), np.sin(angs)], 1) * seg, 0)
            d.polyline(hair, pts, float(rng.uniform(0.6, 1.0)), rng.uniform(1, 2.5))
        hair = cv2.GaussianBlur(hair, (0, 0), 0.6)[..., None]
        img *= 1 - 0.8 * hair
        img += np.array([40, 28, 22], np.float32) * 0.8 * hair
    if rng.random() < 0.15:  # gel bubbles
        for _ in range(int(rng.integers(1, 6))):
            bx, by = rng.uniform(0, w), rng.uniform(0, h)
            r = side * rng.uniform(0.02, 0.07)
            ring = np.zeros((h, w), np.float32)
            d.disc(ring, bx, by, r, 1.0, max(1, round(r * 0.15)))
            img += 60 * cv2.GaussianBlur(ring, (0, 0), 1.0)[..., None]
    if rng.random() < 0.2:  # ruler marks along one edge
        ruler = np.zeros((h, w), np.float32)
        y0 = rng.uniform(0.85, 0.95) * h
        step = side * rng.uniform(0.03, 0.05)
        for i, x in enumerate(np.arange(rng.uniform(0, step), w, step)):
            ln = side * (0.06 if i % 5 == 0 else 0.03)
            d.polyline(ruler, np.array([[x, y0], [x, y0 - ln]]), 1.0, 1.5)
        d.polyline(ruler, np.array([[0, y0], [w, y0]]), 1.0, 1.5)
        if rng.random() < 0.5:
            ruler = ruler[::-1].copy()
        img *= (1 - 0.75 * ruler)[..., None]
    if rng.random() < 0.5:  # circular dermatoscope field
        rr = np.hypot(xx - w / 2, yy - h / 2) / (0.5 * math.hypot(w, h) * rng.uniform(0.8, 1.05))
        img *= np.clip(1.25 - rr**4 * 1.2, 0.05, 1.0)[..., None]


def make_dermoscopy_like(
    root: str | os.PathLike[str],
    *,
    n: int = 120,
    size: int = 224,
    difficulty: float = 0.5,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``<root>/images/ISIC_<7 digits>.jpg`` and ``<root>/labels.csv``.

    ``labels.csv`` has columns ``image,benign_malignant,diagnosis,patient_id`` like the
    ISIC metadata (``image`` without extension; benign → nevus, malignant → melanoma);
    some patients have several lesions, which share a skin tone. Half the images are
    malignant. Each side is drawn from about ``[0.9, 1.16] × size`` independently of
    the label.

    Args:
        root: empty or new folder to write into.
        n: number of images.
        size: nominal image side in pixels.
        difficulty: 0 = textbook ABCD contrast, 1 = classes look alike.
        seed: the same seed writes byte-identical files.
        overwrite: allow a non-empty ``root``.
    """
    n = d.check_count("n", n, 2)
    size = d.check_count("size", size, 32)
    difficulty = d.check_fraction("difficulty", difficulty)
    out = d.prepare_root(root, overwrite)

    top = d.rng_for(seed, d.TAG_DERM)
    labels = top.permutation(np.arange(n) % 2)
    image_ids = top.choice(10_000_000, size=n, replace=False)
    n_pat = max(1, round(0.7 * n))
    pat_ids = top.choice(10_000_000, size=n_pat, replace=False)
    owner = np.concatenate([np.arange(n_pat), top.integers(0, n_pat, n - n_pat)])
    owner = top.permutation(owner)
    tone = np.array([228, 178, 158]) * top.uniform(0.75, 1.05, (n_pat, 1)) + top.normal(
        0, 6, (n_pat, 3)
    )
    tones = np.clip(tone, 60, 250).astype(np.float32)
    scores = d.latent_scores(top, labels, difficulty)
    lo, hi = round(0.9 * size), round(1.16 * size)
    rows = []
    for i in range(n):
        rng = d.rng_for(seed, d.TAG_DERM, i + 1)
        hw = (int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
        img = render_dermoscopy(rng, float(scores[i]), tones[owner[i]], hw, difficulty)
        name = f"ISIC_{image_ids[i]:07d}"
        d.write_bytes(out / "images" / f"{name}.jpg", d.encode_jpeg(img))
        bm = "malignant" if labels[i] else "benign"
        rows.append((name, bm, "melanoma" if labels[i] else "nevus", f"IP_{pat_ids[owner[i]]:07d}"))
    rows.sort()
    text = "image,benign_malignant,diagnosis,patient_id\n" + "".join(
        ",".join(r) + "\n" for r in rows
    )
    atomic_write_text(out / "labels.csv", text)
    return out
