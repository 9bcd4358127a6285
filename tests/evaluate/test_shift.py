"""Dataset shift: the audit's statistics of new images beside the training fingerprint's,
a standardised difference per measurement, and plain-words flags when it is large."""

from __future__ import annotations

import numpy as np

from medlens.data.fingerprint import array_stats, compute_fingerprint
from medlens.evaluate.shift import dataset_shift, shift_section_html


def _images(seed: int, gain: float = 1.0, n: int = 30, fmt: str = "png", blur: bool = False) -> list:
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = rng.normal(150, 30, (40, 40, 3)) + rng.normal(0, 8)
        if blur:
            img = cv2.GaussianBlur(img, (0, 0), 2.0)
        out.append(array_stats(np.clip(img * gain, 0, 255).astype(np.uint8), format=fmt))
    return out


def _row(shift: dict, feature: str) -> dict:
    return next(r for r in shift["rows"] if r["feature"] == feature)


def test_same_site_is_not_flagged_and_a_darker_blurrier_jpeg_site_is():
    fp = compute_fingerprint(_images(0), source="train")
    assert {"brightness", "sharpness", "mean_r", "height"} <= fp["image_stats"].keys()
    same = dataset_shift(fp, _images(1))
    assert same["flags"] == [] and "No large difference" in same["verdict"]
    assert all(r["level"] == "small" for r in same["rows"])
    other = dataset_shift(fp, _images(2, gain=0.6, fmt="jpeg", blur=True))
    bright, sharp = _row(other, "brightness"), _row(other, "sharpness")
    assert bright["level"] == "large" and bright["std_difference"] < -0.8 and bright["new_mean"] < 100
    assert sharp["level"] == "large" and sharp["std_difference"] < 0
    assert _row(other, "width")["level"] == "small"
    text = " ".join(other["flags"])
    assert "darker" in text and "blurrier" in text and "JPEG share 100%" in text
    assert "differ strongly" in other["verdict"]
    html = shift_section_html(other, {"ece": 0.2})
    assert "darker" in html and "0.200" in html and 'class="bad"' in html


def test_older_fingerprints_fall_back_or_say_not_recorded():
    fp = compute_fingerprint(_images(0), source="train")
    old = {k: v for k, v in fp.items() if k != "image_stats"}  # a package saved before image_stats
    shift = dataset_shift(old, _images(3, gain=0.5))
    assert _row(shift, "mean_r")["training_from"].startswith("older fingerprint")
    assert _row(shift, "mean_r")["level"] == "large"
    assert _row(shift, "sharpness")["level"] == "not recorded"
    assert _row(shift, "height")["training_from"] == "range only: 40–40 px"
    none = dataset_shift(None, _images(3))
    assert all(r["training_mean"] is None for r in none["rows"]) and "not recorded" in none["verdict"]
    assert "not recorded" in shift_section_html(none)
