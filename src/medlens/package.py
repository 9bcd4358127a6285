"""The model package: everything needed to use a trained model, in one folder.

``<run>/model/`` holds ``weights.pt`` (state dict), ``metadata.json`` (task, classes,
architecture, input spec, preprocessing, normalisation, operating threshold,
temperature, metrics, versions) and ``model_card.md``. It is written atomically: a
reader sees the old package or the new one, never a mix.
"""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.errors import BadInputError
from medlens.io.atomic import atomic_write_dir, atomic_write_json, recover_dir
from medlens.io.weights import load_weights_file
from medlens.package_spec import FORMAT, FORMAT_VERSION, PackageSpec, parse_metadata
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
) -> Path:
    """Write ``model`` + ``metadata`` to ``out_dir`` atomically (folder swap).

    A reader finds the old package or the new one, never none, even if the process is
    killed mid-swap (see :func:`medlens.io.atomic.atomic_write_dir`).
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": versions(), **metadata,
            "model": {"name": model_name, "kwargs": model_kwargs}}

    def fill(tmp: Path) -> None:
        torch.save(state, tmp / WEIGHTS)
        if model_card:
            (tmp / CARD).write_text(model_card, encoding="utf-8")
        atomic_write_json(tmp / METADATA, meta)

    return atomic_write_dir(out_dir, fill)


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
        if cand is not None and (cand / METADATA).is_file() and (cand / WEIGHTS).is_file():
            return cand
    raise BadInputError(
        f"{p}: not a medlens model package (expected {METADATA} and {WEIGHTS} in it or in its model/ folder)"
    )


def load_package(path: str | Path, *, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from metadata and load its weights."""
    from medlens.models import create_model

    pkg = find_package(path)
    meta = read_metadata(pkg)
    model = create_model(meta["model"]["name"], **meta["model"]["kwargs"])
    state = load_weights_file(pkg / WEIGHTS, map_location=device)  # weights-only: no code runs
    if not isinstance(state, dict):
        raise BadInputError(f"{pkg / WEIGHTS}: expected a state dict of tensors, found {type(state).__name__}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, OSError) as e:
        raise BadInputError(f"{pkg / WEIGHTS}: weights do not load into {meta['model']['name']} ({e})") from None
    model.to(device).eval()
    return model, meta


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A package's ``metadata.json``, checked (no weights are read).

    Raises:
        BadInputError: no package at ``path``, or its metadata is unreadable or malformed.
    """
    pkg = find_package(path)
    try:
        meta = json.loads((pkg / METADATA).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BadInputError(f"{pkg / METADATA}: unreadable model metadata ({e})") from None
    parse_metadata(meta, pkg / METADATA)  # typed check: a malformed entry is named here
    return meta


class ModelPackage:
    """A loaded model package with prediction helpers (see :func:`medlens.load_model`)."""

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        self.path = find_package(path)
        self.model, self.metadata = load_package(self.path, device=device)
        self.device = torch.device(device)

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
