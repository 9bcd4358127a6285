"""The task registry: tasks are entries; the CLI, the package and the pipelines dispatch
through them, and a new task plugs in with one registration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medlens.errors import BadInputError, ConfigError
from medlens.tasks import (
    Summary,
    TaskSpec,
    check_options,
    detect_task,
    get_task,
    register_task,
    task_names,
)
from medlens.tasks import registry as reg

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app():
    from medlens.cli.main import register_all

    return register_all()


def _save(out: Path, name: str, meta: dict) -> Path:
    from medlens.models import create_model
    from medlens.package import save_model_package

    torch.manual_seed(0)
    kwargs = {"num_classes": 1 if meta["task"] == "segment" else 2, "in_channels": 3}
    if meta["task"] == "segment":
        kwargs.pop("in_channels")
    model = create_model(name, **kwargs).eval()
    return Path(save_model_package(out, model, model_name=name, model_kwargs=kwargs, metadata=meta))


SEG_META = {"task": "segment", "classes": ["background", "lesion"], "threshold": 0.5,
            "input": {"channels": 3, "spatial_dims": 2, "divisor": 16}, "preprocess": {"resize": 32}}
CLS_META = {"task": "classify", "classes": ["benign", "malignant"], "input": {"size": 32, "channels": 3},
            "preprocess": {"size": 32, "channels": 3}, "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}


def test_builtin_tasks_and_a_typo_gets_did_you_mean():
    assert {"classify", "segment"} <= set(task_names())
    assert get_task("segment").name == "segment" and get_task("classify").priority < get_task("segment").priority
    with pytest.raises(ConfigError, match="Did you mean segment"):
        get_task("segmnt")


def test_detection_prefers_image_mask_pairs(tmp_path):
    from medlens.data.synthetic.brain import make_brain_mri_like

    make_brain_mri_like(tmp_path / "brain", patients=2, slices=3, size=32, seed=0)
    folder = tmp_path / "cls" / "a"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "x.png")
    assert detect_task(tmp_path / "brain").name == "segment"
    assert detect_task(tmp_path / "cls").name == "classify"


def test_options_of_another_task_are_refused_naming_it():
    with pytest.raises(ConfigError, match=r"--patch.*--task segment"):
        check_options(get_task("classify"), {"--patch": "8,32,32", "--lr": 0.1})
    with pytest.raises(ConfigError, match=r"--balance.*--task classify"):
        check_options(get_task("segment"), {"--balance": "sampler"})
    check_options(get_task("segment"), {"--patch": "8,32,32", "--balance": None})  # unset flags are fine


def test_load_model_predicts_for_every_task(tmp_path):
    """``medlens.load_model(...).predict`` answers a segmenter too: masks in memory, no files."""
    import medlens

    seg = _save(tmp_path / "seg" / "model", "test_unet", SEG_META)
    cls = _save(tmp_path / "cls" / "model", "test_cnn", CLS_META)
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(img)
    (tmp_path / "in" / "bad.png").write_text("no image")
    rows = medlens.load_model(seg.parent).predict([img, tmp_path / "in" / "bad.png"])
    assert rows[0]["mask"].shape == (40, 48) and rows[0]["mask"].dtype == bool
    assert rows[0]["probability"].shape == (40, 48) and "error" in rows[1]
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.png", "bad.png"]  # nothing written
    crow = medlens.load_model(cls.parent).predict([img])[0]
    assert crow["predicted"] in ("benign", "malignant") and 0 <= crow["disease_score"] <= 1


def test_malformed_metadata_names_the_entry(tmp_path):
    from medlens.package import load_model

    pkg = _save(tmp_path / "m", "test_cnn", CLS_META)
    meta = json.loads((pkg / "metadata.json").read_text())
    meta["input"]["channels"] = "three"
    (pkg / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match=r"metadata.json.*'input.channels'"):
        load_model(pkg)
    meta["input"]["channels"], meta["format_version"] = 3, 99
    (pkg / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="newer than this medlens reads"):
        load_model(pkg)


@pytest.fixture
def toy_task():
    """A task registered at run time, as another package would: what the CLI calls is its own."""
    calls: dict = {}

    def train(data, out, config, resume, options):
        calls["train"] = (Path(data), options["epochs"])
        out = Path(out)
        out.mkdir(parents=True)
        return {"toy_score": 0.75}, out

    spec = TaskSpec(
        name="toy", description="a toy task", detect=lambda data, layout: (Path(data) / "TOY").exists(),
        train=train, evaluate=lambda *a, **k: {}, predictor=lambda pkg: None,
        predict_files=lambda *a, **k: [], summary=lambda m: Summary("toy metrics", ["metric", "value"],
                                                                    [["toy score", f"{m['toy_score']:.2f}"]]),
        predict_table=lambda pkg, rows: Summary("", [], []), demo=lambda *a, **k: Path("."),
        options=frozenset({"--toy-knob"}), priority=50)
    register_task(spec)
    yield calls
    reg._registered.pop("toy", None)


def test_a_registered_task_is_trained_by_the_cli(app, toy_task, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "TOY").write_text("")
    assert "toy" in task_names() and detect_task(data).name == "toy"
    res = CliRunner().invoke(app, ["train", str(data), "--epochs", "3", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert toy_task["train"] == (data, 3)
    assert "recognised as toy data" in res.output and "toy score" in res.output and "0.75" in res.output


def test_unknown_task_on_the_cli_is_a_usage_error(app, tmp_path):
    res = CliRunner().invoke(app, ["train", str(tmp_path), "--task", "detect"])
    assert res.exit_code == 2 and "is not a task" in res.output and "classify" in res.output


def test_structure_has_no_cycles_private_imports_or_task_dispatch():
    """The shared structure check (import cycles / private reach-ins / ``task ==`` outside tasks)."""
    import subprocess
    import sys

    tool = REPO.parent / "shared" / "tools" / "structure_check.py"
    if not tool.is_file():
        pytest.skip(f"{tool} not found (it ships in ../shared)")
    out = subprocess.run([sys.executable, str(tool), str(REPO / "src" / "medlens")], capture_output=True,
                         text=True, check=True).stdout
    counts = {ln.split()[0]: int(ln.split()[1]) for ln in out.splitlines() if ln and not ln.startswith(" ")}
    assert counts == {"cycles": 0, "private_imports": 0, "task_string_dispatch": 0}, out
