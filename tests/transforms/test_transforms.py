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


def test_shades_of_gray_makes_one_scene_under_two_lights_look_alike():
    from medlens.transforms.preprocess import PreprocessConfig, preprocess_image, shades_of_gray

    rng = np.random.default_rng(0)
    scene = rng.uniform(40, 200, (32, 32, 1)) * np.array([1.0, 0.8, 0.7])  # a skin-like reflectance
    warm = np.clip(scene * np.array([1.25, 1.0, 0.75]), 0, 255).astype(np.uint8)
    cold = np.clip(scene * np.array([0.8, 1.0, 1.2]), 0, 255).astype(np.uint8)
    def chroma(x: np.ndarray) -> np.ndarray:  # colour without brightness
        x = x.astype(float)
        return x / np.maximum(x.sum(axis=2, keepdims=True), 1)

    before = np.abs(chroma(warm) - chroma(cold)).mean()
    after = np.abs(chroma(shades_of_gray(warm)) - chroma(shades_of_gray(cold))).mean()
    assert after < 0.05 * before  # the light's colour is gone (up to rounding)
    grey = rng.integers(0, 255, (16, 16, 1), dtype=np.uint8).repeat(3, axis=2)
    assert np.abs(shades_of_gray(grey).astype(int) - grey).max() <= 1  # a grey image stays as it is
    on = PreprocessConfig(size=32, colour_constancy="shades_of_gray")
    assert np.array_equal(preprocess_image(warm, on), shades_of_gray(warm).transpose(2, 0, 1))
    assert np.array_equal(preprocess_image(warm, PreprocessConfig(size=32)), warm.transpose(2, 0, 1))
