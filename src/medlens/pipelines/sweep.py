"""``medlens sweep``: one training run per combination of config values, into one folder.

``DIR/<name>/`` is an ordinary run folder per combination (``name`` from its values, e.g.
``activation-elu_seed-1``), ``DIR/configs/<name>.json`` the config it was started from and
``DIR/sweep.json`` the index ``medlens compare DIR`` reads. The sweep is resumable: a
finished run (its package and metrics exist) is skipped, an interrupted one continues
from its checkpoint, so rerunning the same command finishes what is left.

Runs go through the task registry (``TaskSpec.train``), so any task with a config file
can be swept; a grid key is a config path (``model.activation``, ``train.lr``) or a field
name that one section owns (``seed`` → ``train.seed``, ``activation`` →
``model.activation``; a section alone, ``model``, means its ``name``).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlens.errors import ConfigError, MedlensError
from medlens.io.atomic import atomic_write_json

log = logging.getLogger(__name__)

SWEEP_INDEX = "sweep.json"
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


class _Unset(dict):
    """The options of a run started by a sweep: every command-line flag unset (``None``)."""

    def __missing__(self, key: str) -> None:
        return None


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["model.activation=relu,elu", "seed=0,1"]`` → ``{key: [values]}`` in the given order.

    Values are read as JSON when they parse (``1``, ``0.5``, ``true``), else kept as text.

    Raises:
        ConfigError: an item without ``=`` or values, or a key given twice.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = str(item).partition("=")
        key = key.strip()
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not vals:
            raise ConfigError(f"--grid {item!r}: expected key=v1,v2 (e.g. model.activation=relu,elu)")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one --grid")
        grid[key] = [_value(v) for v in vals]
    if not grid:
        raise ConfigError("--grid is required at least once, e.g. --grid model.activation=relu,elu")
    return grid


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _section(field: Any) -> Any:
    """The pydantic model of a config section (``None`` for a plain field)."""
    from pydantic import BaseModel

    ann = getattr(field, "annotation", None)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def config_path(key: str, config_model: Any) -> list[str]:
    """A grid key as a path into the config (see the module docstring).

    Raises:
        ConfigError: an unknown key (with the closest names) or one several sections own.
    """
    if "." in key or config_model is None:
        return key.split(".")
    fields = config_model.model_fields
    if key in fields:
        sub = _section(fields[key])
        return [key, "name"] if sub is not None and "name" in sub.model_fields else [key]
    owners = [s for s, f in fields.items() if _section(f) is not None and key in _section(f).model_fields]
    if len(owners) == 1:
        return [owners[0], key]
    if owners:
        raise ConfigError(f"--grid {key}: ambiguous, it is in {', '.join(owners)}; write e.g. {owners[0]}.{key}")
    import difflib

    known = [*fields, *(f"{s}.{n}" for s, f in fields.items() if _section(f) is not None
                        for n in _section(f).model_fields)]
    close = difflib.get_close_matches(key, known, n=3)
    raise ConfigError(f"--grid {key}: not a config key" + (f"; did you mean {', '.join(close)}?" if close else
                                                             "; use a dotted path such as train.lr"))


def run_name(values: dict[str, Any]) -> str:
    """A folder name from a combination's varying values: ``model.activation=elu, seed=1`` →
    ``activation-elu_seed-1``."""
    parts = [f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in values.items()]
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", "_".join(parts)).strip("-") or "run"


def _nested(path: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def is_finished(run: Path) -> bool:
    """A run whose package and metrics were written (a sweep skips it)."""
    return (run / "model" / "metadata.json").is_file() and (run / "metrics.json").is_file()


def plan_sweep(source: str | Path, grid: dict[str, list[Any]], *, config: str | Path | None = None,
               task: str | None = None, layout: str | None = None) -> dict[str, Any]:
    """What the sweep will run: the data, the task, one config per combination.

    ``source`` is DATA, or a config file (JSON/YAML) whose ``data.path`` names the data
    (then ``config`` must not also be given).
    """
    from medlens.pipelines.config import deep_update, load_config_file
    from medlens.tasks import detect_task, get_task

    src = Path(source)
    if src.is_file() and src.suffix.lower() in CONFIG_SUFFIXES:
        if config is not None:
            raise ConfigError(f"{src} is already a config file; drop --config or pass DATA as the first argument")
        base = load_config_file(src)
        data_entry = base.get("data")
        data = data_entry.get("path") if isinstance(data_entry, dict) else data_entry
        if not data:
            raise ConfigError(f"{src}: names no data (data.path); pass DATA instead and the file with --config")
        data = Path(str(data))
    else:
        base, data = (load_config_file(config) if config else {}), src
    if not data.exists():
        raise ConfigError(f"{data}: no such data folder or file")
    spec = get_task(task) if task else detect_task(data, layout)
    paths = {key: config_path(key, spec.config_model) for key in grid}
    varying = [k for k, v in grid.items() if len(v) > 1] or list(grid)  # what tells the runs apart
    runs = []
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo, strict=True))
        cfg = dict(base)
        for key, value in values.items():
            cfg = deep_update(cfg, _nested(paths[key], value))
        runs.append({"name": run_name({k: values[k] for k in varying}), "values": values, "config": cfg})
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError("two combinations give the same run name; use values that differ as text")
    return {"source": str(source), "data": str(data), "task": spec.name, "grid": grid,
            "paths": {k: ".".join(v) for k, v in paths.items()}, "runs": runs}


def run_sweep(source: str | Path, grid_items: Sequence[str], out: str | Path, *, config: str | Path | None = None,
              task: str | None = None, layout: str | None = None, device: str | None = None,
              dry_run: bool = False) -> dict[str, Any]:
    """Train every combination into ``out/<name>/`` and keep ``out/sweep.json`` up to date.

    Returns:
        The sweep index (``runs``: ``name``, ``values``, ``status`` done/skipped/failed/planned,
        ``seconds``, ``metrics`` — the task's headline numbers).

    Raises:
        ConfigError: a bad grid, or ``out`` holds a sweep of other data or another grid.
        The first failing run's error, after ``sweep.json`` records it as failed.
    """
    from medlens.io.lock import folder_lock
    from medlens.tasks import get_task

    out_dir = Path(out)
    plan = plan_sweep(source, parse_grid(grid_items), config=config, task=task, layout=layout)
    spec = get_task(plan["task"])
    index_path = out_dir / SWEEP_INDEX
    if index_path.is_file():
        old = json.loads(index_path.read_text(encoding="utf-8"))
        if old.get("data") != plan["data"] or old.get("grid") != plan["grid"]:
            raise ConfigError(f"{out_dir} holds a sweep of {old.get('data')} over {old.get('grid')}; "
                              "rerun with the same DATA and --grid to finish it, or choose another --out")
    index = {k: plan[k] for k in ("source", "data", "task", "grid", "paths")}
    index["runs"] = [{"name": r["name"], "values": r["values"], "status": "planned"} for r in plan["runs"]]
    if dry_run:
        return index
    with folder_lock(out_dir):
        for row, run in zip(index["runs"], plan["runs"], strict=True):
            run_dir = out_dir / run["name"]
            if is_finished(run_dir):
                row.update(status="done", skipped=True, metrics=_headline(run_dir))
                log.info("sweep: %s is finished, skipped", run["name"])
                continue
            cfg_file = out_dir / "configs" / f"{run['name']}.json"
            atomic_write_json(cfg_file, run["config"])
            resume = (run_dir / "config.json").is_file() and (run_dir / "checkpoints").is_dir()
            log.info("sweep: training %s (%s)%s", run["name"], run["values"], " — resumed" if resume else "")
            row["status"] = "running"
            _write_index(index_path, index)
            t0 = time.perf_counter()
            options = _Unset(device=device, layout=layout)
            try:
                spec.train(Path(plan["data"]), run_dir, None if resume else cfg_file, resume, options)
            except (MedlensError, KeyboardInterrupt) as e:
                row.update(status="failed", error=f"{type(e).__name__}: {e}")
                _write_index(index_path, index)
                raise
            row.update(status="done", skipped=False, seconds=round(time.perf_counter() - t0, 1),
                       metrics=_headline(run_dir))
            _write_index(index_path, index)
        _write_index(index_path, index)
    return index


def _write_index(path: Path, index: dict[str, Any]) -> None:
    atomic_write_json(path, {**index, "updated": time.strftime("%Y-%m-%d %H:%M:%S")})


def _headline(run_dir: Path) -> dict[str, Any]:
    """The run's headline numbers for the index (ROC-AUC, sensitivity, specificity, Dice…)."""
    try:
        m = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    keys = ("roc_auc", "sensitivity", "specificity", "balanced_accuracy", "dice", "mean_dice")
    return {k: m[k] for k in keys if isinstance(m.get(k), (int, float))}
