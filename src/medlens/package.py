"""A loaded model package: the network, its typed metadata and the task's predictor.

The files and their format (writing, finding, reading, checking) are
:mod:`medlens.package_io`; the names it defines are re-exported here, so
``from medlens.package import save_model_package`` keeps working.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.errors import BadInputError, ConfigError
from medlens.package_io import (
    CARD,
    METADATA,
    WEIGHTS,
    Stage,
    find_package,
    load_network,
    load_package,
    read_metadata,
    save_model_package,
    save_pipeline_package,
    versions,
)
from medlens.package_spec import PackageSpec, StageSpec
from medlens.tasks.registry import Predictor, TaskSpec, task_of

__all__ = ["CARD", "METADATA", "TTA_MODES", "WEIGHTS", "ModelPackage", "Stage", "check_tta", "find_package",
           "load_model", "load_package", "read_metadata", "save_model_package", "save_pipeline_package", "tta_views",
           "versions"]

#: Test-time augmentation of a classifier: ``none``, or ``flip`` — the probabilities
#: averaged over the image and its horizontal and vertical mirror images.
TTA_MODES = ("none", "flip")
TTA_DESCRIPTION = {"none": "none", "flip": "mean of the probabilities over the image, its horizontal and its "
                   "vertical flip"}


def check_tta(mode: str) -> str:
    """``mode`` if it is one of :data:`TTA_MODES` (any case), else a usage error naming them."""
    from medlens.options import look_up_option

    return look_up_option(mode, TTA_MODES, what="--tta (test-time augmentation)")


def tta_views(x: Any, mode: str) -> list[Any]:
    """The views of a batch that ``mode`` averages over; ``x`` is ``(..., H, W)`` (a tensor
    or a numpy array, channel-first): ``[x]``, or ``[x, x flipped along W, x flipped along H]``."""
    if check_tta(mode) == "none":
        return [x]
    if isinstance(x, torch.Tensor):
        return [x, x.flip(-1), x.flip(-2)]
    a = np.asarray(x)
    return [a, np.ascontiguousarray(a[..., ::-1]), np.ascontiguousarray(a[..., ::-1, :])]


class ModelPackage:
    """A loaded model package with prediction helpers (see :func:`medlens.load_model`)."""

    def __init__(self, path: str | Path, *, device: str = "cpu", tta: str = "none") -> None:
        self.tta = check_tta(tta)
        self.path = find_package(path)
        self.device = torch.device(device)
        self.metadata: dict[str, Any] = read_metadata(self.path)
        entry = self.metadata.get("model")  # absent: a pipeline package of stages only
        self.model: nn.Module | None = None if entry is None else load_network(self.path, entry, WEIGHTS, device)
        self._stages: dict[str, nn.Module] = {}
        if self.tta != "none" and not self.is_classifier:
            raise ConfigError(f"--tta {self.tta}: test-time augmentation is for classifier packages; {self.path} "
                              f"is a {self.task} package")

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
            self._stages[name] = load_network(self.path, self.metadata["stages"][name]["model"], spec.weights,
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

    @property
    def is_classifier(self) -> bool:
        """Whether this package answers with class probabilities per image: one network, two
        or more classes and a negative class for its disease score (what a classify run
        writes), what TTA and ``medlens calibrate`` work on."""
        return self.model is not None and len(self.metadata.get("classes") or []) >= 2 and \
            self.metadata.get("negative_class") is not None

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
    def predict_proba(self, images: Sequence[np.ndarray], *, batch_size: int = 64,
                      tta: str | None = None) -> np.ndarray:
        """Calibrated class probabilities ``(N, K)`` (temperature-scaled softmax); with
        test-time augmentation (``tta``, default the package's :attr:`tta`) the mean of
        those over the views of :func:`tta_views`."""
        if self.model is None:
            raise BadInputError(f"{self.path}: a pipeline package has no single model to predict with "
                                f"(stages: {', '.join(self.stage_names)}); use .stage(name)")
        mode = self.tta if tta is None else check_tta(tta)
        out = []
        for i in range(0, len(images), batch_size):
            views = tta_views(self.preprocess(images[i : i + batch_size]), mode)
            probs = [torch.softmax(self.model(v).float() / self.temperature, 1) for v in views]
            out.append(torch.stack(probs).mean(0).cpu().numpy())
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
        what a row holds is the task's (:meth:`predictor`), plus ``tta`` when test-time
        augmentation is on."""
        rows = self.predictor.predict(inputs, batch_size=batch_size)
        if self.tta != "none":
            for r in rows:
                if "error" not in r:
                    r["tta"] = self.tta
        return rows

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


def load_model(path: str | Path, *, device: str = "cpu", tta: str = "none") -> ModelPackage:
    """Load a model package for prediction: ``medlens.load_model(run_dir).predict(images)``;
    ``tta="flip"`` averages a classifier's probabilities over flips (:data:`TTA_MODES`)."""
    return ModelPackage(path, device=device, tta=tta)
