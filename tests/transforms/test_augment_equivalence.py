"""The fast batched augmentation equals the plain item-by-item / step-by-step definition."""

from __future__ import annotations

import itertools

import pytest
import torch

from medlens.transforms.augment import AugmentConfig, augment_batch

OFF = {"rotate_deg": 0.0, "scale": 0.0, "translate": 0.0, "noise_std": 0.0}


def _reference(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """The obvious definition, drawing random numbers in the same order (no affine/noise)."""
    b, c, h, w = x.shape
    if cfg.hflip:
        m = torch.rand(b) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    if cfg.vflip:
        m = torch.rand(b) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(2), x)
    if cfg.rot90 and h == w:
        k = torch.randint(0, 4, (b,))
        x = torch.stack([torch.rot90(xi, int(ki), dims=(1, 2)) for xi, ki in zip(x, k.tolist())])
    shape = (b, 1, 1, 1)
    if cfg.brightness:
        x = x * (1 + (torch.rand(shape) * 2 - 1) * cfg.brightness)
    if cfg.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + (torch.rand(shape) * 2 - 1) * cfg.contrast) + mean
    if cfg.saturation and c == 3:
        grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - grey) * (1 + (torch.rand(shape) * 2 - 1) * cfg.saturation) + grey
    return x.clamp(0.0, 1.0)


@pytest.mark.parametrize("shape", [(9, 3, 12, 12), (6, 1, 10, 10), (5, 3, 8, 12), (1, 3, 6, 6)])
def test_flips_rotations_identical_to_item_by_item(shape):
    for hf, vf, r in itertools.product([False, True], repeat=3):
        cfg = AugmentConfig(hflip=hf, vflip=vf, rot90=r, brightness=0.0, contrast=0.0,
                            saturation=0.0, **OFF)  # fmt: skip
        for seed in range(4):
            x = torch.rand(shape)
            before = x.clone()
            torch.manual_seed(seed)
            ref = _reference(x, cfg)
            torch.manual_seed(seed)
            got = augment_batch(x, cfg)
            assert torch.equal(got, ref), (shape, hf, vf, r, seed)
            assert torch.equal(x, before)  # the input is not modified
            if hf or vf or r:  # with every transform off the input comes back (clamped)
                assert got.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("shape", [(8, 3, 10, 10), (8, 1, 10, 10)])
@pytest.mark.parametrize(
    "colour", [(0.3, 0.0, 0.0), (0.0, 0.4, 0.0), (0.0, 0.0, 0.5), (0.2, 0.3, 0.4)]
)
def test_colour_matches_step_by_step(shape, colour):
    br, ct, sat = colour
    cfg = AugmentConfig(brightness=br, contrast=ct, saturation=sat, **OFF)
    x = torch.rand(shape) * 0.8 + 0.1
    torch.manual_seed(3)
    ref = _reference(x, cfg)
    torch.manual_seed(3)
    got = augment_batch(x, cfg)
    if shape[1] == 3 or br or ct:  # saturation alone leaves grey images as they are
        assert not torch.equal(got, x)
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=0)
