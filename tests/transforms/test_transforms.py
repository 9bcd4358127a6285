"""Preprocessing and augmentation: shapes, determinism, equalisation effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlens.transforms import AugmentConfig, PreprocessConfig, augment_batch, preprocess_image


def _img(h=40, w=60, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, c)) * 80 + 40).astype(np.uint8)


@pytest.mark.parametrize("mode", ["stretch", "pad", "crop"])
def test_resize_modes_give_square_channel_first(mode):
    out = preprocess_image(_img(), PreprocessConfig(size=32, resize=mode))
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8


def test_grey_to_rgb_and_back():
    g = _img(c=1)
    assert preprocess_image(g, PreprocessConfig(size=16, channels=3)).shape == (3, 16, 16)
    assert preprocess_image(_img(), PreprocessConfig(size=16, channels=1)).shape == (1, 16, 16)


@pytest.mark.parametrize("eq", ["hist", "clahe"])
def test_equalisation_spreads_a_low_contrast_histogram(eq):
    img = _img(c=1)  # values in [40, 120)
    out = preprocess_image(img, PreprocessConfig(size=40, resize="stretch", equalize=eq))
    assert out.std() > img.std() * 1.3


def test_equalize_on_luminance_keeps_hue_roughly():
    img = _img()
    img[..., 0] = 200  # reddish
    out = preprocess_image(img, PreprocessConfig(size=40, resize="stretch", equalize="hist"))
    assert out[0].mean() > out[2].mean()


def test_augment_deterministic_given_seed_and_in_range():
    x = torch.rand(8, 3, 16, 16)
    torch.manual_seed(1)
    a = augment_batch(x.clone(), AugmentConfig())
    torch.manual_seed(1)
    b = augment_batch(x.clone(), AugmentConfig())
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and a.shape == x.shape
    assert not torch.equal(a, x)


def test_augment_disabled_is_identity():
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(augment_batch(x, AugmentConfig(enabled=False)), x)


def test_preprocess_rejects_non_uint8():
    with pytest.raises(TypeError):
        preprocess_image(np.zeros((4, 4, 1), np.float32), PreprocessConfig(size=8))
