"""Explainers on a model trained to find a bright square: do the maps point at it?"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlens.explain import ClassTarget, explain, hooks_released, list_methods

METHODS = ["gradcam", "gradcam++", "lime", "occlusion", "integrated-gradients"]


def _hits(maps: np.ndarray, boxes: np.ndarray, tol: int = 1) -> float:
    hits = 0
    for m, b in zip(maps, boxes):
        r, c = np.unravel_index(int(m.argmax()), m.shape)
        hits += (b[0] - tol <= r < b[2] + tol) and (b[1] - tol <= c < b[3] + tol)
    return hits / len(maps)


def test_model_learned_the_task(square_model):
    model, x, y, _ = square_model
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.9


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "occlusion", "integrated-gradients"])
def test_pointing_game(square_model, method):
    model, x, y, boxes = square_model
    pos = (y == 1).numpy()
    maps = explain(model, x[pos], method=method, target=1)
    assert _hits(maps, boxes[pos]) >= 0.8


def test_list_methods():
    assert list_methods() == sorted(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_shape_range_and_model_restored(square_model, method):
    model, x, _, _ = square_model
    params_before = [p.clone() for p in model.parameters()]
    maps = (
        explain(model, x[:3], method=method, n_samples=40)
        if method == "lime"
        else explain(model, x[:3], method=method)
    )
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0 and np.isfinite(maps).all()
    # hooks gone, in-place flags, requires_grad, eval flag and weights untouched
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert model.features[1].inplace is True
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params_before, model.parameters()))


def test_batch_targets_are_per_image(square_model):
    """Each image in a batch is explained for its own class, as if alone."""
    model, x, _, _ = square_model
    batch = explain(model, x[:4], method="gradcam")
    single = np.concatenate([explain(model, x[i : i + 1], method="gradcam") for i in range(4)])
    np.testing.assert_allclose(batch, single, atol=1e-4)
    pp_batch = explain(model, x[:4], method="gradcam++")
    pp_single = np.concatenate([explain(model, x[i : i + 1], method="gradcam++") for i in range(4)])
    np.testing.assert_allclose(pp_batch, pp_single, atol=1e-4)


def test_explicit_target_changes_map(square_model):
    model, x, y, _ = square_model
    i = int(np.flatnonzero(y.numpy() == 1)[0])
    m1 = explain(model, x[i : i + 1], method="integrated-gradients", target=1)
    m0 = explain(
        model, x[i : i + 1], method="integrated-gradients", target=ClassTarget(torch.tensor([0]))
    )
    assert not np.allclose(m1, m0)


def test_hooks_released_on_error_and_error_propagates(square_model):
    model = square_model[0]
    model.train()
    with pytest.raises(RuntimeError, match="boom"), hooks_released(model):
        model.features[3].register_forward_hook(lambda *a: None)
        model.features[1].inplace = False
        assert not model.training
        raise RuntimeError("boom")
    assert model.training and model.features[1].inplace is True
    assert not model.features[3]._forward_hooks
    model.eval()


def test_lime_is_reproducible(square_model):
    model, x, _, _ = square_model
    a = explain(model, x[:1], method="lime", n_samples=60, seed=3)
    b = explain(model, x[:1], method="lime", n_samples=60, seed=3)
    np.testing.assert_array_equal(a, b)
