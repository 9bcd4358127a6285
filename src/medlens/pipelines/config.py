"""The resolved run configuration (saved as ``config.json`` in every run directory)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medlens.errors import ConfigError
from medlens.train.config import TrainConfig
from medlens.train.ensemble import EnsembleSettings
from medlens.transforms.augment import AugmentConfig
from medlens.transforms.preprocess import PreprocessConfig


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    layout: str | None = None
    label_column: str | None = None
    path_column: str | None = None
    patient_column: str | None = None
    split_column: str | None = None
    patient_table: str | None = None
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    group_by_patient: bool = True
    group_by: str = Field("patient", description="cross-validation: what each fold holds out whole — patient, "
                          "institution, a manifest column, or regex:<pattern> (medlens.data.groups)")
    exclude: str | None = Field(None, description="file listing paths to leave out (from `medlens audit --exclude-list`)")
    audit: bool = Field(True, description="run a quick audit before training")
    ignore_audit: bool = Field(False, description="train even when the audit finds blocking problems")
    allow_outside_paths: bool = Field(False, description="accept manifest paths outside the data folder")


    @field_validator("group_by")
    @classmethod
    def _known_grouping(cls, v: str) -> str:
        from medlens.data.groups import parse_group_by

        try:
            return parse_group_by(v).name
        except ConfigError as e:
            raise ValueError(str(e)) from None


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "cancernet"
    pretrained: str | None = Field(None, description="local weights file, or a named source that installs "
                                   "offline ('imagenet' for efficientnet_lite0/1/2)")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    activation: str | None = Field(None, description="hidden-layer activation of medlens' own CNNs (relu, elu, "
                                   "selu, gelu, silu); none: the model's own (ReLU)")

    def model_post_init(self, context: Any, /) -> None:
        """``activation`` travels to the factory (and into the package) as ``kwargs.activation``."""
        if self.activation is None:
            return
        given = self.kwargs.get("activation", self.activation)
        if given != self.activation:
            raise ConfigError(f"model.activation {self.activation!r} and model.kwargs.activation {given!r} "
                              "disagree; set one of them")
        self.kwargs["activation"] = self.activation


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_sensitivity: float = Field(0.95, gt=0, le=1)
    negative_class: str | None = Field(None, description="the healthy/normal/benign class; guessed from names")
    patient_aggregate: Literal["mean", "max", "topk"] = "mean"
    topk: int = Field(5, ge=1)
    n_bootstrap: int = Field(1000, ge=0)
    samples_in_report: int = Field(16, ge=0)


class RunConfig(EnsembleSettings):
    model_config = ConfigDict(extra="forbid")

    task: Literal["classify"] = "classify"  # the key of the task union (medlens.tasks.config)
    data: DataConfig
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    balance: Literal["weighted_loss", "sampler", "none"] = "weighted_loss"


def build_run_config(values: dict[str, Any]) -> RunConfig:
    """Validate ``values`` (config file merged with flags) into a :class:`RunConfig`.

    Raises:
        ConfigError: one line naming each bad flag (``--lr``) or config key (``train.lr``).
    """
    from pydantic import ValidationError

    from medlens.config_errors import invalid_config

    try:
        return RunConfig(**values)
    except ValidationError as e:
        raise invalid_config(e, what="run config") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict (validated later by RunConfig)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config ({e})") from None
    try:
        if p.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as e:  # yaml and json raise different types
        raise ConfigError(f"{p}: invalid config file ({' '.join(str(e).split())})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{p}: a config file holds sections such as 'train: {{epochs: 5}}', "
                          f"found a {type(values).__name__}")
    return values


def deep_update(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in other.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def nest_options(flat: dict[str, Any]) -> dict[str, Any]:
    """Flat option values → config overrides by section (``{"train": {"epochs": 3}}``);
    ``None`` values (an option not given) are left out."""
    owners: dict[str, str] = {}
    for sec, model in (("data", DataConfig), ("preprocess", PreprocessConfig), ("train", TrainConfig),
                       ("eval", EvalConfig)):
        for name in model.model_fields:
            owners.setdefault(name, sec)
    out: dict[str, Any] = {}
    for k, v in flat.items():
        if v is not None:
            out.setdefault(owners[k], {})[k] = v
    return out
