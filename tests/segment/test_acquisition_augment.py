"""Acquisition augmentation for new scanners and sites (gamma, bias field, blur, noise):
images only, masks untouched, off by default (no extra random numbers drawn), configurable."""

from __future__ import annotations

import pytest
import torch

from medlens.errors import ConfigError
from medlens.segment.config import make_config
from medlens.segment.task import SegmentAugment

GEOMETRY_OFF = {"flip": False, "rotate_deg": 0.0, "scale": 0.0, "shift": 0.0, "intensity": 0.0}


def _batch(spatial: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shape = (4, 1) + ((4,) if spatial == 3 else ()) + (24, 24)
    x = torch.rand(shape, generator=g) * 0.8 + 0.1
    y = (torch.rand(shape, generator=g) > 0.7).float()
    return x, y


@pytest.mark.parametrize("spatial", [2, 3])
@pytest.mark.parametrize("kind", ["gamma", "bias_field", "noise", "blur"])
def test_each_changes_images_not_masks(kind, spatial):
    x, y = _batch(spatial)
    aug = SegmentAugment(**GEOMETRY_OFF, **{kind: {"gamma": 0.5, "bias_field": 0.5, "noise": 0.1, "blur": 2.0}[kind]})
    xa, ya = aug(x.clone(), y.clone(), torch.Generator().manual_seed(1))
    assert torch.equal(ya, y) and xa.shape == x.shape
    assert float((xa - x).abs().mean()) > 1e-3
    if kind == "blur":  # smoother: less pixel-to-pixel variation (items drawn below 0.3 px are kept)
        assert float(xa.diff(dim=-1).abs().mean()) < float(x.diff(dim=-1).abs().mean())


def test_off_by_default_draws_nothing_more():
    x, y = _batch()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, _ = SegmentAugment()(x.clone(), y.clone(), g1)
    b, _ = SegmentAugment(gamma=0.0, noise=0.0)(x.clone(), y.clone(), g2)
    assert torch.equal(a, b) and torch.equal(g1.get_state(), g2.get_state())


def test_config_takes_known_settings_only():
    cfg = make_config(data="x", augment_acquisition={"gamma": 0.3, "blur": 1})
    assert cfg.augment_acquisition == {"gamma": 0.3, "blur": 1.0}
    with pytest.raises(ConfigError, match="unknown acquisition augmentation 'contrast'"):
        make_config(data="x", augment_acquisition={"contrast": 0.2})
    with pytest.raises(ConfigError, match="noise must be between 0 and 0.5"):
        make_config(data="x", augment_acquisition={"noise": 2})
