"""The model package's files: write one atomically, find one, read and check it.

:mod:`medlens.package` is the loaded package (prediction, the task's predictor); this
module is the format on disk.

The model package: everything needed to use a trained model, in one folder.

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

import json
import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from medlens.errors import BadInputError
from medlens.io.atomic import atomic_write_dir, atomic_write_json, recover_dir
from medlens.io.weights import load_weights_file
from medlens.package_spec import (
    FORMAT,
    FORMAT_VERSION,
    STAGE_NAME,
    STAGES_DIR,
    StageSpec,
    parse_metadata,
)

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
    return load_network(pkg, meta["model"], WEIGHTS, device), meta


def load_network(pkg: Path, entry: dict[str, Any], rel: str, device: str | torch.device,
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
