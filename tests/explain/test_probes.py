"""Bias probes: hiding the evidence must flip the answer; harmless changes must not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medlens.errors import ConfigError
from medlens.explain import DEFAULT_PROBES, PROBES, probe
from medlens.explain.probes import ProbeContext, foreground


def test_hide_region_flips_positive_images(square_model, tmp_path):
    model, x, y, _ = square_model
    res = probe(model, x, y, classes=["empty", "square"], example_dir=tmp_path, n_examples=2)
    json.dumps(res)  # JSON-ready
    assert set(res["probes"]) == set(DEFAULT_PROBES)
    hide = res["probes"]["hide-region"]
    # the square is the only evidence: hiding the top-CAM region removes it
    assert hide["per_class"]["square"]["flip_rate"] >= 0.8
    assert hide["per_class"]["square"]["n"] == int((y == 1).sum())
    # a mild colour/brightness change should not matter to this model
    assert res["probes"]["colour-shift"]["flip_rate"] <= 0.2
    for entry in res["probes"].values():
        assert 0.0 <= entry["flip_rate"] <= 1.0 and entry["mean_abs_dprob"] >= 0.0
        assert len(entry["examples"]) == 2
        assert all(Path(ex["image"]).is_file() for ex in entry["examples"])
    ex = hide["examples"][0]
    assert ex["before"] == "square" and ex["after"] == "empty"


def test_given_mask_and_wrong_mask_shape(square_model):
    model, x, y, boxes = square_model
    pos = (y == 1).numpy()
    masks = np.zeros((int(pos.sum()), 32, 32), bool)
    for m, b in zip(masks, boxes[pos]):
        m[b[0] : b[2], b[1] : b[3]] = True
    res = probe(model, x[pos], probes=["hide-region"], masks=masks)
    assert res["probes"]["hide-region"]["flip_rate"] >= 0.8
    with pytest.raises(ValueError, match="masks must have shape"):
        probe(model, x[pos], probes=["hide-region"], masks=masks[:, :16])


def test_unknown_probe_and_segmenter():
    from .conftest import TinyCNN

    with pytest.raises(ConfigError, match="Did you mean 'blur'"):
        probe(TinyCNN().eval(), torch.randn(2, 3, 16, 16), probes=["blurr"])
    seg = torch.nn.Conv2d(3, 2, 1).eval()
    with pytest.raises(ConfigError, match="classifier"):
        probe(seg, torch.randn(2, 3, 16, 16))


def test_perturbations_2d_and_3d():
    rng = np.random.default_rng(0)
    for shape in [(3, 24, 24), (1, 12, 12, 12)]:
        img = np.full(shape, 0.2, np.float32)
        img[(slice(None), *[slice(4, 8)] * (len(shape) - 1))] = 0.9  # a small bright object
        fg = foreground(img)
        assert fg.sum() == 4 ** (len(shape) - 1)
        for name in PROBES.names():
            relied = np.zeros(shape[1:], bool)
            relied[(slice(4, 8),) * (len(shape) - 1)] = True
            out = PROBES.get(name)(img, ProbeContext(rng, relied))
            assert out.shape == img.shape and np.isfinite(out).all()
        iso = PROBES.get("isolate-object")(img, ProbeContext(rng))
        assert iso[:, ~fg].max() == 0.0 and np.allclose(iso[:, fg], 0.9)
        hidden = PROBES.get("hide-region")(img, ProbeContext(rng, fg))
        assert np.allclose(hidden, 0.2)


def test_3d_probe(cube_model):
    model, x, y, _ = cube_model
    res = probe(model, x, y, probes=["hide-region", "blur"])
    assert set(res["probes"]["blur"]["per_class"]) == {"0", "1"}
