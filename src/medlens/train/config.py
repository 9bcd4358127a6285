"""Typed training configuration; the resolved config is saved in every run directory."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Optimisation settings shared by all tasks."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-4, ge=0)
    scheduler: Literal["cosine", "plateau", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    patience: int = Field(5, ge=1, description="early stopping: epochs without improvement")
    keep: Literal["best", "last"] = Field(
        "best", description="the weights a run keeps: 'best' by the validation metric (early stopping "
                            "after `patience` epochs without improvement), or 'last': the whole schedule, "
                            "the final weights (nnU-Net's rule; a metric on one or two validation patients "
                            "is too noisy to choose an epoch by)")
    min_delta: float = Field(0.0, ge=0)
    seed: int = 0
    amp: bool = Field(True, description="mixed precision (used on CUDA only)")
    device: str = "auto"
    max_steps_per_epoch: int | None = Field(None, ge=1)
    grad_clip: float | None = Field(None, gt=0)
    ema: float | None = Field(None, gt=0, lt=1, description="decay per step of an exponential moving "
                              "average of the weights (e.g. 0.95); validation, the best checkpoint and "
                              "the returned model use the averaged weights. None = off")
    progress: bool | None = Field(None, description="progress bar; None = only on a TTY")
    channels_last: bool | None = Field(None, description="None = the model's registered preference")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None = torch default")
    # fine-tuning a pretrained backbone (both need `head`; the defaults train every weight alike)
    head: str | None = Field(None, description="the classifier module's name (e.g. '_fc'); None = the "
                             "model's registered head, if any")
    freeze_backbone_epochs: int = Field(0, ge=0, description="train only the head for this many epochs "
                                        "(warm-up of a new head on a pretrained backbone), then everything")
    backbone_lr_mult: float = Field(1.0, gt=0, le=1, allow_inf_nan=False,
                                    description="learning rate of the backbone = lr × this (the head keeps lr)")
