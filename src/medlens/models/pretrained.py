"""Load local pretrained weights into a model, tolerating the usual differences.

Handles checkpoints that wrap the state dict (``{"state_dict": ...}``, ``{"model": ...}``),
``module.`` / ``_orig_mod.`` prefixes (DataParallel, ``torch.compile``), a different
number of input channels in the first convolution (RGB weights into a grey-scale X-ray
model and back), and a classifier head sized for another number of classes (skipped).
Nothing is downloaded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medlens.errors import BadInputError, ConfigError

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(source: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor mapping from a weights file, unwrapping checkpoints and prefixes.

    Raises:
        BadInputError: missing/unreadable file or no tensors inside.
        ConfigError: ``.safetensors`` without the ``safetensors`` package.
    """
    path = Path(source)
    if not path.is_file():
        raise BadInputError(f"Weights file not found: {path}")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise BadInputError(
            f"{path}: unsupported weights file type {path.suffix!r}; "
            f"expected one of {', '.join(WEIGHT_SUFFIXES)}"
        )
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ConfigError(
                f"Reading {path} needs the safetensors package: `pip install safetensors`"
            ) from err
        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise BadInputError(f"{path}: not a readable safetensors file ({err})") from err
    else:
        from medlens.io.weights import load_weights_file

        obj = load_weights_file(path, map_location="cpu")  # weights-only: no code runs
    for _ in range(3):  # nested wrappers, e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise BadInputError(f"{path}: expected a state dict, found {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    if not state:
        raise BadInputError(f"{path}: contains no tensors")
    return state


def first_conv_weight_name(model: nn.Module) -> str | None:
    """Key of the first ordinary (ungrouped) convolution's weight: the input layer."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return f"{name}.weight" if module.groups == 1 else None
    return None


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Convert a conv weight ``(O, I, *k)`` to ``in_channels`` inputs.

    3 → 1 sums the RGB filters (a grey image seen as R=G=B then gives the same
    response); other counts → 1 take the mean; I → N repeats the filters and scales by
    I/N (e.g. 1 → 3 divides by 3), keeping activations on the same scale.
    """
    src = weight.shape[1]
    if in_channels == src:
        return weight
    if in_channels == 1:
        return weight.sum(1, keepdim=True) if src == 3 else weight.mean(1, keepdim=True)
    reps = math.ceil(in_channels / src)
    tiled = weight.repeat(1, reps, *([1] * (weight.dim() - 2)))[:, :in_channels]
    return tiled * (src / in_channels)


def load_pretrained(
    model: nn.Module, source: str | Path, *, strict: bool = False
) -> dict[str, Any]:
    """Load a local weights file into ``model`` in place, matching tensors by name.

    Tensors of the same shape load; the first conv is adapted to the model's input
    channels (:func:`adapt_input_channels`); tensors whose shape still differs (the
    classifier head for a new ``num_classes``) are skipped and keep their init.

    Args:
        model: the target network.
        source: ``.pt/.pth/.bin/.ckpt`` (weights-only torch file) or ``.safetensors``.
        strict: raise if any model tensor stays unloaded or any file tensor is unused.

    Returns:
        Report dict: ``source``, ``loaded`` (keys), ``adapted`` (keys with channel
        adaptation), ``skipped`` ({key: reason}), ``missing`` (model keys absent from the
        file), ``unexpected`` (file keys the model lacks).

    Raises:
        BadInputError: unreadable file. ConfigError: nothing matched, or ``strict`` and
        the file does not fit exactly.
    """
    state = read_state_dict(source)
    own = model.state_dict()
    first_conv = first_conv_weight_name(model)
    to_load: dict[str, torch.Tensor] = {}
    report: dict[str, Any] = {
        "source": str(source), "loaded": [], "adapted": [], "skipped": {}, "missing": [],
        "unexpected": sorted(set(state) - set(own)),
    }  # fmt: skip
    for key, target in own.items():
        if key not in state:
            report["missing"].append(key)
            continue
        value = state[key]
        if value.shape == target.shape:
            to_load[key] = value
            report["loaded"].append(key)
        elif (
            key == first_conv
            and value.dim() == target.dim()
            and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:]
        ):
            to_load[key] = adapt_input_channels(value.to(torch.float32), target.shape[1])
            report["adapted"].append(key)
            report["loaded"].append(key)
        else:
            report["skipped"][key] = (
                f"shape {tuple(value.shape)} in file, {tuple(target.shape)} in model"
            )
    if not to_load:
        raise ConfigError(
            f"No tensor of {source} matches the model by name and shape; is it a checkpoint "
            f"of another architecture? (file keys start with {sorted(state)[:3]})"
        )
    if strict and (report["missing"] or report["unexpected"] or report["skipped"]):
        raise ConfigError(
            f"Weights {source} do not fit the model exactly (strict=True): "
            f"missing {report['missing'][:5]}, unexpected {report['unexpected'][:5]}, "
            f"skipped {list(report['skipped'])[:5]}"
        )
    model.load_state_dict(to_load, strict=False)
    logger.info(
        "Loaded %d tensors from %s (%d adapted, %d skipped, %d missing, %d unexpected)",
        len(report["loaded"]), source, len(report["adapted"]), len(report["skipped"]),
        len(report["missing"]), len(report["unexpected"]),
    )  # fmt: skip
    return report
