"""`medlens segment-cv DATA`: an alias of ``medlens cv DATA --task segment`` (the same options),
kept so that existing commands still run; the command itself is :mod:`medlens.cli.crossval`.

(``medlens train DATA --task segment``, ``evaluate`` and ``predict`` are wired in the
spine's commands and call :mod:`medlens.segment.workflow` / :mod:`medlens.segment.predict`.)
"""

from __future__ import annotations

import inspect
from typing import Any, get_type_hints

from medlens.cli.app import app
from medlens.cli.crossval import cv_cmd


def segment_cv(**options: Any) -> None:
    """Alias of `medlens cv --task segment`: leave-patients-out cross-validation of a segmentation
    model; train on some patients, test on patients never seen; mean per-patient-volume Dice."""
    cv_cmd(task="segment", **options)


# the options of `medlens cv`, less --task
_signature = inspect.signature(cv_cmd, eval_str=True)
segment_cv.__signature__ = _signature.replace(  # type: ignore[attr-defined]
    parameters=[p for name, p in _signature.parameters.items() if name != "task"])
segment_cv.__annotations__ = {k: v for k, v in get_type_hints(cv_cmd).items() if k != "task"}
app.command("segment-cv")(segment_cv)
