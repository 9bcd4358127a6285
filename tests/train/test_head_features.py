"""A head trained on cached backbone features (frozen backbone for the whole run): the same
network as the slow path, a backbone left untouched, exact resume, and the usual path when
the head is not the network's last step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlens.train import head_features
from medlens.train.classify import ClassificationTask, class_weights
from medlens.train.config import TrainConfig
from medlens.train.head_features import HeadMismatch, fit_head, head_inputs, whole_run_frozen
from tests.train.images import bright_centre


class _Net(nn.Module):
    def __init__(self, after_head: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(16, 2)
        self.after_head = after_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.body(x))
        return y * 2 if self.after_head else y


def _data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return bright_centre(n, seed)


def _task(y: np.ndarray, augment: bool = True) -> ClassificationTask:
    from medlens.transforms.augment import AugmentConfig

    return ClassificationTask(num_classes=2, mean=[0.3], std=[0.2], weights=class_weights(y, 2),
                              augment=AugmentConfig(enabled=augment))


def _cfg(epochs: int = 4) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=5e-2, patience=10, seed=3, progress=False, scheduler="none",
                       head="fc", freeze_backbone_epochs=epochs, batch_size=16)


def _run(tmp_path, name: str, epochs: int = 4, **kw):
    x, y = _data()
    torch.manual_seed(0)
    net = _Net()
    body0 = {k: v.clone() for k, v in net.body.state_dict().items()}
    res = fit_head(net, _task(y[:64]), {"image": x[:64], "label": y[:64]}, {"image": x[64:], "label": y[64:]},
                   _cfg(epochs), tmp_path / name, **kw)
    return net, body0, res


def test_only_whole_run_freezing_uses_the_cache():
    assert whole_run_frozen(_cfg(4))
    assert not whole_run_frozen(_cfg(4).model_copy(update={"freeze_backbone_epochs": 2}))
    assert not whole_run_frozen(_cfg(4).model_copy(update={"head": None}))


def test_head_inputs_are_what_the_head_receives_and_reproduce_the_network():
    x, _ = _data(20)
    net = _Net().train()
    prep = lambda b: b.float().div(255)  # noqa: E731
    f = head_inputs(net, "fc", x, prep, torch.device("cpu"), chunk=8)
    assert f.shape == (20, 16) and net.training  # mode restored
    net.eval()
    assert torch.allclose(net.fc(f), net(prep(torch.as_tensor(x))), atol=1e-6)
    with pytest.raises(HeadMismatch):
        head_inputs(_Net(after_head=True), "fc", x, prep, torch.device("cpu"))


def test_the_head_learns_and_the_backbone_stays_as_it_was(tmp_path):
    net, body0, res = _run(tmp_path, "a")
    assert res is not None and len(res.history) == 4
    for k, v in net.body.state_dict().items():  # weights and BatchNorm statistics alike
        assert torch.equal(v, body0[k]), k
    assert res.best_score > 0.9  # val AUC: the bright centre is learnt by the head alone
    ck = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    assert set(ck["model"]) == {"weight", "bias"}  # the head's weights only


def test_training_views_rotate_and_validation_is_computed_once(tmp_path, monkeypatch):
    calls = []
    real = head_features.head_inputs
    monkeypatch.setattr(head_features, "head_inputs", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(head_features, "VIEWS", 3)
    _run(tmp_path, "v", epochs=6)
    assert len(calls) == 1 + 3  # validation once, three augmented training views for six epochs
    loader = head_features.ViewLoader([torch.zeros(4, 2), torch.ones(4, 2)], np.zeros(4), batch_size=4,
                                      shuffle=False)
    loader.set_epoch(3)
    assert float(next(iter(loader))["f"].sum()) == 8.0  # epoch 3 → view 1


def test_same_seed_same_head_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    full, _, r_full = _run(tmp_path, "full")
    again, _, _ = _run(tmp_path, "again")
    assert torch.equal(full.fc.weight, again.fc.weight)

    real_step, steps = head_features.HeadOnlyTask.training_step, []

    def crash_in_epoch_3(self, head, batch, device):
        steps.append(1)
        if len(steps) > 2 * 4:  # 64 images / 16 per batch = 4 steps per epoch
            raise KeyboardInterrupt
        return real_step(self, head, batch, device)

    monkeypatch.setattr(head_features.HeadOnlyTask, "training_step", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "part")
    monkeypatch.setattr(head_features.HeadOnlyTask, "training_step", real_step)
    resumed, _, r_res = _run(tmp_path, "part", resume=True)
    assert [h["train_loss"] for h in r_res.history] == [h["train_loss"] for h in r_full.history]
    assert torch.equal(resumed.fc.weight, full.fc.weight)


def test_a_head_that_is_not_the_last_step_trains_the_usual_way(tmp_path):
    x, y = _data()
    res = fit_head(_Net(after_head=True), _task(y), {"image": x, "label": y}, {"image": x, "label": y},
                   _cfg(), tmp_path / "m")
    assert res is None and not (tmp_path / "m").exists()
