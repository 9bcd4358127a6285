"""One typed run config: a union keyed on ``task``, validated in one place, saved in the run
folder and the package, read back for ``--resume``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medlens.errors import ConfigError
from medlens.pipelines.config import RunConfig
from medlens.segment.config import SegmentConfig
from medlens.tasks.config import config_adapter, load_run_config, parse_config


def test_the_task_key_picks_the_model():
    assert isinstance(parse_config({"task": "segment", "data": "x"}), SegmentConfig)
    assert isinstance(parse_config({"data": {"path": "x"}}), RunConfig)  # classify when not said
    assert isinstance(config_adapter().validate_python({"task": "segment", "data": "x"}), SegmentConfig)
    schema = json.dumps(config_adapter().json_schema())
    assert "SegmentConfig" in schema and "RunConfig" in schema


def test_every_invalid_value_is_one_clean_config_error():
    with pytest.raises(ConfigError, match=r"size.*16"):
        parse_config({"task": "segment", "data": "x", "size": 0})
    with pytest.raises(ConfigError, match=r"train\.lr"):
        parse_config({"data": {"path": "x"}, "train": {"lr": -1}})
    with pytest.raises(ConfigError, match="is not a task"):
        parse_config({"task": "detect", "data": "x"})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from medlens.cli.main import register_all
    from medlens.data.synthetic import make_idc_like

    root = tmp_path_factory.mktemp("cfg")
    make_idc_like(root / "idc", patients=4, patches_per_patient=6, size=50, seed=2)
    out = root / "run"
    res = CliRunner().invoke(register_all(), ["train", str(root / "idc"), "--out", str(out), "--model", "test_cnn",
                                              "--epochs", "1", "--max-steps", "1", "--size", "32", "--no-audit"])
    assert res.exit_code == 0, res.output
    return out


def test_config_is_saved_in_the_run_and_the_package(run):
    from medlens.package import load_model

    saved = json.loads((run / "config.json").read_text())
    cfg = load_run_config(run)
    assert isinstance(cfg, RunConfig) and cfg.model_dump(mode="json") == saved
    pkg = load_model(run)
    assert isinstance(pkg.config, RunConfig) and pkg.config.model_dump(mode="json") == saved
    assert pkg.config.preprocess.size == 32 and pkg.config.model.name == "test_cnn"


def test_resuming_with_the_wrong_task_says_which_it_is(run):
    from medlens.cli.main import register_all

    with pytest.raises(ConfigError, match="is a classify run"):
        load_run_config(run, task="segment")
    res = CliRunner().invoke(register_all(), ["train", str(run), "--task", "segment", "--resume", "--out", str(run)])
    assert res.exit_code == 2 and "is a classify run" in res.output and "--task classify" in res.output
