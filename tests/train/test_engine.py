"""The training engine: learning, determinism, checkpoints, resume, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlens.errors import ConfigError
from medlens.train.classify import ClassificationTask, auc_medmnist, class_weights
from medlens.train.config import TrainConfig
from medlens.train.engine import fit
from medlens.train.loader import BatchLoader
from tests.train.images import bright_centre


def _data(n: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return bright_centre(n, seed)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.2),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 2))


def _setup(epochs: int = 4, patience: int = 10):
    x, y = _data()
    task = ClassificationTask(num_classes=2, mean=[0.3], std=[0.2], weights=class_weights(y[:120], 2))
    tr = BatchLoader({"image": x[:120], "label": y[:120]}, batch_size=16, shuffle=True, seed=3)
    va = BatchLoader({"image": x[120:], "label": y[120:]}, batch_size=64, shuffle=False)
    cfg = TrainConfig(epochs=epochs, lr=1e-2, patience=patience, seed=7, progress=False)
    return task, tr, va, cfg


def test_fit_learns_and_writes_artifacts(tmp_path):
    task, tr, va, cfg = _setup(epochs=6)
    torch.manual_seed(0)
    res = fit(_net(), task, tr, va, cfg, tmp_path)
    assert res.best_score > 0.9, res.history
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    assert (tmp_path / "checkpoints" / "best.pt").exists()
    hist = (tmp_path / "logs" / "history.csv").read_text().splitlines()
    assert hist[0].startswith("epoch,train_loss") and len(hist) == 7
    assert any((tmp_path / "logs" / "tensorboard").iterdir())


def test_same_seed_same_weights(tmp_path):
    outs = []
    for i in range(2):
        task, tr, va, cfg = _setup(epochs=2)
        torch.manual_seed(0)
        m = _net()
        fit(m, task, tr, va, cfg, tmp_path / str(i))
        outs.append(torch.cat([p.flatten() for p in m.parameters()]))
    assert torch.equal(outs[0], outs[1])


class _Crash(Exception):
    pass


class _CrashingTask:
    """Wraps a task and dies during the validation of epoch ``at`` (like a SIGKILL mid-run)."""

    def __init__(self, task, at: int) -> None:
        self.task, self.at, self.calls = task, at, 0
        self.monitor, self.mode = task.monitor, task.mode

    def training_step(self, *a):
        return self.task.training_step(*a)

    def validate(self, *a):
        if self.calls == self.at:
            raise _Crash()
        self.calls += 1
        return self.task.validate(*a)


@pytest.mark.parametrize("ema", [None, 0.9])
def test_resume_equals_uninterrupted(tmp_path, ema):
    task, tr, va, cfg = _setup(epochs=4)
    cfg = cfg.model_copy(update={"ema": ema})
    torch.manual_seed(0)
    full = _net()
    r_full = fit(full, task, tr, va, cfg, tmp_path / "full")
    torch.manual_seed(0)
    with pytest.raises(_Crash):
        fit(_net(), _CrashingTask(task, at=2), tr, va, cfg, tmp_path / "part")
    ck = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=False)
    assert ck["epoch"] == 1
    torch.manual_seed(123)  # a fresh process would not share the RNG state
    resumed = _net()
    r_res = fit(resumed, task, tr, va, cfg, tmp_path / "part", resume=True)
    assert [h["val_auc"] for h in r_res.history] == [h["val_auc"] for h in r_full.history]
    assert [h["train_loss"] for h in r_res.history] == [h["train_loss"] for h in r_full.history]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


class _Recorder:
    """Records the weights each training step starts from and the weights validated."""

    def __init__(self, task) -> None:
        self.task, self.monitor, self.mode = task, task.monitor, task.mode
        self.stepped, self.validated = [], []

    def training_step(self, model, batch, device):
        self.stepped.append([p.detach().clone() for p in model.parameters()])
        return self.task.training_step(model, batch, device)

    def validate(self, model, loader, device):
        self.validated.append([p.detach().clone() for p in model.parameters()])
        return self.task.validate(model, loader, device)


def test_ema_validates_and_returns_the_moving_average(tmp_path):
    task, tr, va, cfg = _setup(epochs=1)
    cfg = cfg.model_copy(update={"ema": 0.8})
    rec = _Recorder(task)
    torch.manual_seed(0)
    model = _net()
    fit(model, rec, tr, va, cfg, tmp_path)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)["model"]
    names = [n for n, _ in model.named_parameters()]
    # weights after step k are those step k+1 starts from; after the last step: last.pt
    after = rec.stepped[1:] + [[last[n] for n in names]]
    avg = [p.clone() for p in after[0]]  # the first update copies, then avg = d·avg + (1-d)·w
    for w in after[1:]:
        avg = [0.8 * a + 0.2 * b for a, b in zip(avg, w)]
    for a, v, p in zip(avg, rec.validated[0], model.parameters()):
        assert torch.allclose(v, a, atol=1e-6)  # validated: the average ...
        assert torch.allclose(p.detach(), a, atol=1e-6)  # ... and returned (best of one epoch)
    assert any(not torch.allclose(v, raw) for v, raw in zip(rec.validated[0], after[-1])), \
        "the average must differ from the raw weights of the last step"


def test_early_stopping(tmp_path):
    task, tr, va, cfg = _setup(epochs=30, patience=2)
    cfg = cfg.model_copy(update={"lr": 1e-9})  # nothing improves
    res = fit(_net(), task, tr, va, cfg, tmp_path)
    assert res.stopped_early and len(res.history) == 3


def test_keep_last_runs_the_whole_schedule_and_returns_the_last_weights(tmp_path):
    task, tr, va, cfg = _setup(epochs=5, patience=1)
    cfg = cfg.model_copy(update={"lr": 1e-9, "keep": "last"})  # nothing improves: "best" would stop at 2
    model = _net()
    res = fit(model, task, tr, va, cfg, tmp_path)
    assert not res.stopped_early and len(res.history) == 5
    assert res.best_epoch == 4 and res.best_score == res.history[-1][task.monitor]  # the chosen epoch
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert best is not None and all(torch.equal(v, last[k]) for k, v in model.state_dict().items())
    kept = TrainConfig(keep="best").model_copy(update={"epochs": 5, "lr": 1e-2, "seed": 7, "progress": False})
    m2 = _net()
    r2 = fit(m2, task, tr, va, kept, tmp_path / "best")
    b2 = torch.load(tmp_path / "best" / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert r2.best_epoch >= 0 and all(torch.equal(v, b2[k]) for k, v in m2.state_dict().items())


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    task, tr, va, cfg = _setup()
    with pytest.raises(ConfigError, match="no checkpoint"):
        fit(_net(), task, tr, va, cfg, tmp_path, resume=True)


def test_loader_weighted_sampling_balances_classes():
    y = np.array([0] * 90 + [1] * 10)
    w = class_weights(y, 2)[y]
    ld = BatchLoader({"label": y}, batch_size=100, shuffle=True, weights=w, seed=1)
    drawn = torch.cat([b["label"] for b in ld]).numpy()
    assert 0.35 < drawn.mean() < 0.65


def test_loader_is_deterministic_per_epoch():
    ld = BatchLoader({"i": np.arange(50)}, batch_size=10, shuffle=True, seed=5)
    a = torch.cat([b["i"] for b in ld])
    b = torch.cat([b["i"] for b in ld])
    ld.set_epoch(1)
    c = torch.cat([b["i"] for b in ld])
    assert torch.equal(a, b) and not torch.equal(a, c) and sorted(a.tolist()) == list(range(50))


def test_auc_definitions():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    assert auc_medmnist(y, p) == 1.0
    y3 = np.array([0, 1, 2, 0, 1, 2])
    p3 = np.eye(3)[y3] * 0.8 + 0.2 / 3
    assert auc_medmnist(y3, p3) == 1.0
