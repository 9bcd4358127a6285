"""Model registry and factory: ``@register_model`` where a network is defined,
``create_model(name, ...)`` to build it, ``list_models("resnet*")`` to discover.

Modelled on timm's ``_registry.py`` / ``_factory.py``. Every model built here takes
``(B, C, H, W)`` (or ``(B, C, D, H, W)`` with ``spatial_dims=3``) float input and
returns logits ``(B, num_classes)``; it carries ``medlens_name``, ``cam_layer`` (dotted
name of the default CAM target, for ``model.get_submodule``) and ``medlens_config``
(the JSON-able arguments that rebuild it).

Names starting with ``timm/`` (e.g. ``timm/resnet18``) are built by timm, an optional
extra imported only when such a name is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlens.errors import ConfigError
from medlens.registry import Registry

logger = logging.getLogger(__name__)

TIMM_PREFIX = "timm/"
_BUILTIN_MODULES = ("medlens.models.cnn", "medlens.models.backbones", "medlens.models.ensemble",
                    "medlens.models.efficientnet_lite")
_OPTIONAL_MODULES = ("medlens.segment.models", "medlens.ct.classifier", "medlens.ct.ranker", "medlens.mil.model")
_TIMM_HINT = (
    'timm is not installed. Install the extra with `pip install "medlens[timm]"`; timm '
    "needs torchvision, and on CPU machines only the pair torch==2.14.1 with "
    "torchvision==0.29.1 loads together (e.g. `pip install torch==2.14.1 "
    'torchvision==0.29.1 "medlens[timm]"`). The built-in MONAI backbones '
    "(resnet18, densenet121, efficientnet_b0, ...) need neither."
)


@dataclass(frozen=True)
class ModelEntry:
    """A registered factory with the metadata trainers, explainers and ``medlens models`` need."""

    name: str
    factory: Callable[..., Any]
    input_size: int | None
    family: str
    channels_last: bool
    cam_layer: str | None
    description: str | None = None  # one line; None: the factory's first docstring line
    hidden: bool = False  # tiny test stand-ins and internal builders: `medlens models --all`
    task: str = "classify"  # "classify" or "segment"
    spatial_dims: tuple[int, ...] = (2,)  # what medlens trains it on (2: images/slices, 3: volumes)
    #: named weight sources (``--pretrained imagenet``) → a function giving the local file
    weights: dict[str, Callable[[], Path]] = field(default_factory=dict)
    normalize: dict[str, list[float]] | None = None  # input normalisation the named weights expect
    head: str | None = None  # the classifier module (fine-tuning: warm-up, its own learning rate)

    @property
    def summary(self) -> str:
        """The one-line description: the registered one, else the docstring's first sentence."""
        if self.description:
            return self.description
        doc = (getattr(self.factory, "__doc__", None) or "").strip()
        para = " ".join(line.strip() for line in doc.split("\n\n", 1)[0].splitlines())
        first = para.split(". ", 1)[0]
        return (first if first.endswith(".") else first + ".").replace("``", "") if first else ""

    @property
    def kind(self) -> str:
        """What it takes and does, e.g. ``"2D classify"`` or ``"2D/3D segment"``."""
        return "/".join(f"{d}D" for d in self.spatial_dims) + f" {self.task}"


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(
    name: str,
    *,
    input_size: int | None = None,
    family: str = "cnn",
    channels_last: bool = False,
    cam_layer: str | None = None,
    description: str | None = None,
    hidden: bool | None = None,
    task: str | None = None,
    spatial_dims: tuple[int, ...] | None = None,
    weights: dict[str, Callable[[], Path]] | None = None,
    normalize: dict[str, list[float]] | None = None,
    head: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a model factory under ``name``.

    The factory is called as ``factory(num_classes=..., in_channels=...,
    spatial_dims=..., **options)`` and returns an ``nn.Module``. If it declares an
    ``input_size`` parameter, the registered default is passed when the user gives none.

    Args:
        name: registry name (lower case, no ``timm/`` prefix).
        input_size: default square input side in pixels (``None``: any).
        family: architecture family, e.g. ``"cnn"``, ``"resnet"``, ``"unet"``.
        channels_last: whether training is faster in ``torch.channels_last`` (measured).
        cam_layer: default CAM target; used when the built model sets none itself.
        description: one line for ``medlens models`` (default: the docstring's first line).
        hidden: leave it out of ``medlens models`` unless ``--all`` (default: names
            starting with ``test_``, the tiny stand-ins of the test suite).
        task: ``"classify"`` or ``"segment"`` (default: segment for family ``"unet"``).
        spatial_dims: dimensionalities medlens trains it on (default: ``(2, 3)`` for
            segmenters, ``(2,)`` for classifiers).
        weights: named weight sources that install offline (``{"imagenet": fn}``, ``fn()``
            returning the local file), chosen with ``pretrained="imagenet"``.
        normalize: the input normalisation (``mean``/``std`` per RGB channel on [0, 1]) the
            named weights were trained with; a run that loads them uses it.
        head: name of the classifier module (a fine-tuning recipe warms it up first).
    """
    if name.startswith(TIMM_PREFIX):
        raise ValueError(f"model names starting with {TIMM_PREFIX!r} are reserved for timm")

    kind = task or ("segment" if family == "unet" else "classify")
    if kind not in ("classify", "segment"):
        raise ValueError(f"task must be 'classify' or 'segment', got {task!r}")
    dims = tuple(spatial_dims or ((2, 3) if kind == "segment" else (2,)))
    hide = name.startswith("test_") if hidden is None else hidden

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        entry = ModelEntry(name, factory, input_size, family, channels_last, cam_layer,
                           description, hide, kind, dims, dict(weights or {}), normalize, head)
        MODELS.register(name)(entry)
        return factory

    return deco


def import_builtin_models() -> None:
    """Import the modules whose decorators fill the registry (idempotent)."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for module in _OPTIONAL_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if found:
            importlib.import_module(module)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (timm names excluded)."""
    import_builtin_models()
    return MODELS.names(pattern)


def describe_models(pattern: str = "*", *, include_hidden: bool = False) -> list[dict[str, Any]]:
    """``name``, ``description`` and ``kind`` of the models matching ``pattern``, by name.

    Hidden entries (test stand-ins, internal builders) only with ``include_hidden``.
    """
    import_builtin_models()
    entries = (MODELS.get(n) for n in MODELS.names(pattern))
    return [{"name": e.name, "description": e.summary, "kind": e.kind, "hidden": e.hidden}
            for e in entries if include_hidden or not e.hidden]


def model_info(name: str) -> dict[str, Any]:
    """Metadata of a model: ``input_size``, ``family``, ``channels_last``, ``cam_layer``.

    ``cam_layer`` is read from a throw-away instance built on the ``meta`` device
    (no memory, no weights) when the registration did not state it.
    """
    if name.startswith(TIMM_PREFIX):
        return {
            "name": name,
            "input_size": None,
            "family": "timm",
            "channels_last": False,
            "cam_layer": None,
        }
    import_builtin_models()
    entry = MODELS.get(name)
    cam_layer = entry.cam_layer
    if cam_layer is None:
        import torch

        with torch.device("meta"):
            cam_layer = create_model(entry.name, num_classes=2).cam_layer
    return {
        "name": entry.name,
        "input_size": entry.input_size,
        "family": entry.family,
        "channels_last": entry.channels_last,
        "cam_layer": cam_layer,
        "weights": sorted(entry.weights),  # named sources: --pretrained imagenet
        "normalize": entry.normalize,
        "head": entry.head,
    }


def _check_int(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{what} must be an integer >= {low}, got {value!r}")
    return value


_SKIP = object()


def _jsonable(value: Any) -> Any:
    """Value as JSON (tuples → lists), or ``_SKIP`` when it cannot be saved as such."""
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        items = [_jsonable(v) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else items
    if isinstance(value, dict):  # e.g. an ensemble's member configs
        out = {str(k): _jsonable(v) for k, v in value.items()}
        return _SKIP if any(v is _SKIP for v in out.values()) else out
    return _SKIP


def _last_conv_name(model: Any) -> str:
    """Dotted name of the last convolution: the fallback CAM target."""
    from torch import nn

    names = [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    return names[-1] if names else ""


def _call_factory(entry: ModelEntry, options: dict[str, Any]) -> Any:
    params = inspect.signature(entry.factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "input_size" not in params and not takes_any:
        options.pop("input_size", None)  # a size hint; models that need none ignore it
    if not takes_any:
        unknown = sorted(set(options) - set(params))
        if unknown:
            accepted = sorted(k for k in params if k not in ("num_classes", "in_channels"))
            raise ConfigError(
                f"model {entry.name!r} does not accept option(s) {unknown}; accepted: {accepted}"
            )
    if "input_size" in params and options.get("input_size") is None:
        options["input_size"] = entry.input_size
    return entry.factory(**options)


def _create_timm(
    name: str, num_classes: int, in_channels: int, pretrained: bool, spatial_dims: int, **kwargs
) -> Any:
    if spatial_dims != 2:
        raise ConfigError(f"timm models are 2D only; got spatial_dims={spatial_dims} for {name!r}")
    try:
        import timm
    except ImportError as err:
        raise ConfigError(f"Cannot build {name!r}: {_TIMM_HINT}") from err
    arch = name[len(TIMM_PREFIX) :]
    if not timm.is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise ConfigError(f"Unknown timm model {arch!r}.{hint}")
    kwargs.pop("input_size", None)
    try:
        model = timm.create_model(
            arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels, **kwargs
        )
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise ConfigError(
            f"Could not fetch pretrained timm weights for {arch!r} ({err}). Without network "
            "access, pass a local weights file: pretrained='/path/to/weights.pth'."
        ) from err
    feature_info = getattr(model, "feature_info", None)
    if feature_info:
        model.cam_layer = feature_info[-1]["module"]
    return model


def create_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    pretrained: str | Path | bool | None = None,
    spatial_dims: int = 2,
    **kwargs: Any,
) -> Any:
    """Build a registered model (or a ``timm/<arch>`` one) and optionally load weights.

    Args:
        name: registry name (see :func:`list_models`) or ``"timm/<arch>"``.
        num_classes: number of output logits.
        in_channels: input channels (1 for X-rays / CT, 3 for RGB).
        pretrained: path of a local weights file (``.pt/.pth/.bin/.safetensors``),
            loaded with channel adaptation and head skipping (see
            :func:`medlens.models.pretrained.load_pretrained`); ``True`` only for
            ``timm/*`` names (hub download); ``None``/``False`` for random init.
        spatial_dims: 2 for images, 3 for volumes.
        **kwargs: model options. ``input_size`` (square side in pixels) is accepted by
            every model as a hint: ResNet/DenseNet/MobileNetV3 pick a small-image stem at
            ``<= 64``; size-agnostic models ignore it.

    Returns:
        ``nn.Module`` mapping ``(B, in_channels, *spatial)`` to ``(B, num_classes)``.

    Raises:
        ConfigError: unknown name (with "did you mean"), bad option or weights request.
    """
    _check_int(num_classes, "num_classes", 1)
    _check_int(in_channels, "in_channels", 1)
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if not isinstance(pretrained, (str, Path, bool, type(None))):
        raise ConfigError(f"pretrained must be a path, True/False or None, got {pretrained!r}")
    weights_path = None if isinstance(pretrained, (bool, type(None))) else Path(pretrained)
    source = None  # a named weight source of the entry ("imagenet"), resolved to its local file

    if name.startswith(TIMM_PREFIX):
        model = _create_timm(
            name, num_classes, in_channels, pretrained is True, spatial_dims, **kwargs
        )
        canonical = name
    else:
        import_builtin_models()
        entry = MODELS.get(name)
        canonical = entry.name
        if pretrained is True:
            raise ConfigError(
                f"pretrained=True is only available for timm/* models; {canonical!r} has no "
                "download source. Pass a local weights file instead: "
                "pretrained='/path/to/weights.pth' (.pt/.pth/.bin/.safetensors)."
            )
        if isinstance(pretrained, str) and not Path(pretrained).exists() and (
                pretrained in entry.weights or pretrained.lower() == "imagenet"):
            if pretrained not in entry.weights:
                named = ", ".join(n for n in list_models() if MODELS.get(n).weights) or "none"
                raise ConfigError(f"{canonical!r} has no {pretrained!r} weights that install offline; "
                                  f"models that do: {named}. Or pass a local weights file.")
            source, weights_path = pretrained, entry.weights[pretrained]()
        options = dict(kwargs, num_classes=num_classes, in_channels=in_channels)
        options["spatial_dims"] = spatial_dims
        model = _call_factory(entry, options)
        if not getattr(model, "cam_layer", None):
            model.cam_layer = entry.cam_layer or _last_conv_name(model)
    if not getattr(model, "cam_layer", None):
        model.cam_layer = _last_conv_name(model)
    model.medlens_name = canonical
    model.medlens_config = {
        "name": canonical,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "spatial_dims": spatial_dims,
        **{k: _jsonable(v) for k, v in kwargs.items() if _jsonable(v) is not _SKIP},
    }
    if weights_path is not None:
        from medlens.models.pretrained import load_pretrained

        model.pretrained_report = load_pretrained(model, weights_path)
        if source is not None:
            model.pretrained_report["named_source"] = source
    return model
