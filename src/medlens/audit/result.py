"""What an audit found: :class:`AuditResult`, shared by the audit run that fills it and
the report (:mod:`medlens.audit.report`) that renders and writes it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medlens.audit.stats import ClassHistograms


@dataclass
class AuditResult:
    """Everything the audit found. ``blocking`` lists reasons ``medlens train`` must stop."""

    summary: dict[str, Any]
    files: dict[str, Any]
    duplicates: dict[str, Any]
    stats: dict[str, Any]
    shortcut: dict[str, Any]
    confounding: dict[str, Any]
    outliers: dict[str, Any]
    warnings: list[str]
    blocking: list[str]
    exclude: list[str]
    timings: dict[str, float]
    table: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    histograms: ClassHistograms | None = field(default=None, repr=False)
    label_names: dict[str, Any] = field(default_factory=dict)  # rare / near-duplicate classes
    thumbnails: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.blocking

    def to_dict(self) -> dict[str, Any]:
        keys = ("summary", "blocking", "warnings", "files", "label_names", "duplicates", "confounding",
                "shortcut", "stats", "outliers", "exclude", "timings")  # fmt: skip
        return {k: getattr(self, k) for k in keys}

    def to_json(self) -> dict[str, Any]:
        """The findings as plain JSON types (what ``audit.json`` holds)."""
        return json.loads(self.dumps(indent=None))

    def dumps(self, indent: int | None = 2) -> str:
        from medlens.io.atomic import json_default

        return json.dumps(self.to_dict(), indent=indent, default=json_default)

