"""One data path for 2D and 3D segmentation: the data view.

Training (:func:`medlens.segment.workflow.fit_segmenter`) and package evaluation
(:func:`medlens.segment.evaluation.evaluate_package`) see the decoded data only through a
:class:`SegmentView`. The spatial dimensionality picks the view, in one place
(:func:`view_type`), and nothing else in those flows depends on it:

* :class:`SliceView` (``spatial_dims=2``): axial slices (:class:`~medlens.segment.data.SliceSet`),
  shuffled slice batches with lesion slices oversampled (``BatchLoader``), whole-slice inference.
* :class:`VolumeView` (``spatial_dims=3``): whole volumes (:class:`~medlens.segment.volumes.VolumeSet`),
  random patches (:class:`~medlens.segment.volumes.PatchLoader`), sliding-window inference with
  the training patch.

Both give each patient's probability volume ``(D, H, W)`` in slice order (a 2D patient's
slices stacked) with its truth, so the output-bias prior, the post-processing choice, the
per-patient metrics and the report's slices are computed once for both
(:meth:`ViewSteps.evaluate`, :meth:`ViewSteps.foreground`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medlens.data.records import DatasetIndex, Problem
from medlens.errors import BadInputError, ConfigError
from medlens.segment.data import SliceSet, build_slices, sampling_weights
from medlens.segment.models import divisor
from medlens.segment.predict import predict_slices, predict_volume
from medlens.segment.volumes import (
    PatchLoader,
    VolumeBatches,
    VolumeSet,
    build_volumes,
    require_volume_layout,
    resolve_patch,
)

logger = logging.getLogger(__name__)

Rows = dict[str, dict[str, float]]


@runtime_checkable
class SegmentView(Protocol):
    """What training and evaluation need of segmentation data, whatever its spatial dims.

    ``parts`` maps a split name (``train``/``val``/``test``, or ``all`` for an evaluated
    data set) to its decoded patients; ``window`` is the sliding window validation runs
    with (``None``: whole inputs). ``predict`` yields ``(patient, probabilities, truth)``,
    both ``(D, H, W)`` in slice order; ``report`` turns a part and its probabilities into the
    slice stack the report draws.
    """

    spatial_dims: int
    parts: dict[str, Any]
    problems: list[Problem]
    window: tuple[int, ...] | None

    @property
    def channels(self) -> int: ...
    def train_loader(self, tc: Any) -> Any: ...
    def val_loader(self, tc: Any) -> Any: ...
    def predict(self, model: Any, part: str, *, device: Any = "cpu") -> Iterator[tuple[str, np.ndarray, np.ndarray]]: ...
    def truths(self, part: str) -> Iterator[np.ndarray]: ...
    def foreground(self, part: str = "train") -> float: ...
    def resplit(self, splits: Mapping[str, list[str]]) -> Any: ...
    def score(self, predictions: Iterable[tuple[str, np.ndarray, np.ndarray]], part: str, *, threshold: float,
              postprocess: str | None = None) -> tuple[Rows, SliceSet, np.ndarray]: ...
    def evaluate(self, model: Any, part: str, *, threshold: float, device: Any = "cpu",
                 postprocess: str | None = None) -> tuple[Rows, SliceSet, np.ndarray]: ...
    def report(self, part: str, probs: Mapping[str, np.ndarray]) -> tuple[SliceSet, np.ndarray]: ...
    def counts(self) -> dict[str, Any]: ...
    def input_meta(self, model: Any) -> dict[str, Any]: ...


class ViewSteps:
    """The steps both views share: they read the data only through ``predict``/``truths``."""

    parts: dict[str, Any]

    def predict(self, model: Any, part: str, *, device: Any = "cpu") -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def truths(self, part: str) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def report(self, part: str, probs: Mapping[str, np.ndarray]) -> tuple[SliceSet, np.ndarray]:
        raise NotImplementedError

    def resplit(self, splits: Mapping[str, list[str]]) -> Any:
        """The same decoded data under other splits (an ensemble member's folds): a shallow
        copy whose parts are selected again, nothing decoded twice."""
        import copy

        view = copy.copy(self)
        view.parts = _parts(self.data, splits)
        return view

    def foreground(self, part: str = "train") -> float:
        """Share of lesion voxels in ``part`` (the output-bias prior). Counts are exact in
        float64, so this is the one rounding of count / voxels however the part is held."""
        truths = list(self.truths(part))
        return sum(float(t.sum()) for t in truths) / sum(t.size for t in truths)

    def evaluate(self, model: Any, part: str, *, threshold: float, device: Any = "cpu",
                 postprocess: str | None = None) -> tuple[Rows, SliceSet, np.ndarray]:
        """Full per-patient metrics (Dice, IoU, HD95 in mm, volume error, lesion detection)
        of ``part`` after the post-processing rule (removed voxels get probability 0), and
        the report's slices with their probabilities."""
        return self.score(self.predict(model, part, device=device), part, threshold=threshold,
                          postprocess=postprocess)

    def score(self, predictions: Iterable[tuple[str, np.ndarray, np.ndarray]], part: str, *, threshold: float,
              postprocess: str | None = None) -> tuple[Rows, SliceSet, np.ndarray]:
        """:meth:`evaluate` of given ``(patient, probabilities, truth)`` of ``part``'s patients
        (a fold ensemble's out-of-fold predictions, each patient by the member that did not
        train on it)."""
        from medlens.segment.metrics import dice, per_patient
        from medlens.segment.postprocess import POSTPROCESS, apply_postprocess, postprocess_probs

        spacing = self.parts[part].spacing
        rows: Rows = {}
        probs: dict[str, np.ndarray] = {}
        for pid, prob, truth in predictions:
            # what every post-processing rule would have given: the rule is chosen on validation
            # patients, so a cross-validation can judge that choice on the held-out ones
            kept = {rule: apply_postprocess(prob >= threshold, rule) for rule in POSTPROCESS}
            dice_if = {f"dice_if_{rule}": dice(mask, truth.astype(bool)) for rule, mask in kept.items()}
            probs[pid] = prob = postprocess_probs(prob, threshold, postprocess, keep=kept.get(postprocess or "none"))
            rows.update(per_patient(prob >= threshold, truth.astype(bool), np.full(len(truth), pid),
                                    spacing=spacing.get(pid)))
            rows[pid].update(dice_if)
        slices, stacked = self.report(part, probs)
        return rows, slices, stacked


def _parts(data: Any, splits: Mapping[str, list[str]] | None) -> dict[str, Any]:
    return {"all": data} if splits is None else {k: data.select(v) for k, v in splits.items()}


class SliceView(ViewSteps):
    """2D: a U-Net on axial slices, batches of slices, one forward per slice batch."""

    spatial_dims = 2
    fingerprint_images = 300  # training images fingerprinted for the OOD guard
    title = "Segmentation"

    def __init__(self, slices: SliceSet, splits: Mapping[str, list[str]] | None = None, *, size: int | None,
                 divisor: int | None = None, pos_fraction: float | None = None) -> None:
        self.data, self.parts, self.problems = slices, _parts(slices, splits), slices.problems
        self.size, self.divisor, self.pos_fraction = size, divisor, pos_fraction
        self.window: tuple[int, ...] | None = None

    @staticmethod
    def check_layout(index: DatasetIndex) -> None:
        """Every layout holds slices."""

    @classmethod
    def for_training(cls, cfg: Any, index: DatasetIndex, splits: Mapping[str, list[str]], *,
                     cache_dir: Path | None = None) -> SliceView:
        view = cls(build_slices(index, size=cfg.size, cache_dir=cache_dir, intensity=cfg.intensity,
                                slice_intensity=cfg.slice_intensity), splits,
                   size=cfg.size, pos_fraction=cfg.pos_fraction)
        if len(view.parts["train"]) == 0:
            raise BadInputError(f"{cfg.data}: no readable training slices")
        return view

    @classmethod
    def for_package(cls, meta: Mapping[str, Any], index: DatasetIndex) -> SliceView:
        pre = meta.get("preprocess", {})
        slices = build_slices(index, size=pre.get("resize"), channels=int(meta["input"]["channels"]),
                              intensity=pre.get("intensity"), slice_intensity=pre.get("slice_intensity", "none"))
        return cls(slices, size=pre.get("resize"), divisor=int(meta["input"].get("divisor", 16)))

    @property
    def channels(self) -> int:
        return int(self.data.images.shape[1])

    def _loader(self, sl: SliceSet, *, batch_size: int, shuffle: bool, seed: int) -> Any:
        from medlens.train.loader import BatchLoader

        codes = np.unique(sl.patients, return_inverse=True)[1].astype(np.int64)
        w = sampling_weights(sl.positive, self.pos_fraction) if shuffle else None
        return BatchLoader({"image": sl.images, "mask": sl.masks, "patient": codes},
                           batch_size=batch_size, shuffle=shuffle, seed=seed, weights=w,
                           drop_last=shuffle and len(sl) > batch_size)

    def train_loader(self, tc: Any) -> Any:
        return self._loader(self.parts["train"], batch_size=tc.batch_size, shuffle=True, seed=tc.seed)

    def val_loader(self, tc: Any) -> Any:
        return self._loader(self.parts["val"], batch_size=tc.batch_size, shuffle=False, seed=tc.seed)

    def predict(self, model: Any, part: str, *, device: Any = "cpu") -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        sl = self.parts[part]
        div = self.divisor if self.divisor is not None else divisor(model)
        probs = predict_slices(model, sl.images, resize=self.size, divisor=div, device=device)
        for pid in dict.fromkeys(sl.patients.tolist()):
            sel = sl.patients == pid
            yield pid, probs[sel], sl.masks[sel, 0]

    def truths(self, part: str) -> Iterator[np.ndarray]:
        sl = self.parts[part]
        return (sl.masks[sl.patients == p, 0] for p in dict.fromkeys(sl.patients.tolist()))

    def report(self, part: str, probs: Mapping[str, np.ndarray]) -> tuple[SliceSet, np.ndarray]:
        sl = self.parts[part]
        out = np.zeros((len(sl), *sl.masks.shape[-2:]), np.float32)
        for pid, prob in probs.items():
            out[sl.patients == pid] = prob
        return sl, out

    def counts(self) -> dict[str, Any]:
        return {"slices": {k: len(v) for k, v in self.parts.items()}}

    def input_meta(self, model: Any) -> dict[str, Any]:
        shape = list(self.data.images.shape[-2:])
        return {"channels": self.channels, "size": shape, "divisor": divisor(model), "spatial_dims": 2,
                "patch": shape if self.size is None else None}


class VolumeView(ViewSteps):
    """3D: a U-Net on random patches of whole volumes, sliding-window inference with the patch."""

    spatial_dims = 3
    fingerprint_images = 16
    title = "Segmentation 3D"

    def __init__(self, volumes: VolumeSet, splits: Mapping[str, list[str]] | None = None, *,
                 patch: tuple[int, ...] | list[int], samples_per_volume: int = 4,
                 pos_fraction: float | None = 0.5) -> None:
        self.data, self.parts, self.problems = volumes, _parts(volumes, splits), volumes.problems
        self.window: tuple[int, ...] | None = tuple(int(p) for p in patch)
        self.samples_per_volume, self.pos_fraction = samples_per_volume, pos_fraction

    check_layout = staticmethod(require_volume_layout)

    @classmethod
    def for_training(cls, cfg: Any, index: DatasetIndex, splits: Mapping[str, list[str]], *,
                     cache_dir: Path | None = None) -> VolumeView:
        """Whole volumes (decoded in memory; ``cache_dir`` is not used) and the training
        patch: ``cfg.patch`` clipped to the smallest training volume, in multiples of the
        architecture's divisor."""
        import torch

        from medlens.models.registry import create_model

        view = cls(build_volumes(index, size=cfg.size, intensity=cfg.intensity,
                                 slice_intensity=cfg.slice_intensity), splits, patch=(),
                   samples_per_volume=cfg.samples_per_volume, pos_fraction=cfg.pos_fraction)
        if len(view.parts["train"]) == 0:
            raise BadInputError(f"{cfg.data}: no readable training volume")
        if len(view.parts["val"]) == 0:
            raise BadInputError(f"{cfg.data}: no readable validation volume")
        with torch.device("meta"):  # only the divisor of the architecture is needed here
            probe = create_model(cfg.model, num_classes=1, in_channels=view.channels, **cfg.network_options())
        view.window = resolve_patch(cfg.patch, view.parts["train"].shapes, divisor(probe))
        return view

    @classmethod
    def for_package(cls, meta: Mapping[str, Any], index: DatasetIndex) -> VolumeView:
        pre = meta.get("preprocess", {})
        vols = build_volumes(index, size=pre.get("resize"), channels=int(meta["input"]["channels"]),
                             intensity=pre.get("intensity"), slice_intensity=pre.get("slice_intensity", "none"))
        return cls(vols, patch=meta["input"]["patch"])

    @property
    def channels(self) -> int:
        return self.data.channels

    @property
    def patch(self) -> list[int]:
        return list(self.window or ())

    def train_loader(self, tc: Any) -> Any:
        loader = PatchLoader(self.parts["train"], patch=self.patch, batch_size=tc.batch_size,
                             samples_per_volume=self.samples_per_volume, pos_fraction=self.pos_fraction,
                             seed=tc.seed)
        logger.info("3D training: %d train volumes, patch %s (D, H, W), %d batches per epoch",
                    len(self.parts["train"]), tuple(self.patch), len(loader))
        return loader

    def val_loader(self, tc: Any) -> Any:
        return VolumeBatches(self.parts["val"])

    def predict(self, model: Any, part: str, *, device: Any = "cpu") -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for pid, image, mask in self.parts[part]:
            yield pid, predict_volume(model, image, patch=self.patch, device=device), mask

    def truths(self, part: str) -> Iterator[np.ndarray]:
        return iter(self.parts[part].masks)

    def report(self, part: str, probs: Mapping[str, np.ndarray]) -> tuple[SliceSet, np.ndarray]:
        vols = self.parts[part]
        sl, stacked = vols.as_slices([probs[p] for p in vols.patients])
        return sl, stacked  # type: ignore[return-value]

    def counts(self) -> dict[str, Any]:
        return {"volumes": {k: len(v) for k, v in self.parts.items()},
                "slices": {k: int(sum(s[0] for s in v.shapes)) for k, v in self.parts.items()},
                "patch": self.patch}

    def input_meta(self, model: Any) -> dict[str, Any]:
        return {"channels": self.channels, "size": self.patch, "divisor": divisor(model), "spatial_dims": 3,
                "patch": self.patch}


VIEWS: dict[int, type[SliceView] | type[VolumeView]] = {2: SliceView, 3: VolumeView}


def view_type(spatial_dims: int) -> type[SliceView] | type[VolumeView]:
    """The view of ``spatial_dims`` (2: slices, 3: volumes): the one place the
    dimensionality chooses anything in training and evaluation."""
    try:
        return VIEWS[int(spatial_dims)]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"spatial_dims must be 2 (slices) or 3 (volumes), got {spatial_dims!r}") from None


def training_view(cfg: Any, index: DatasetIndex, splits: Mapping[str, list[str]], *,
                  cache_dir: Path | None = None) -> SegmentView:
    """The decoded data of a run (``cfg``: a :class:`~medlens.segment.config.SegmentConfig`)."""
    return view_type(cfg.spatial_dims).for_training(cfg, index, splits, cache_dir=cache_dir)


def package_view(meta: Mapping[str, Any], index: DatasetIndex) -> SegmentView:
    """All of ``index`` decoded as the package with metadata ``meta`` was trained (part ``all``)."""
    return view_type(meta.get("input", {}).get("spatial_dims", 2)).for_package(meta, index)
