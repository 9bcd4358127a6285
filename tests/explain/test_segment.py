"""Segmenters: the target is a predicted region (sum of class logits inside it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlens.errors import ConfigError
from medlens.explain import RegionTarget, explain, make_target

from .conftest import make_squares


@pytest.fixture(scope="module")
def square_segmenter():
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    x, _, boxes = make_squares(32, seed=5, channels=1)
    x = x.clone()
    mask = torch.zeros(32, 32, 32, dtype=torch.long)
    for i, b in enumerate(boxes):
        x[i, :, b[0] : b[2], b[1] : b[3]] = 1.5 + 0.1 * x[i, :, b[0] : b[2], b[1] : b[3]]
        mask[i, b[0] : b[2], b[1] : b[3]] = 1
    net = UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        channels=(4, 8),
        strides=(2,),
        num_res_units=0,
    )
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), mask).backward()
        opt.step()
    return net.eval(), x[:6], mask[:6].bool()


def test_region_target_uses_predicted_mask(square_segmenter):
    net, x, mask = square_segmenter
    with torch.no_grad():
        out = net(x)
    tgt = make_target(out)
    assert isinstance(tgt, RegionTarget)
    assert tgt.classes.tolist() == [1] * 6
    dice = 2 * (tgt.masks & mask).sum() / (tgt.masks.sum() + mask.sum())
    assert dice > 0.9
    # score = mean class-1 logit inside the region
    expected = (out[0, 1] * tgt.masks[0]).sum() / tgt.masks[0].sum()
    assert torch.allclose(tgt(out)[0], expected)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "occlusion", "integrated-gradients"])
def test_maps_concentrate_on_region(square_segmenter, method):
    net, x, mask = square_segmenter
    maps = explain(net, x, method=method)
    assert maps.shape == (6, 32, 32)
    inside = [maps[i][mask[i].numpy()].mean() > maps[i][~mask[i].numpy()].mean() for i in range(6)]
    assert np.mean(inside) >= 0.8


def test_segmenter_target_out_of_range(square_segmenter):
    net, x, _ = square_segmenter
    with pytest.raises(ConfigError, match="out of range"):
        explain(net, x[:1], method="gradcam", target=2)


def test_a_mirrored_segmenter_is_explained_through_one_pass_of_its_network():
    """Test-time mirroring runs the network twice (the image, then its mirror): a CAM that read
    the layer's last pass would show the mirror image's heat map. It must be the network's own."""
    from medlens.models import create_model
    from medlens.models.ensemble import with_mirror

    torch.manual_seed(0)
    net = create_model("test_unet", num_classes=1, in_channels=3).eval()
    x = torch.zeros(1, 3, 32, 32)
    x[..., 4:12, 2:10] = 3.0  # an off-centre blob: its mirror image lies elsewhere
    target = RegionTarget(torch.zeros(1, dtype=torch.long), torch.ones(1, 32, 32, dtype=torch.bool))
    plain = explain(net, x, method="gradcam", target=target)
    mirrored = explain(with_mirror(net).eval(), x, method="gradcam", target=target)
    assert np.allclose(plain, mirrored, atol=1e-5)
    again = explain(with_mirror(net).eval(), x, method="gradcam", target=target, layer="inner." + net.cam_layer)
    assert np.allclose(plain, again, atol=1e-5)
