"""Shared fixtures: a tiny CNN trained on images whose evidence sits at a known place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

SIZE = 32
SQUARE = 6


class TinyCNN(nn.Module):
    """Conv net with a registered CAM layer, like the models of medlens.models."""

    cam_layer = "features.3"

    def __init__(self, in_channels: int = 3, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        gap = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        self.in_channels = in_channels
        self.features = nn.Sequential(
            conv(in_channels, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            pool(2),
            conv(8, 16, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = gap(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def make_squares(n: int, seed: int, spatial_dims: int = 2, size: int = SIZE, channels: int = 3):
    """Noise images; class 1 has a bright square (cube) somewhere in the whole image.

    Returns x (N, C, *spatial), y (N,), boxes (N, 2 * spatial_dims) as (lo..., hi...).
    """
    rng = np.random.default_rng(seed)
    shape = (n, channels, *[size] * spatial_dims)
    x = rng.normal(0.0, 0.35, size=shape).astype(np.float32)
    y = np.arange(n) % 2
    side = SQUARE if spatial_dims == 2 else 4
    boxes = np.zeros((n, 2 * spatial_dims), dtype=int)
    for i in range(n):
        lo = rng.integers(1, size - side - 1, size=spatial_dims)
        boxes[i] = [*lo, *(lo + side)]
        if y[i] == 1:
            sl = (i, slice(None), *[slice(a, a + side) for a in lo])
            x[sl] += 1.5
    return torch.from_numpy(x), torch.from_numpy(y), boxes


def train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 1e-2
) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for j in range(0, len(x), 32):
            idx = perm[j : j + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def square_model():
    """(model, x_test, y_test, boxes_test) with a model that finds the square."""
    torch.manual_seed(0)
    xtr, ytr, _ = make_squares(256, seed=1)
    model = train(TinyCNN(), xtr, ytr, epochs=6)
    xte, yte, boxes = make_squares(40, seed=2)
    return model, xte, yte, boxes


@pytest.fixture(scope="session")
def cube_model():
    torch.manual_seed(0)
    xtr, ytr, _ = make_squares(128, seed=3, spatial_dims=3, size=16, channels=1)
    model = train(TinyCNN(in_channels=1, spatial_dims=3), xtr, ytr, epochs=8)
    xte, yte, boxes = make_squares(8, seed=4, spatial_dims=3, size=16, channels=1)
    return model, xte, yte, boxes


@pytest.fixture(scope="module")
def app():
    """The medlens CLI with every command registered (for ``CliRunner``)."""
    from medlens.cli.main import register_all

    return register_all()


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """An untrained tiny classifier package (what explain reads, not what it concludes)."""
    from tests.packages import tiny_classifier_package

    return tiny_classifier_package(tmp_path_factory.mktemp("run") / "model")
