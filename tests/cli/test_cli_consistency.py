"""One CLI: short flags with one meaning, defaults in every --help, --device wherever a
model runs, --version, and `medlens models` without the test stand-ins.

What a user types is run through the installed console script (``.venv/bin/medlens``)
as a subprocess; only introspection of the declared options runs in-process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

MODEL_COMMANDS = ("train", "cv", "segment-cv", "evaluate", "predict", "explain", "probe", "demo")


def _script() -> Path:
    return Path(sys.executable).with_name("medlens")


def medlens(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = _script()
    if not exe.is_file():
        pytest.skip(f"console script {exe} not installed (pip install -e .)")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MEDLENS_DEBUG", None)
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _commands() -> dict:
    import typer

    from medlens.cli.main import register_all

    return typer.main.get_command(register_all()).commands  # type: ignore[attr-defined]


def _options(cmd) -> list:  # noqa: ANN001
    """The command's options (typer vendors click; its classes are private, their kind is not)."""
    return [p for p in cmd.params if p.param_type_name == "option" and p.name != "help"]


# --- --version --------------------------------------------------------------------------
def test_version_prints_medlens_torch_and_monai_versions():
    from medlens import __version__

    res = medlens("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (f"medlens {__version__} (torch {version('torch')}, "
                                  f"monai {version('monai')})")


# --- short flags --------------------------------------------------------------------------
def test_every_short_flag_has_one_meaning():
    meaning: dict[str, set[str]] = {}
    for cmd in _commands().values():
        for opt in _options(cmd):
            longs = [o for o in opt.opts if o.startswith("--")]
            for short in (o for o in opt.opts if not o.startswith("--")):
                meaning.setdefault(short, set()).update(longs)
    clashes = {s: sorted(m) for s, m in meaning.items() if len(m) != 1}
    assert clashes == {}
    assert meaning["-m"] == {"--model"} and meaning["-o"] == {"--out"}


def test_every_command_with_a_model_or_output_uses_the_same_letters():
    for name, cmd in _commands().items():
        for opt in _options(cmd):
            if "--model" in opt.opts:
                assert "-m" in opt.opts, name
            if "--out" in opt.opts:
                assert "-o" in opt.opts, name


def test_dash_m_means_model_through_the_console_script(tmp_path):
    """`-m` names a model (an unknown one is a usage error naming it); on explain, where the
    model is the first argument, `-m` is no longer the method."""
    res = medlens("segment-cv", str(tmp_path), "-m", "unett", cwd=tmp_path)  # refused before reading DATA
    assert res.returncode == 2, res.stderr
    assert "unett" in res.stderr and "unet" in res.stderr and "Traceback" not in res.stderr
    res = medlens("explain", str(tmp_path / "pkg"), str(tmp_path / "x.png"), "-m", "gradcam", cwd=tmp_path)
    assert res.returncode == 2 and "-m" in res.stderr and "Traceback" not in res.stderr


# --- defaults in --help -------------------------------------------------------------------
def _help_blocks(text: str) -> dict[str, str]:
    """``--option`` → its rows in the Options panel of a rich --help page."""
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"[│|]\s+(--[\w-]+)", line)
        if m:
            current = m.group(1)
            blocks[current] = line
        elif current and line.startswith(("│", "|")):
            blocks[current] += " " + line
        else:
            current = None
    return blocks


@pytest.mark.parametrize("name", sorted(["inspect", "audit", "train", "cv", "segment-cv", "evaluate", "predict",
                                         "explain", "probe", "models", "demo"]))
def test_help_shows_a_default_for_every_option(name):
    cmd = _commands()[name]
    res = medlens(name, "--help")
    assert res.returncode == 0, res.stderr
    blocks = _help_blocks(res.stdout)
    missing = []
    for opt in _options(cmd):
        long = next(o for o in opt.opts if o.startswith("--"))
        assert long in blocks, f"{long} not in `medlens {name} --help`"
        if not opt.is_flag and "[default:" not in blocks[long]:  # a switch is off unless given
            missing.append(long)
    assert missing == [], f"`medlens {name} --help` shows no default for {missing}"


def test_recipe_defaults_in_help_are_the_ones_runs_use():
    """The texts of options filled by a recipe mirror the recipes and config classes."""
    from medlens.cli import options as o
    from medlens.pipelines.config import DataConfig, EvalConfig, ModelConfig, RunConfig
    from medlens.pipelines.recipes import RECIPES
    from medlens.segment.config import DEFAULT_TRAIN, SegmentConfig
    from medlens.train.config import TrainConfig
    from medlens.transforms.preprocess import PreprocessConfig

    where = {"model": ("model", "name"), "size": ("preprocess", "size"), "equalize": ("preprocess", "equalize"),
             "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
             "patience": ("train", "patience")}
    for key, (section, field) in where.items():
        recipe = {layout: r[section][field] for layout, r in RECIPES.items() if field in r.get(section, {})}
        shown = {k: v for k, v in o.RECIPE[key].items() if not isinstance(v, str) or key in ("model", "equalize")}
        assert shown == recipe, key
    assert "size" not in RECIPES["medmnist"].get("preprocess", {})  # medmnist: the file's own side
    defaults = {"model": ModelConfig().name, "size": PreprocessConfig().size, "equalize": PreprocessConfig().equalize,
                **{k: getattr(TrainConfig(), k) for k in ("epochs", "batch_size", "lr", "patience")}}
    assert o.UNMATCHED == defaults
    seg = SegmentConfig(data="x")
    assert o.SEGMENT == {"model": seg.model, "size": seg.size, "val_fraction": seg.val_fraction,
                         "test_fraction": seg.test_fraction,
                         **{k: DEFAULT_TRAIN[k] for k in ("epochs", "batch_size", "lr")},
                         "patience": o.SEGMENT["patience"]}
    assert DEFAULT_TRAIN["keep"] == "last" and o.SEGMENT["patience"].startswith("off: every epoch")
    run = RunConfig(data=DataConfig(path="x"))
    assert o.CLASSIFY == {"val_fraction": run.data.val_fraction, "test_fraction": run.data.test_fraction,
                          "channels": run.preprocess.channels, "scheduler": run.train.scheduler,
                          "seed": run.train.seed, "balance": run.balance,
                          "target_sensitivity": EvalConfig().target_sensitivity,
                          "patient_aggregate": EvalConfig().patient_aggregate}
    assert o.by_layout("epochs") == ("from the recipe: 20 for idc and csv, 15 for medmnist, patient_table and "
                                     "imagefolder, 10 otherwise; segment: 50")


# --- --device -------------------------------------------------------------------------------
def test_device_option_on_every_command_that_runs_a_model():
    cmds = _commands()
    for name in MODEL_COMMANDS:
        opts = [opt for opt in _options(cmds[name]) if "--device" in opt.opts]
        assert len(opts) == 1, name


def test_unknown_device_is_a_usage_error_before_any_work(tmp_path):
    res = medlens("predict", str(tmp_path / "no_package"), str(tmp_path / "x.png"), "--device", "gpu")
    assert res.returncode == 2, res.stderr
    assert "--device" in res.stderr and "'gpu'" in res.stderr and "cpu" in res.stderr
    assert "Traceback" not in res.stderr


def test_cuda_without_cuda_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = medlens("explain", str(tmp_path / "no_package"), str(tmp_path / "x.png"), "--device", "cuda:0")
    assert res.returncode == 2, res.stderr
    assert "CUDA is not available" in res.stderr and "--device cpu" in res.stderr


def test_check_device(monkeypatch):
    import torch

    from medlens.errors import ConfigError
    from medlens.options import check_device, resolve_device

    assert check_device(" CPU ") == "cpu" and check_device("auto") == "auto"
    for bad in ("gpu", "cpu:1", "cuda:x", "cuda:-1", ""):
        with pytest.raises(ConfigError, match="--device"):
            check_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="CUDA is not available"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1" and resolve_device("auto") == "cuda"
    with pytest.raises(ConfigError, match="2 CUDA device"):
        check_device("cuda:2")


# --- medlens models --------------------------------------------------------------------------
def test_models_lists_descriptions_and_kinds_without_test_models():
    res = medlens("models")
    assert res.returncode == 0, res.stderr
    rows = {m.group(1): line for line in res.stdout.splitlines() if (m := re.match(r"│ (\w+)\s+│", line))}
    assert {"cancernet", "resnet18", "unet"} <= set(rows)
    assert not [n for n in rows if n.startswith("test_") or n == "ensemble"]
    assert "2D classify" in rows["cancernet"] and "2D/3D segment" in rows["unet"]
    assert "IDC" in rows["cancernet"]  # its one-line description
    every = medlens("models", "--all")
    assert every.returncode == 0 and "test_cnn" in every.stdout and "ensemble" in every.stdout


def test_every_listed_model_has_a_description_and_kind():
    from medlens.models import describe_models

    listed = describe_models()
    assert listed and all(r["description"] and r["kind"] for r in listed)
    assert all(not r["hidden"] for r in listed)
    hidden = {r["name"] for r in describe_models(include_hidden=True)} - {r["name"] for r in listed}
    assert {"test_cnn", "test_unet", "test_resnet", "test_cancernet", "ensemble"} <= hidden


def test_registry_hidden_and_description_rules():
    from medlens.models import describe_models
    from medlens.models.registry import MODELS, register_model

    names = ("test_zz_hidden", "zz_shown", "zz_described")
    try:
        register_model("test_zz_hidden")(lambda **kw: None)

        def zz_shown(**kw):  # noqa: ANN003, ANN202
            """A network for the registry test.

            More words that are not part of the listing."""

        register_model("zz_shown", family="unet")(zz_shown)
        register_model("zz_described", description="Given here.", spatial_dims=(2, 3))(lambda **kw: None)
        rows = {r["name"]: r for r in describe_models("*zz*")}
        assert set(rows) == {"zz_shown", "zz_described"}
        assert rows["zz_shown"]["description"] == "A network for the registry test."
        assert rows["zz_shown"]["kind"] == "2D/3D segment"
        assert rows["zz_described"] == {"name": "zz_described", "description": "Given here.",
                                        "kind": "2D/3D classify", "hidden": False}
    finally:
        for n in names:
            MODELS._items.pop(n, None)


def test_models_pattern_that_matches_nothing_is_a_usage_error():
    res = medlens("models", "nothing-like-this*")
    assert res.returncode == 2 and "nothing-like-this*" in res.stderr
