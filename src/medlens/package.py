"""The model package: everything needed to use a trained model, in one folder.

``<run>/model/`` holds ``weights.pt`` (state dict), ``metadata.json`` (task, classes,
architecture, input spec, preprocessing, normalisation, operating threshold,
temperature, metrics, versions) and ``model_card.md``. It is written atomically: a
reader sees the old package or the new one, never a mix.

A pipeline package holds several named networks ("stages") besides or instead of the one
model: ``metadata.json`` gets a ``stages`` mapping (name → network, weights file, input,
per-stage metadata) and each stage's state dict is ``stages/<name>.pt``. Save one with
``save_model_package(..., stages={...})`` or :func:`save_pipeline_package`; load a stage
with ``load_model(path).stage(name)``.
"""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from medlens.errors import BadInputError, ConfigError
from medlens.io.atomic import atomic_write_dir, atomic_write_json, recover_dir
from medlens.io.weights import load_weights_file
from medlens.package_spec import (
    FORMAT,
    FORMAT_VERSION,
    STAGE_NAME,
    STAGES_DIR,
    PackageSpec,
    StageSpec,
    parse_metadata,
)
from medlens.tasks.registry import Predictor, TaskSpec, task_of

WEIGHTS, METADATA, CARD = "weights.pt", "metadata.json", "model_card.md"


def versions() -> dict[str, str]:
    import monai

    from medlens.version import __version__

    return {"medlens": __version__, "torch": torch.__version__, "monai": monai.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def save_model_package(
    out_dir: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    model_kwargs: dict[str, Any],
    metadata: dict[str, Any],
    model_card: str | None = None,
    stages: Mapping[str, Stage | tuple[Any, ...]] | None = None,
) -> Path:
    """Write ``model`` + ``metadata`` to ``out_dir`` atomically (folder swap).

    A reader finds the old package or the new one, never none, even if the process is
    killed mid-swap (see :func:`medlens.io.atomic.atomic_write_dir`).

    Args:
        stages: more networks to ship in the same package, name → :class:`Stage` (or the
            tuple ``(module, model_name, model_kwargs[, stage_metadata])``); each one's
            weights go to ``stages/<name>.pt`` in the same atomic write. Without it the
            package is the single-model format, unchanged.
    """
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": versions(), **metadata,
            "model": {"name": model_name, "kwargs": model_kwargs}}
    return _write_package(out_dir, meta, model, stages, model_card)


class Stage(NamedTuple):
    """One network of a pipeline package, as given to :func:`save_model_package`.

    ``metadata`` is what the stage's entry in ``metadata.json`` holds besides its network
    and weights file: ``role``, ``description``, ``input`` (size, channels, spatial_dims,
    patch), ``threshold``, ``classes``… (:class:`~medlens.package_spec.StageSpec`).
    """

    module: nn.Module
    model_name: str
    model_kwargs: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None


def save_pipeline_package(
    out_dir: str | Path,
    stages: Mapping[str, Stage | tuple[Any, ...]],
    *,
    metadata: dict[str, Any],
    model_card: str | None = None,
) -> Path:
    """Write a package of several named networks and no primary model, atomically.

    ``metadata`` is the package-wide part (task, data fingerprint, …); the package's
    ``model`` entry is absent and :attr:`ModelPackage.model` is ``None``. See
    :func:`save_model_package` for ``stages``.
    """
    if not stages:
        raise ValueError("a pipeline package needs at least one stage")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": versions(), **metadata}
    if "model" in meta:
        raise ValueError("a pipeline package has no top-level 'model' entry (use save_model_package for one)")
    return _write_package(out_dir, meta, None, stages, model_card)


def _state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _write_package(out_dir: str | Path, meta: dict[str, Any], model: nn.Module | None,
                   stages: Mapping[str, Stage | tuple[Any, ...]] | None, model_card: str | None) -> Path:
    """Check the stages, then write weights, stage weights, card and metadata in one folder swap."""
    if "stages" in meta:
        raise ValueError("pass a package's extra networks as stages=…, not in metadata['stages']")
    files: dict[str, dict[str, torch.Tensor]] = {}
    if model is not None:
        files[WEIGHTS] = _state_dict(model)
    if stages:
        meta["stages"] = {}
        for name, given in stages.items():
            stage = given if isinstance(given, Stage) else Stage(*given)
            entry, rel = _stage_entry(name, stage)
            if rel.lower() in {f.lower() for f in files}:  # "A" and "a" share a file on some file systems
                raise ValueError(f"stage {name!r}: another stage already uses the file {rel}")
            meta["stages"][name] = entry
            files[rel] = _state_dict(stage.module)

    def fill(tmp: Path) -> None:
        if stages:
            (tmp / STAGES_DIR).mkdir()
        for rel, state in files.items():
            torch.save(state, tmp / rel)
        if model_card:
            (tmp / CARD).write_text(model_card, encoding="utf-8")
        atomic_write_json(tmp / METADATA, meta)

    return atomic_write_dir(out_dir, fill)


def _stage_entry(name: str, stage: Stage) -> tuple[dict[str, Any], str]:
    """The stage's ``metadata.json`` entry and its weights file, checked before anything is written."""
    from pydantic import ValidationError

    if not isinstance(name, str) or not STAGE_NAME.match(name):
        raise ValueError(f"stage name {name!r}: use letters, digits, '_', '-', '.' (not first), at most 64")
    if not isinstance(stage.module, nn.Module):
        raise TypeError(f"stage {name!r}: expected an nn.Module, found {type(stage.module).__name__}")
    extra = dict(stage.metadata or {})
    taken = sorted({"model", "weights"} & extra.keys())
    if taken:
        raise ValueError(f"stage {name!r}: its metadata may not set {', '.join(taken)} (the package writes them)")
    rel = f"{STAGES_DIR}/{name}.pt"
    entry = {**extra, "model": {"name": stage.model_name, "kwargs": dict(stage.model_kwargs or {})}, "weights": rel}
    try:
        StageSpec.model_validate(entry)
    except ValidationError as e:
        problems = "; ".join(f"'{'.'.join(map(str, err['loc'])) or 'entry'}' {err['msg']}" for err in e.errors())
        raise ValueError(f"stage {name!r}: malformed stage metadata ({problems})") from None
    return entry, rel


def find_package(path: str | Path) -> Path:
    """Accept a run directory, its ``model/`` folder, or the ``metadata.json`` file.

    A package whose save was killed mid-swap is put back first (:func:`recover_dir`).
    """
    p = Path(path)
    if p.name != METADATA:
        target = p / "model" if p.is_dir() and not (p / METADATA).exists() else p
        if not target.exists():
            restored = recover_dir(target)
            if restored is not None and restored != target:  # a read-only folder: read the leftover in place
                p = restored
    for cand in (p, p / "model", p.parent if p.name == METADATA else None):
        if cand is not None and (cand / METADATA).is_file() and (
                (cand / WEIGHTS).is_file() or (cand / STAGES_DIR).is_dir()):  # a pipeline may have no weights.pt
            return cand
    raise BadInputError(
        f"{p}: not a medlens model package (expected {METADATA} and {WEIGHTS} in it or in its model/ folder)"
    )


def load_package(path: str | Path, *, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from metadata and load its weights.

    Raises:
        BadInputError: as :func:`read_metadata`; the weights are not weights-only or do
            not fit the network; the package is a pipeline with no single model (load its
            networks with ``load_model(path).stage(name)``).
    """
    pkg = find_package(path)
    meta = read_metadata(pkg)
    if meta.get("model") is None:
        raise BadInputError(f"{pkg}: a pipeline package with no single model (stages: "
                            f"{', '.join(meta.get('stages') or {})}); load its networks with "
                            "medlens.load_model(path).stage(name)")
    return _load_network(pkg, meta["model"], WEIGHTS, device), meta


def _load_network(pkg: Path, entry: dict[str, Any], rel: str, device: str | torch.device,
                  what: str = "") -> nn.Module:
    """The registry network ``entry`` ({name, kwargs}) with the weights in ``pkg / rel``, in eval mode."""
    from medlens.models import create_model

    model = create_model(entry["name"], **(entry.get("kwargs") or {}))
    state = load_weights_file(pkg / rel, map_location=device)  # weights-only: no code runs
    if not isinstance(state, dict):
        raise BadInputError(f"{pkg / rel}: {what}expected a state dict of tensors, found {type(state).__name__}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, OSError) as e:
        raise BadInputError(f"{pkg / rel}: {what}weights do not load into {entry['name']} ({e})") from None
    model.to(device).eval()
    return model


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A package's ``metadata.json``, checked (no weights are read; their files must exist).

    Raises:
        BadInputError: no package at ``path``, its metadata is unreadable or malformed, or a
            weights file it names (``weights.pt``, a stage's ``stages/<name>.pt``) is missing.
    """
    pkg = find_package(path)
    try:
        meta = json.loads((pkg / METADATA).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BadInputError(f"{pkg / METADATA}: unreadable model metadata ({e})") from None
    spec = parse_metadata(meta, pkg / METADATA)  # typed check: a malformed entry is named here
    if spec.model is not None and not (pkg / WEIGHTS).is_file():
        raise BadInputError(f"{pkg / METADATA}: names a model but {WEIGHTS} is missing from {pkg}; "
                            "re-export the package with medlens")
    for name, stage in (spec.stages or {}).items():
        if not (pkg / stage.weights).is_file():
            raise BadInputError(f"{pkg / METADATA}: stage {name!r}: its weights file {stage.weights} is missing "
                                f"from {pkg}; re-export the package with medlens")
    return meta


class ModelPackage:
    """A loaded model package with prediction helpers (see :func:`medlens.load_model`)."""

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        self.path = find_package(path)
        self.device = torch.device(device)
        self.metadata: dict[str, Any] = read_metadata(self.path)
        entry = self.metadata.get("model")  # absent: a pipeline package of stages only
        self.model: nn.Module | None = None if entry is None else _load_network(self.path, entry, WEIGHTS, device)
        self._stages: dict[str, nn.Module] = {}

    # --- the stages of a pipeline package -----------------------------------------
    @property
    def stage_names(self) -> list[str]:
        """The package's stages in the order they were saved (empty for a single model)."""
        return list(self.metadata.get("stages") or {})

    def stage_spec(self, name: str) -> StageSpec:
        """Stage ``name``'s entry, typed: network, weights file, role, input, threshold…"""
        stages = self.package_spec.stages or {}
        if name not in stages:
            raise ConfigError(f"{self.path}: no stage {name!r} in this package (stages: "
                              f"{', '.join(stages) or 'none, a single-model package'})")
        return stages[name]

    def stage(self, name: str) -> nn.Module:
        """Stage ``name``'s network, rebuilt from the registry with its weights (loaded
        weights-only) in eval mode on the package's device; built once, then cached.

        Raises:
            ConfigError: the package has no such stage.
            BadInputError: its weights file holds code/objects or does not fit the network.
        """
        if name not in self._stages:
            spec = self.stage_spec(name)
            self._stages[name] = _load_network(self.path, self.metadata["stages"][name]["model"], spec.weights,
                                               self.device, what=f"stage {name!r}: ")
        return self._stages[name]

    # --- description -------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.metadata.get("task", "classify")

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @property
    def input_size(self) -> tuple[int, ...]:
        s = self.metadata["input"]["size"]
        return tuple(s) if isinstance(s, list) else (s, s)

    @property
    def in_channels(self) -> int:
        return int(self.metadata["input"]["channels"])

    @property
    def threshold(self) -> float | None:
        return self.metadata.get("threshold")

    @property
    def negative_class(self) -> int:
        return int(self.metadata.get("negative_class", 0))

    @property
    def temperature(self) -> float:
        return float(self.metadata.get("temperature", 1.0) or 1.0)

    # --- the task's predictor ----------------------------------------------------
    @property
    def task_spec(self) -> TaskSpec:
        """The registered task this package was trained for (:mod:`medlens.tasks`)."""
        return task_of(self.metadata)

    @functools.cached_property
    def package_spec(self) -> PackageSpec:
        """The metadata, typed (:class:`~medlens.package_spec.PackageSpec`)."""
        return PackageSpec.model_validate(self.metadata)

    @functools.cached_property
    def config(self) -> Any:
        """The typed run config the model was trained with (``None`` for older packages)."""
        from medlens.tasks.config import parse_config

        raw = self.metadata.get("config")
        return parse_config(raw, task=self.task, what=f"config in {self.path}") if raw else None

    @functools.cached_property
    def predictor(self) -> Predictor:
        """The task's predictor over this package (classify: probabilities and decisions;
        segment: masks)."""
        return self.task_spec.predictor(self)

    def load_images(self, paths: Sequence[str | Path]) -> list[np.ndarray]:
        """Read files the way this model was trained to see them."""
        return self.predictor.load_images(paths)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Images → the network's input batch (what explainers and probes feed it)."""
        return self.predictor.preprocess(images)

    # --- prediction --------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, images: Sequence[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
        """Calibrated class probabilities ``(N, K)`` (temperature-scaled softmax)."""
        if self.model is None:
            raise BadInputError(f"{self.path}: a pipeline package has no single model to predict with "
                                f"(stages: {', '.join(self.stage_names)}); use .stage(name)")
        out = []
        for i in range(0, len(images), batch_size):
            logits = self.model(self.preprocess(images[i : i + batch_size])).float()
            out.append(torch.softmax(logits / self.temperature, 1).cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, len(self.classes)))

    def call(self, probs: np.ndarray) -> np.ndarray:
        """Class indices at the package's operating point (the report's one call).

        With a threshold: the negative class when the disease score is below it, else the
        most probable disease class, so ``predicted`` always agrees with ``decision``.
        Without one (an argmax model): the most probable class.
        """
        from medlens.evaluate.operating_point import apply_threshold

        p = np.asarray(probs)
        if self.threshold is None or len(p) == 0:
            return p.argmax(axis=1) if len(p) else np.empty(0, dtype=np.int64)
        return apply_threshold(p, float(self.threshold), negative_class=self.negative_class)

    def predict(self, inputs: Sequence[str | Path | np.ndarray] | str | Path | np.ndarray,
                *, batch_size: int = 64) -> list[dict[str, Any]]:
        """Predict files, folders or arrays: one dict per input (unreadable files get ``error``);
        what a row holds is the task's (:meth:`predictor`)."""
        return self.predictor.predict(inputs, batch_size=batch_size)

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        """What the training images looked like (:mod:`medlens.data.fingerprint`); ``None``
        for packages saved before fingerprints were recorded."""
        return self.metadata.get("data_fingerprint") or None

    def read_checked(self, item: str | Path | np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """An input as the model reads it, and its ``ood``/``ood_score``/``ood_reasons``
        against the training fingerprint (empty when the package has none). Decodes once."""
        from medlens.data.fingerprint import array_stats, check, read_with_stats
        from medlens.io.images import read_image

        if self.fingerprint is None:
            return (item if isinstance(item, np.ndarray) else read_image(item)), {}
        if isinstance(item, np.ndarray):
            return item, check(array_stats(item), self.fingerprint).to_dict()
        stats, image = read_with_stats(item)
        return image, check(stats, self.fingerprint).to_dict()


def load_model(path: str | Path, *, device: str = "cpu") -> ModelPackage:
    """Load a model package for prediction: ``medlens.load_model(run_dir).predict(images)``."""
    return ModelPackage(path, device=device)
