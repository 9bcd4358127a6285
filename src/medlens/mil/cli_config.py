"""The patient run config assembled from ``medlens train --task patient`` flags over a
``--config`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medlens.errors import ConfigError
from medlens.mil.config import DEFAULT_TRAIN, PatientConfig


def config_from_cli(*, data: Path, config: Path | None, options: dict[str, Any]) -> PatientConfig:
    """The run config: command-line flags (``None``/False: not given) over the config file."""
    from pydantic import ValidationError

    from medlens.config_errors import invalid_config
    from medlens.pipelines.config import deep_update, load_config_file

    base = load_config_file(config) if config else {}
    over: dict[str, Any] = {"data": str(data)}
    for key in ("layout", "size", "val_fraction", "test_fraction", "target_sensitivity", "negative_class",
                "pretrained"):
        if options.get(key) is not None:
            over[key] = options[key]
    if options.get("model"):
        over["encoder"] = options["model"]
    if options.get("no_augment"):
        over["augment"] = False
    train = dict(DEFAULT_TRAIN, **(base.get("train") or {}))
    for key, field in (("epochs", "epochs"), ("lr", "lr"), ("patience", "patience"), ("scheduler", "scheduler"),
                       ("seed", "seed"), ("device", "device"), ("max_steps", "max_steps_per_epoch")):
        if options.get(key) is not None:
            train[field] = options[key]
    over["train"] = train
    merged = deep_update(base, over)
    if "pretrained" not in merged and merged.get("encoder") and not _has_imagenet(str(merged["encoder"])):
        merged["pretrained"] = None  # --model NAME without weights of its own: random init, trained end to end
    try:
        return PatientConfig(**merged)
    except ValidationError as e:
        raise invalid_config(e, what="patient config") from None


def _has_imagenet(encoder: str) -> bool:
    from medlens.models import model_info

    try:
        return "imagenet" in (model_info(encoder).get("weights") or [])
    except ConfigError:
        return False
