"""Training only a classifier's head on cached backbone features.

Why: when the backbone stays frozen for the whole run (the linear-probe recipe for small
photo sets), an image's features change only with its augmentation, so running the
backbone every epoch — nearly all of the run's time on a CPU — is wasted work. The head's
inputs are computed for a few augmented views of the training images (epoch ``e`` trains
on view ``e mod V``, reshuffled) and once for the validation images; each epoch then runs
only the head, through the same engine (checkpoints, resume, early stopping, EMA).

Any registered head works: its input is caught by a forward hook, and the cache is used
only when the head applied to that input reproduces the network's output (a network that
does more after its head trains the usual way).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlens.train.classify import ClassificationTask, classification_scores
from medlens.train.config import TrainConfig
from medlens.train.engine import FitResult, fit, resolve_device
from medlens.train.loader import BatchLoader

log = logging.getLogger(__name__)

#: augmented views of the training images cached (at most one per epoch) …
VIEWS = 5
#: … within this much memory (fewer views for large sets)
MAX_CACHE_BYTES = 1 << 30


def whole_run_frozen(cfg: TrainConfig) -> bool:
    """The backbone never trains in this run: only the head (``cfg.head``) does."""
    return bool(cfg.head) and cfg.freeze_backbone_epochs >= cfg.epochs


class HeadMismatch(RuntimeError):
    """The head applied to its caught input does not give the network's output."""


@torch.no_grad()
def head_inputs(model: nn.Module, head: str, images: np.ndarray | torch.Tensor, prepare: Any,
                device: torch.device, *, chunk: int = 64) -> torch.Tensor:
    """What ``model``'s ``head`` module receives for each image (model in eval mode), on the CPU.

    ``prepare(uint8 batch) → network input`` (augmentation included when wanted).

    Raises:
        HeadMismatch: the head is not the network's last step (its output differs from the
            network's, or it runs more than once per forward).
    """
    module = model.get_submodule(head)
    caught: list[tuple[torch.Tensor, torch.Tensor]] = []
    hook = module.register_forward_hook(lambda _m, inp, out: caught.append((inp[0].detach(), out.detach())))
    was = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        for i in range(0, len(images), chunk):
            caught.clear()
            y = model(prepare(torch.as_tensor(images[i:i + chunk])))
            if len(caught) != 1 or not isinstance(y, torch.Tensor) or y.shape != caught[0][1].shape \
                    or not torch.allclose(y.float(), caught[0][1].float(), atol=1e-5, rtol=1e-4):
                raise HeadMismatch(f"the output of {head!r} is not the network's output")
            out.append(caught[0][0].float().cpu())
    finally:
        hook.remove()
        model.train(was)
    return torch.cat(out)


class ViewLoader(BatchLoader):
    """A :class:`BatchLoader` of cached head inputs ``{"f", "label"}``; epoch ``e`` serves view ``e mod V``."""

    def __init__(self, views: list[torch.Tensor], labels: np.ndarray, **kwargs: Any) -> None:
        super().__init__({"f": views[0], "label": labels}, **kwargs)
        self.views = views

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.arrays["f"] = self.views[epoch % len(self.views)]


class HeadOnlyTask:
    """The classification loss and validation scores of ``task``, with the head fed cached inputs."""

    def __init__(self, task: ClassificationTask) -> None:
        self.task, self.monitor, self.mode = task, task.monitor, task.mode

    def training_step(self, head: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        w = None if self.task.weights is None else self.task.weights.to(device)
        return F.cross_entropy(head(batch["f"].to(device)), batch["label"].to(device), weight=w,
                               label_smoothing=self.task.label_smoothing)

    @torch.no_grad()
    def validate(self, head: nn.Module, loader: BatchLoader, device: torch.device) -> dict[str, float]:
        head.eval()
        batches = list(loader)
        logits = torch.cat([head(b["f"].to(device)).float().cpu() for b in batches])
        return classification_scores(torch.cat([b["label"] for b in batches]).numpy(), logits)


def fit_head(model: nn.Module, task: ClassificationTask, train: dict[str, np.ndarray],
             val: dict[str, np.ndarray], cfg: TrainConfig, run_dir: str | Path, *,
             sampler_weights: np.ndarray | None = None, resume: bool = False) -> FitResult | None:
    """Train only ``model``'s head (``cfg.head``) on cached inputs; None when the cache does not apply.

    ``train``/``val``: ``{"image": uint8 (N, C, H, W), "label": (N,)}``. The trained head is
    ``model``'s own module, so ``model`` comes back trained. Checkpoints hold the head's
    weights (a resumed run recomputes the same views: each is seeded by its index).
    """
    if not whole_run_frozen(cfg):
        return None
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model.to(device)
    t0 = time.perf_counter()
    n_views = min(VIEWS, cfg.epochs) if task.augment.enabled else 1
    views: list[torch.Tensor] = []
    try:
        val_f = head_inputs(model, cfg.head, val["image"], lambda b: task.prepare(b, device, train=False), device)
        for v in range(n_views):
            torch.manual_seed(cfg.seed * 1_000 + 500 + v)  # view v is the same on a resumed run
            views.append(head_inputs(model, cfg.head, train["image"],
                                     lambda b: task.prepare(b, device, train=True), device))
            n_views = min(n_views, max(1, MAX_CACHE_BYTES // max(views[0].numel() * 4, 1)))
            if len(views) >= n_views:
                break
    except HeadMismatch as e:
        log.info("backbone features not cached (%s); the whole network runs every epoch", e)
        return None
    log.info("frozen backbone: head inputs %s computed once for %d training view(s) and the validation "
             "images in %.1f s; only %r trains each epoch", tuple(views[0].shape[1:]), len(views),
             time.perf_counter() - t0, cfg.head)
    bs = cfg.batch_size
    train_loader = ViewLoader(views, train["label"], batch_size=bs, shuffle=True, seed=cfg.seed,
                              weights=sampler_weights)
    val_loader = BatchLoader({"f": val_f, "label": val["label"]}, batch_size=bs * 2, shuffle=False)
    head_cfg = cfg.model_copy(update={"head": None, "freeze_backbone_epochs": 0, "backbone_lr_mult": 1.0,
                                      "channels_last": False, "threads": None})
    result = fit(model.get_submodule(cfg.head), HeadOnlyTask(task), train_loader, val_loader, head_cfg, run_dir,
                 resume=resume)
    model.eval()
    return result
