"""Pooling: attention is a distribution over a bag's cells and goes to the abnormal ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medlens.mil.model import MILNet
from medlens.models import create_model


@pytest.mark.parametrize("pooling", ["gated_attention", "attention", "mean", "topk"])
def test_attention_sums_to_one_per_bag(pooling: str) -> None:
    import medlens.mil.model  # noqa: F401

    net = create_model("mil", num_classes=2, encoder="test_cnn", embed_dim=8, pooling=pooling, top_k=3,
                       input_size=32)
    for n in (1, 5, 11):
        logits, a = net.forward_bag(torch.rand(n, 3, 32, 32))
        assert logits.shape == (2,) and a.shape == (n,)
        assert torch.all(a >= 0) and torch.isclose(a.sum(), torch.tensor(1.0))
    assert net(torch.rand(4, 3, 32, 32)).shape == (1, 2)


def _bag(n: int, n_abnormal: int, g: torch.Generator) -> torch.Tensor:
    """Grey normal cells; abnormal ones red (the fixed encoder sees the mean colour)."""
    x = 0.5 + 0.05 * torch.randn(n, 3, 4, 4, generator=g)
    x[:n_abnormal] = torch.tensor([0.9, 0.2, 0.3]).view(1, 3, 1, 1) + 0.05 * torch.randn(n_abnormal, 3, 4, 4,
                                                                                          generator=g)
    return x


def test_highest_attention_goes_to_the_abnormal_cells_with_a_fixed_encoder() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    encoder = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # fixed: the cell's mean colour
    net = MILNet(encoder, num_classes=2, embed_dim=3, attention_dim=8, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for step in range(150):
        y = step % 2
        logits, _ = net.forward_bag(_bag(20, 3 if y else 0, g))
        loss = nn.functional.cross_entropy(logits[None], torch.tensor([y]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        for _ in range(5):
            logits, a = net.forward_bag(_bag(20, 3, g))
            assert int(a.argmax()) < 3 and float(a[:3].sum()) > 0.5  # the 3 abnormal cells lead
            assert int(logits.argmax()) == 1
            assert int(net.forward_bag(_bag(20, 0, g))[0].argmax()) == 0


def test_encoder_batch_norm_uses_running_statistics_while_training() -> None:
    import medlens.mil.model  # noqa: F401

    net = create_model("mil", num_classes=2, encoder="test_cnn", embed_dim=8, input_size=32).train()
    bns = [m for m in net.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and net.classifier.training
