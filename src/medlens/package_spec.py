"""The typed description of a model package: what ``metadata.json`` holds, checked on load.

One schema for every task: the network to rebuild, the task it was trained for, what it
expects of its input (size, channels, spatial dimensions, patch, intensity policy), how its
outputs become decisions (operating point for classifiers, threshold and post-processing
for segmenters), the fingerprint of its training data and where it came from. Fields a
task does not use stay empty; fields this version does not know are kept as they are
(``extra="allow"``), so a package written by a newer medlens still loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medlens.errors import BadInputError

FORMAT = "medlens-model"
FORMAT_VERSION = 1


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


class PackageSpec(BaseModel):
    """A package's ``metadata.json``, typed (see the module docstring)."""

    model_config = ConfigDict(extra="allow")
    format: Literal["medlens-model"] = FORMAT
    format_version: int = Field(default=FORMAT_VERSION, ge=1)
    task: str = "classify"
    model: ModelEntry
    classes: list[str] = Field(default_factory=list)
    input: InputSpec = Field(default_factory=InputSpec)
    preprocess: dict[str, Any] = Field(default_factory=dict)
    normalize: dict[str, Any] | None = None
    threshold: float | None = None
    negative_class: int | None = None
    temperature: float | None = None
    operating_point: dict[str, Any] | None = None
    postprocess: str | dict[str, Any] | None = None
    data_fingerprint: dict[str, Any] | None = None
    versions: dict[str, Any] | None = None

    @field_validator("temperature")
    @classmethod
    def _positive_temperature(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError("must be > 0")
        return v


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
            loc = ".".join(str(k) for k in err.get("loc") or ()) or "metadata"
            parts.append(f"'{loc}' {str(err.get('msg', 'is invalid')).lower()}")
        raise BadInputError(f"{where}: malformed model metadata ({'; '.join(parts)}); re-export the package "
                            "with medlens") from None
