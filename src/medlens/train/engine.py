"""The training engine: one loop for every task.

A *task* knows its batches (loss, validation metrics); the engine knows everything
else: device, optimiser, schedule, mixed precision, early stopping, atomic per-epoch
checkpoints, exact resume, seeds, progress and logs. A run killed at any moment and
restarted with ``resume=True`` ends with the same weights as an uninterrupted run.

Checkpoints hold only tensors and plain containers (no pickled objects, no RNG state
objects: every epoch re-seeds its generators from ``seed`` and the epoch number), so a
shared run folder is read with ``weights_only=True`` and cannot run code on ``--resume``.

With ``TrainConfig.ema`` the engine keeps an exponential moving average of the weights
(``torch.optim.swa_utils.AveragedModel``) and validates, checkpoints and returns the
average: on small data sets, where validation scores jump from epoch to epoch, the
average is steadier than the weights of any single step.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from medlens.errors import BadInputError, ConfigError
from medlens.io.atomic import atomic_torch_save, atomic_write_text
from medlens.io.weights import load_weights_file
from medlens.train.config import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


class Task(Protocol):
    """What the engine needs from a task."""

    monitor: str
    mode: Literal["max", "min"]

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor: ...

    def validate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]: ...


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_path: Path | None = None
    stopped_early: bool = False


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"Unknown device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device {name!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000 + epoch


def fit(
    model: nn.Module,
    task: Task,
    train_loader: Any,
    val_loader: Any,
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
) -> FitResult:
    """Train ``model`` on ``task``; write checkpoints and logs under ``run_dir``.

    Returns the best epoch by ``task.monitor`` and loads the best weights into ``model``
    (``cfg.keep == "last"``: runs every epoch, leaves the last weights there and reports the
    last epoch and its score as the chosen ones).
    """
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    log_dir = run_dir / "logs"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    head, backbone = _head_split(model, cfg)
    opt = torch.optim.AdamW(_param_groups(model, head, backbone, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _make_scheduler(opt, cfg, task.mode)
    use_amp = bool(cfg.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    sign = 1.0 if task.mode == "max" else -1.0
    ema = _make_ema(model, cfg.ema)
    judged = ema.module if ema is not None else model  # the weights validated, kept and returned

    start_epoch, best_score, best_epoch, bad_epochs, history = 0, -math.inf, -1, 0, []
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    stopped = False
    if resume:
        if not last_path.exists():
            raise ConfigError(f"--resume: no checkpoint at {last_path}; start without --resume")
        state = _read_checkpoint(last_path, device, ("model", "optimizer", "scaler", "epoch", "best_score",
                                                     "best_epoch", "bad_epochs", "history"))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            if state.get("ema") is None:
                raise ConfigError(f"--resume: {last_path} was written without ema; resume with the same config")
            ema.load_state_dict(state["ema"])
        start_epoch = state["epoch"] + 1
        best_score, best_epoch = state["best_score"], state["best_epoch"]
        bad_epochs, history, stopped = state["bad_epochs"], state["history"], state.get("stopped", False)
        log.info("resuming from epoch %d (best %s at epoch %d)", start_epoch, best_score, best_epoch)

    writer = _tensorboard(log_dir / "tensorboard")
    show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if stopped:
                break
            t0 = time.perf_counter()
            torch.manual_seed(_epoch_seed(cfg.seed, epoch))
            np.random.seed(_epoch_seed(cfg.seed, epoch) % (2**32))
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            _set_warmup_lr(opt, cfg, epoch)
            for p in backbone:  # head warm-up: the backbone waits (set every epoch: resume-safe)
                p.requires_grad_(epoch >= cfg.freeze_backbone_epochs)
            train_loss, n_items = _train_epoch(
                model, task, train_loader, opt, scaler, device, cfg, use_amp, show, epoch, ema
            )
            judged.eval()
            with torch.no_grad():
                val = task.validate(judged, val_loader, device)
            if task.monitor not in val:
                raise ConfigError(f"validation did not report the monitored metric {task.monitor!r}")
            score = float(val[task.monitor])
            if sched is not None and epoch >= cfg.warmup_epochs:
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step(score if task.mode == "max" else -score)
                else:
                    sched.step()
            row = {"epoch": epoch, "train_loss": train_loss, **{k: float(v) for k, v in val.items()},
                   "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
                   "items_per_s": n_items / max(time.perf_counter() - t0, 1e-9)}
            history.append(row)
            if best_epoch < 0 or (math.isfinite(score) and sign * score > sign * best_score + cfg.min_delta):
                best_score, best_epoch, bad_epochs = score, epoch, 0
                atomic_torch_save(best_path, {"model": _cpu_state(judged), "epoch": epoch, "score": score})
            else:
                bad_epochs += 1
            stopped = cfg.keep == "best" and bad_epochs >= cfg.patience
            atomic_torch_save(last_path, {
                "version": CHECKPOINT_VERSION, "model": _cpu_state(model), "optimizer": opt.state_dict(),
                "scheduler": None if sched is None else sched.state_dict(), "scaler": scaler.state_dict(),
                "ema": None if ema is None else ema.state_dict(),
                "epoch": epoch, "best_score": best_score, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "history": history, "stopped": stopped,
                "config": cfg.model_dump(),
            })
            _write_history(log_dir / "history.csv", history)
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                        writer.add_scalar(k, v, epoch)
                writer.flush()
            log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
            if stopped:
                log.info("early stopping: no improvement of %s for %d epochs", task.monitor, cfg.patience)
    finally:
        if writer is not None:
            writer.close()
    if cfg.keep == "last":
        if judged is not model:  # the averaged weights are the ones validated and kept
            model.load_state_dict(judged.state_dict())
        if history:  # the chosen epoch is the last one: report it and its score, not the best
            best_epoch, best_score = int(history[-1]["epoch"]), float(history[-1][task.monitor])
    elif best_path.exists():
        model.load_state_dict(_read_checkpoint(best_path, device, ("model",))["model"])
    model.eval()
    return FitResult(best_epoch, best_score, history, best_path if best_path.exists() else None, stopped)


def _read_checkpoint(path: Path, device: torch.device, keys: tuple[str, ...]) -> dict[str, Any]:
    """A checkpoint written by :func:`fit`, read weights-only; a foreign file is a BadInputError."""
    state = load_weights_file(path, map_location=device)
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise BadInputError(f"{path}: not a medlens training checkpoint (missing {', '.join(missing)}); "
                            "start without --resume or choose another --out")
    return state


def _make_ema(model: nn.Module, decay: float | None) -> torch.optim.swa_utils.AveragedModel | None:
    """The weight average of ``TrainConfig.ema`` (buffers averaged too), or None."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _train_epoch(model, task, loader, opt, scaler, device, cfg, use_amp, show, epoch, ema=None):  # noqa: ANN001, ANN202
    model.train()
    if cfg.head and epoch < cfg.freeze_backbone_epochs:
        # a frozen backbone runs as at inference (BatchNorm keeps its pretrained statistics,
        # dropout off): its features stay the ones the head is fitted to; only the head trains
        model.eval()
        model.get_submodule(cfg.head).train()
    total, count, n_items = 0.0, 0, 0
    n_batches = len(loader) if hasattr(loader, "__len__") else None
    if cfg.max_steps_per_epoch and n_batches:
        n_batches = min(n_batches, cfg.max_steps_per_epoch)
    bar = _progress(show, n_batches, f"epoch {epoch + 1}/{cfg.epochs}")
    try:
        for step, batch in enumerate(loader):
            if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch:
                break
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                loss = task.training_step(model, batch, device)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch}, step {step}; lower --lr"
                )
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            total += float(loss.detach())
            count += 1
            n_items += len(next(iter(batch.values())))
            if bar is not None:
                bar[0].update(bar[1], advance=1, description=f"epoch {epoch + 1}/{cfg.epochs} loss {total / count:.4f}")
    finally:
        if bar is not None:
            bar[0].stop()
    return (total / max(count, 1)), n_items


def _progress(show: bool, total: int | None, desc: str):  # noqa: ANN202
    if not show:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                 transient=True)
    p.start()
    return p, p.add_task(desc, total=total)


def _make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, mode: str):  # noqa: ANN202
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs - cfg.warmup_epochs, 1))
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=max(cfg.patience // 2, 1))
    return None


def _head_split(model: nn.Module, cfg: TrainConfig) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(head, backbone) parameters when fine-tuning asks for them apart, else ([], []).

    Raises:
        ConfigError: a fine-tuning setting without a head, or a head name the model lacks.
    """
    if cfg.freeze_backbone_epochs == 0 and cfg.backbone_lr_mult == 1.0:
        return [], []
    if not cfg.head:
        raise ConfigError("freeze_backbone_epochs/backbone_lr_mult need the model's head (train.head); "
                          "this model registers none")
    try:
        head = list(model.get_submodule(cfg.head).parameters())
    except AttributeError:
        raise ConfigError(f"train.head {cfg.head!r} is not a module of {type(model).__name__}") from None
    ids = {id(p) for p in head}
    return head, [p for p in model.parameters() if id(p) not in ids]


def _param_groups(model: nn.Module, head: list[nn.Parameter], backbone: list[nn.Parameter],
                  cfg: TrainConfig) -> list[dict[str, Any]]:
    """One group (every weight at ``lr``), or backbone at ``lr × backbone_lr_mult`` and head at ``lr``."""
    if not head:
        return [{"params": list(model.parameters()), "base_lr": cfg.lr}]
    return [{"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult, "base_lr": cfg.lr * cfg.backbone_lr_mult},
            {"params": head, "lr": cfg.lr, "base_lr": cfg.lr}]


def _set_warmup_lr(opt: torch.optim.Optimizer, cfg: TrainConfig, epoch: int) -> None:
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        for g in opt.param_groups:
            g["lr"] = g.get("base_lr", cfg.lr) * (epoch + 1) / (cfg.warmup_epochs + 1)
    elif cfg.warmup_epochs and epoch == cfg.warmup_epochs:
        for g in opt.param_groups:
            g["lr"] = g.get("base_lr", cfg.lr)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(path, buf.getvalue())


def _tensorboard(path: Path):  # noqa: ANN202
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but keep training without it
        log.warning("tensorboard not importable; TensorBoard logs disabled")
        return None
    return SummaryWriter(log_dir=str(path))
