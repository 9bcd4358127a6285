"""H&E stain jitter: the deconvolution is scikit-image's, sigma 0 changes nothing, and the
jitter moves stain amounts (not geometry) within the promised bounds."""

from __future__ import annotations

import numpy as np
import torch
from skimage import color, data

from medlens.transforms.augment import AugmentConfig, augment_batch, hed_jitter


def _ihc() -> torch.Tensor:
    img = data.immunohistochemistry()[:48, :48] / 255.0
    return torch.tensor(np.moveaxis(img, -1, 0)[None], dtype=torch.float32)


def test_sigma_zero_is_the_identity_and_the_matrix_is_skimages():
    x = _ihc()
    torch.testing.assert_close(hed_jitter(x, 0.0), x, atol=1e-5, rtol=0)
    from medlens.transforms import augment

    np.testing.assert_allclose(augment._RGB_FROM_HED.numpy(), color.rgb_from_hed)


def test_jitter_changes_stain_amounts_within_bounds():
    torch.manual_seed(0)
    x = _ihc().repeat(8, 1, 1, 1)
    y = hed_jitter(x, 0.05)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert len({round(float((y[i] - x[i]).abs().mean()), 4) for i in range(8)}) == 8  # per image
    # in stain space each image is an affine map of the original: s' = s·α + β per stain
    def stains(t: torch.Tensor) -> np.ndarray:  # rgb2hed without its clamp at 0
        rgb = np.moveaxis(t.numpy().astype(np.float64), 0, -1).reshape(-1, 3).clip(1e-6, 1)
        return (np.log(rgb) / np.log(1e-6)) @ color.hed_from_rgb

    keep = ((y[0] > 1e-3) & (y[0] < 1 - 1e-3)).all(0).numpy().ravel()  # pixels not clipped
    sx, sy = stains(x[0])[keep], stains(y[0])[keep]
    for k in range(3):
        a, b = np.polyfit(sx[:, k], sy[:, k], 1)
        assert 0.95 - 1e-3 <= a <= 1.05 + 1e-3 and abs(b) <= 0.05 + 1e-3, (k, a, b)


def test_off_by_default_and_grey_batches_untouched():
    assert AugmentConfig().hed == 0.0
    torch.manual_seed(1)
    grey = torch.rand(2, 1, 16, 16)
    cfg = AugmentConfig(hed=0.2, hflip=False, vflip=False, rot90=False, rotate_deg=0, scale=0, translate=0,
                        brightness=0, contrast=0, saturation=0, noise_std=0)
    torch.testing.assert_close(augment_batch(grey, cfg), grey)
