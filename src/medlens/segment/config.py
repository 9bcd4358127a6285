"""The configuration of a segmentation run (saved as ``config.json`` in its run directory)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from medlens.errors import ConfigError
from medlens.train.config import TrainConfig
from medlens.train.ensemble import EnsembleSettings
from medlens.transforms.intensity import IntensityPolicy, PercentileWindow

# keep="last": the whole cosine schedule, final weights — choosing an epoch by Dice on one or two
# validation patients picked undertrained networks (leave-institution-out, README "Segmentation")
DEFAULT_TRAIN = {"epochs": 50, "batch_size": 16, "lr": 3e-3, "patience": 20, "scheduler": "cosine",
                 "keep": "last"}
#: Image-only augmentation for other scanners and sites, on by default since it was measured by
#: leave-one-institution-out CV on the LGG patients (README "Segmentation").
DEFAULT_ACQUISITION = {"gamma": 0.3, "bias_field": 0.3, "noise": 0.05, "blur": 1.0, "channel_copy": 0.15}


class SegmentConfig(EnsembleSettings):
    """Everything that defines a segmentation run (saved as ``config.json``)."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["segment"] = "segment"  # the key of the task union (medlens.tasks.config)
    data: str
    layout: str | None = None
    mask_pattern: str | None = None
    model: str = "unet"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    size: int | None = Field(128, ge=16, description="train on slices resized to size×size "
                                                      "(3D: every slice of a volume, in-plane)")
    loss: str = "dice_bce"
    pos_fraction: float | None = Field(0.5, gt=0, lt=1, description="share of lesion slices drawn "
                                                                     "(3D: of patches centred on a lesion voxel)")
    augment: bool = True
    threshold: float = Field(0.5, gt=0, lt=1)
    tta: Literal["none", "flip"] = Field(
        "flip", description="test-time augmentation: flip averages the probabilities of each input and its "
                            "left-right mirror (nnU-Net's mirroring); the package answers so everywhere")
    postprocess: Literal["auto", "none", "largest_component"] = Field(
        "auto", description="auto: keep the largest connected component per patient only if that "
                            "raises mean Dice on the validation patients (nnU-Net's rule)")
    val_fraction: float = Field(0.2, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    val_patients: list[str] | None = None
    test_patients: list[str] | None = None
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(**DEFAULT_TRAIN))
    spatial_dims: int = Field(2, description="2: U-Net on slices; 3: U-Net on volume patches")
    patch: list[int] | None = Field(
        None, description="3D only: training patch (D, H, W) in voxels, array order (slices, rows, "
                          "columns); None = 32×64×64, clipped to the smallest training volume")
    samples_per_volume: int = Field(4, ge=1, description="3D only: patches per training volume per epoch")
    augment_acquisition: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_ACQUISITION),
        description="image-only augmentation for new scanners/sites: random gamma, smooth bias field, "
        "noise, blur and a missing sequence (a channel replaced by another; see "
        "medlens.segment.task.SegmentAugment); {} = off")
    group_by: Literal["patient", "institution"] = Field(
        "patient", description="cross-validation: hold out whole patients, or whole institutions (sites) "
                               "— the test of a model meant for the next hospital")
    intensity: IntensityPolicy = Field(
        default_factory=PercentileWindow,
        description="how volume intensities become the network's input: percentile window (default, MRI), "
                    "fixed window in the file's units (CT in HU, e.g. {kind: fixed, lower: -1000, upper: 400}) "
                    "or z-score in the foreground; stored in the package and applied again at predict")

    slice_intensity: Literal["none", "patient"] = Field(
        "patient", description="2D slice files (e.g. Kaggle LGG .tif): 'patient' puts each patient's slices "
                            "through the intensity policy together, as one volume (nnU-Net's per-case "
                            "normalisation; at predict, the slices of one folder are one volume); "
                            "'none' feeds the stored values")

    @field_validator("spatial_dims")
    @classmethod
    def _check_dims(cls, v: int) -> int:
        if v not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 (slices) or 3 (volumes), got {v}")
        return v

    @field_validator("augment_acquisition")
    @classmethod
    def _check_acquisition(cls, v: dict[str, float]) -> dict[str, float]:
        limits = {"gamma": 1.0, "bias_field": 1.0, "noise": 0.5, "blur": 3.0, "channel_copy": 1.0}
        for key, val in v.items():
            if key not in limits:
                raise ValueError(f"unknown acquisition augmentation {key!r}; choose from {', '.join(limits)}")
            if not 0 <= float(val) <= limits[key]:
                raise ValueError(f"{key} must be between 0 and {limits[key]}, got {val}")
        return {k: float(x) for k, x in v.items()}

    @field_validator("patch")
    @classmethod
    def _check_patch(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 3 or any(int(s) < 1 for s in v)):
            raise ValueError(f"patch must be three positive sides (D, H, W), e.g. [32, 64, 64]; got {v}")
        return v

    def network_options(self) -> dict[str, Any]:
        """Options of ``create_model`` besides classes and channels: ``model_kwargs`` with
        ``spatial_dims``, which ``model_kwargs`` may not contradict."""
        kwargs = dict(self.model_kwargs)
        if kwargs.pop("spatial_dims", self.spatial_dims) != self.spatial_dims:
            raise ConfigError(f"model_kwargs.spatial_dims contradicts spatial_dims={self.spatial_dims}; "
                              "leave it out of model_kwargs")
        return {**kwargs, "spatial_dims": self.spatial_dims}

    @model_validator(mode="after")
    def _patch_needs_3d(self) -> SegmentConfig:
        if self.patch is not None and self.spatial_dims != 3:
            raise ValueError("patch is the 3D training patch; set spatial_dims=3 (--spatial-dims 3) "
                             "or leave patch out (2D trains on whole slices of side `size`)")
        return self


def make_config(**values: Any) -> SegmentConfig:
    """:class:`SegmentConfig` from user values; a bad value becomes one ConfigError line
    naming the field (the CLI prints it without a traceback)."""
    from pydantic import ValidationError

    from medlens.config_errors import invalid_config

    try:
        return SegmentConfig(**values)
    except ValidationError as e:
        raise invalid_config(e, what="segmentation config") from None


def parse_patch(text: str | list[int]) -> list[int]:
    """``"32,64,64"`` (or ``32x64x64``) → ``[32, 64, 64]``: the 3D patch (D, H, W) of ``--patch``."""
    if isinstance(text, list):
        return [int(v) for v in text]
    parts = [p for p in str(text).replace("x", ",").replace("×", ",").split(",") if p.strip()]
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) != 3 or min(sides) < 1:
        raise ConfigError(f"--patch must be three positive integers D,H,W (slices, rows, columns), "
                          f"e.g. 32,64,64; got {text!r}")
    return sides
