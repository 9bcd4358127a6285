"""The typed description of a model package: what ``metadata.json`` holds, checked on load.

One schema for every task: the network to rebuild, the task it was trained for, what it
expects of its input (size, channels, spatial dimensions, patch, intensity policy), how its
outputs become decisions (operating point for classifiers, threshold and post-processing
for segmenters), the fingerprint of its training data and where it came from. Fields a
task does not use stay empty; fields this version does not know are kept as they are
(``extra="allow"``), so a package written by a newer medlens still loads.

A package may also hold several named networks, a pipeline (``stages``: e.g. a candidate
segmenter, a nodule classifier and a malignancy classifier shipped together). Each stage
names its network, its own weights file under ``stages/`` in the package folder, its input
and any per-stage metadata (role, threshold, classes…). Such a package may have no
top-level ``model``; a single-model package is exactly what it was before stages.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from medlens.errors import BadInputError


def _positive(v: float | None) -> float | None:
    if v is not None and not v > 0:
        raise ValueError("must be > 0")
    return v


#: a softmax temperature (``None``: not calibrated): positive when given
Temperature = Annotated[float | None, AfterValidator(_positive)]

FORMAT = "medlens-model"
FORMAT_VERSION = 1
STAGES_DIR = "stages"  # the stage weights' folder inside a package
#: a stage name: it names the stage's weights file, so no separators, no leading dot
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ModelEntry(BaseModel):
    """The registered network (``medlens models``) and the arguments that rebuild it."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class InputSpec(BaseModel):
    """What the network takes: side(s) in pixels, channels, 2D or 3D, training patch."""

    model_config = ConfigDict(extra="allow")
    size: int | list[int] | None = None
    channels: int = Field(default=3, ge=1)
    spatial_dims: Literal[2, 3] = 2
    patch: list[int] | None = None
    divisor: int = Field(default=16, ge=1)


class StageSpec(BaseModel):
    """One network of a pipeline package: what to rebuild, where its weights are, what it
    takes and how its outputs are read (per-stage ``threshold``, ``classes``, …)."""

    model_config = ConfigDict(extra="allow")
    model: ModelEntry
    weights: str = Field(min_length=1)  # relative to the package folder: stages/<file>
    role: str | None = None
    description: str | None = None
    input: InputSpec = Field(default_factory=InputSpec)
    classes: list[str] = Field(default_factory=list)
    threshold: float | None = None
    temperature: Temperature = None
    postprocess: str | dict[str, Any] | None = None

    @field_validator("weights")
    @classmethod
    def _inside_stages_dir(cls, v: str) -> str:
        p = PurePosixPath(v)
        if ("\\" in v or p.is_absolute() or len(p.parts) != 2 or p.parts[0] != STAGES_DIR
                or p.name.startswith(".")):
            raise ValueError(f"must be a file in the package's {STAGES_DIR}/ folder ({STAGES_DIR}/<name>.pt), "
                             f"found {v!r}")
        return v


class PackageSpec(BaseModel):
    """A package's ``metadata.json``, typed (see the module docstring)."""

    model_config = ConfigDict(extra="allow")
    format: Literal["medlens-model"] = FORMAT
    format_version: int = Field(default=FORMAT_VERSION, ge=1)
    task: str = "classify"
    model: ModelEntry | None = None  # absent only in a pipeline package (``stages``)
    stages: dict[str, StageSpec] | None = None
    classes: list[str] = Field(default_factory=list)
    input: InputSpec = Field(default_factory=InputSpec)
    preprocess: dict[str, Any] = Field(default_factory=dict)
    normalize: dict[str, Any] | None = None
    threshold: float | None = None
    negative_class: int | None = None
    temperature: Temperature = None
    operating_point: dict[str, Any] | None = None
    postprocess: str | dict[str, Any] | None = None
    data_fingerprint: dict[str, Any] | None = None
    versions: dict[str, Any] | None = None
    config: dict[str, Any] | None = None  # the run config (medlens.tasks.config), packages since 0.1

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, v: dict[str, StageSpec] | None) -> dict[str, StageSpec] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must name at least one stage (or be left out)")
        bad = [n for n in v if not STAGE_NAME.match(n)]
        if bad:
            raise ValueError(f"stage name(s) {', '.join(map(repr, bad))} must be letters, digits, '_', '-', "
                             "'.' (not first), at most 64")
        files: dict[str, str] = {}
        for name, stage in v.items():
            if stage.weights in files:
                raise ValueError(f"stages {files[stage.weights]!r} and {name!r} share the weights file "
                                 f"{stage.weights}")
            files[stage.weights] = name
        return v

    @model_validator(mode="after")
    def _a_network(self) -> Self:
        if self.model is None and not self.stages:
            raise ValueError("needs a 'model' entry (or, for a pipeline package, 'stages')")
        return self


def parse_metadata(meta: Any, where: str | Path) -> PackageSpec:
    """``meta`` (the parsed JSON) as a :class:`PackageSpec`.

    Raises:
        BadInputError: naming ``where`` and every malformed entry, with what to do.
    """
    if not isinstance(meta, dict):
        raise BadInputError(f"{where}: model metadata must be a JSON object, found {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise BadInputError(f"{where}: not a medlens model package (format={meta.get('format')!r})")
    if isinstance(meta.get("format_version"), int) and meta["format_version"] > FORMAT_VERSION:
        raise BadInputError(f"{where}: package format {meta['format_version']} is newer than this medlens reads "
                            f"({FORMAT_VERSION}); upgrade medlens")
    try:
        return PackageSpec.model_validate(meta)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            keys = [str(k) for k in err.get("loc") or ()]
            msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
            msg = msg[:1].lower() + msg[1:]
            if len(keys) >= 2 and keys[0] == "stages":  # name the stage first: "stage 'nodule': 'model' …"
                parts.append(f"stage {keys[1]!r}: '{'.'.join(keys[2:]) or 'entry'}' {msg}")
            else:
                parts.append(f"'{'.'.join(keys) or 'metadata'}' {msg}")
        raise BadInputError(f"{where}: malformed model metadata ({'; '.join(parts)}); re-export the package "
                            "with medlens") from None
