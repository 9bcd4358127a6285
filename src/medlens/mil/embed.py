"""A frozen encoder's cell features, computed once and cached.

Why: with a frozen (pretrained) encoder the features of a cell never change, so encoding
every cell every epoch — minutes per epoch on a CPU — is wasted work. The features are
computed once per data set and encoder (kept on disk beside the decoded cells, so a
cross-validation or a second run reads them back) and only the bag head
(:class:`medlens.mil.model.BagHead`) trains on them: an epoch takes milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.mil.bags import CellInput

log = logging.getLogger(__name__)


@torch.no_grad()
def embed_cells(encoder: nn.Module, images: np.ndarray, cell_input: CellInput, device: torch.device | str = "cpu",
                *, chunk: int = 128) -> np.ndarray:
    """``(N, C, S, S)`` uint8 cells → ``(N, F)`` float32 encoder features (encoder in eval mode)."""
    was = encoder.training
    encoder.eval()
    out = []
    try:
        for i in range(0, len(images), chunk):
            x = cell_input(torch.from_numpy(np.ascontiguousarray(images[i:i + chunk])), device)
            out.append(encoder(x).float().cpu().numpy())
    finally:
        encoder.train(was)
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)


def features_key(images: np.ndarray, identity: dict[str, Any]) -> str:
    """A key that changes with the cells (their bytes) and with what encodes them."""
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(identity, sort_keys=True, default=str).encode())
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).data)
    return h.hexdigest()


def cached_features(encoder: nn.Module, images: np.ndarray, cell_input: CellInput, identity: dict[str, Any], *,
                    cache_dir: str | Path | None = None, device: torch.device | str = "cpu") -> np.ndarray:
    """:func:`embed_cells`, read from ``cache_dir/features-<key>.npy`` when it is there.

    ``identity`` names the encoder and its weights (e.g. ``{"encoder": …, "pretrained": …}``):
    only a frozen encoder with named weights may be cached across runs; the caller decides.
    """
    from medlens.io.atomic import atomic_write

    path = Path(cache_dir) / f"features-{features_key(images, identity)}.npy" if cache_dir else None
    if path is not None and path.exists():
        try:
            feats = np.load(path, allow_pickle=False)
            if feats.shape[0] == len(images):
                log.info("cell features read from %s", path)
                return feats
        except (OSError, ValueError) as e:
            log.info("cell features cache %s unreadable (%s); computing again", path, e)
    feats = embed_cells(encoder, images, cell_input, device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: np.save(fh, feats, allow_pickle=False))
    return feats
