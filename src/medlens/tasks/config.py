"""One typed run config for every task: a pydantic union keyed on ``task``.

Each registered task names its config model (``TaskSpec.config_model``, whose ``task``
field is the task's name as a literal); this module validates a mapping (a run's
``config.json``, a ``--config`` file merged with flags, a package's ``config`` entry) into
the right one, and every validation error becomes the same one-line usage error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from medlens.errors import ConfigError
from medlens.tasks.registry import all_tasks, get_task


def config_adapter() -> TypeAdapter:
    """A ``TypeAdapter`` of the discriminated union of every registered task's config."""
    models = tuple(spec.config_model for spec in all_tasks() if spec.config_model is not None)
    union = models[0] if len(models) == 1 else Annotated[Union[models], Field(discriminator="task")]  # noqa: UP007
    return TypeAdapter(union)


def parse_config(values: dict[str, Any], *, task: str | None = None, what: str = "run config") -> BaseModel:
    """``values`` as the config model of its task (``values["task"]``, else ``task``, else classify).

    Raises:
        ConfigError: unknown task, or one line naming every invalid flag or key.
    """
    from medlens.config_errors import invalid_config

    name = str(values.get("task") or task or "classify")
    spec = get_task(name)
    if spec.config_model is None:
        raise ConfigError(f"task {name} has no config model")
    try:
        return spec.config_model.model_validate({**values, "task": name})
    except ValidationError as e:
        raise invalid_config(e, what=what) from None


def load_run_config(run_dir: str | Path, *, task: str | None = None) -> BaseModel:
    """The typed config a run folder was trained with (``config.json``), for ``--resume``.

    Raises:
        ConfigError: no ``config.json`` (not a run folder), unreadable, or written for
            another task than ``task``.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"--resume needs --out pointing at an existing run directory (with config.json); "
                          f"{path} not found")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable run config ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a run config must be a JSON object")
    found = str(values.get("task") or "classify")
    if task is not None and found != task:
        raise ConfigError(f"{run_dir} is a {found} run, not a {task} run; resume it with --task {found}")
    return parse_config(values, what=f"run config {path}")


def run_config_or_resume(data: str | Path, out: str | Path | None, *, task: str, resume: bool,
                         make: Callable[[], BaseModel]) -> tuple[BaseModel, Path]:
    """The config and run folder of ``medlens train DATA --task TASK``: with ``resume``, the
    config saved in ``out``; else ``make()`` (flags over a config file) and ``out`` or
    ``runs/<data>-<task>-<time>``. One rule for every task's CLI entry.

    Raises:
        ConfigError: ``resume`` without ``out``, or ``out`` is not a ``task`` run folder.
    """
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out pointing at an existing run directory (with config.json)")
        return load_run_config(out, task=task), Path(out)
    cfg = make()
    if out is None:
        out = Path("runs") / f"{Path(data).name}-{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg, Path(out)
