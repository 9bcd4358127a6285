"""Tiny model packages for tests that need a package, not a trained model (loading,
prediction plumbing, explanations): an untrained ``test_cnn`` saved as ``medlens train`` would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def tiny_classifier_package(out: Path, *, classes: tuple[str, ...] = ("benign", "malignant"), size: int = 32,
                            **metadata: Any) -> Path:
    """An untrained 3-channel ``test_cnn`` classifier package in ``out`` (seeded: reproducible)."""
    from medlens.models import create_model
    from medlens.package import save_model_package

    torch.manual_seed(0)
    kwargs = {"num_classes": len(classes), "in_channels": 3}
    model = create_model("test_cnn", **kwargs).eval()
    meta = {"task": "classify", "classes": list(classes), "input": {"size": size, "channels": 3},
            "preprocess": {"size": size, "channels": 3}, "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3},
            **metadata}
    return Path(save_model_package(out, model, model_name="test_cnn", model_kwargs=kwargs, metadata=meta))
