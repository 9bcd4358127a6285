"""Classification networks: one registry, one factory.

``create_model("cancernet", num_classes=2)``, ``list_models("resnet*")``,
``model_info("resnet18")``, ``describe_models()`` (what ``medlens models`` lists);
``load_pretrained(model, "weights.pth")`` for local weights.
Built-in model modules are imported on first use, so ``import medlens.models`` is light.
"""

from __future__ import annotations

from medlens.models.pretrained import load_pretrained
from medlens.models.registry import (
    create_model,
    describe_models,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "create_model",
    "describe_models",
    "list_models",
    "load_pretrained",
    "model_info",
    "register_model",
]
