"""Segmentation losses from MONAI, built by name through a registry.

All losses take logits ``(B, K, *spatial)`` and a target ``(B, 1, *spatial)``; with one
output channel (``K == 1``, binary lesion masks) they apply a sigmoid, otherwise a
softmax with one-hot targets.
"""

from __future__ import annotations

from typing import Any

from medlens.registry import Registry

LOSSES: Registry = Registry("segmentation loss")


def _act(num_classes: int) -> dict[str, Any]:
    if num_classes == 1:
        return {"sigmoid": True}
    return {"softmax": True, "to_onehot_y": True}


@LOSSES.register("dice")
def _dice(num_classes: int = 1, **kw: Any) -> Any:
    from monai.losses import DiceLoss

    return DiceLoss(**_act(num_classes), **{"smooth_nr": 1e-5, "smooth_dr": 1e-5, **kw})


@LOSSES.register("dice_bce")
def _dice_bce(num_classes: int = 1, **kw: Any) -> Any:
    """Dice + BCE (binary) or Dice + CE (multi-class): MONAI's DiceCELoss picks the CE."""
    from monai.losses import DiceCELoss

    return DiceCELoss(**_act(num_classes), **kw)


@LOSSES.register("dice_ce")
def _dice_ce(num_classes: int = 1, **kw: Any) -> Any:
    return _dice_bce(num_classes, **kw)


@LOSSES.register("jaccard")
def _jaccard(num_classes: int = 1, **kw: Any) -> Any:
    """Soft IoU: MONAI DiceLoss with ``jaccard=True``."""
    from monai.losses import DiceLoss

    return DiceLoss(**_act(num_classes), jaccard=True, **kw)


@LOSSES.register("focal")
def _focal(num_classes: int = 1, **kw: Any) -> Any:
    from monai.losses import FocalLoss

    if num_classes == 1:
        return FocalLoss(use_softmax=False, **{"gamma": 2.0, **kw})
    return FocalLoss(use_softmax=True, to_onehot_y=True, **{"gamma": 2.0, **kw})


@LOSSES.register("dice_focal")
def _dice_focal(num_classes: int = 1, **kw: Any) -> Any:
    from monai.losses import DiceFocalLoss

    return DiceFocalLoss(**_act(num_classes), **kw)


def create_loss(name: str, *, num_classes: int = 1, **kwargs: Any) -> Any:
    """Build a loss by name (``dice``, ``dice_bce``, ``dice_ce``, ``jaccard``, ``focal``,
    ``dice_focal``); unknown names get a did-you-mean ConfigError."""
    return LOSSES.get(name)(num_classes, **kwargs)


def list_losses(pattern: str = "*") -> list[str]:
    return LOSSES.names(pattern)
