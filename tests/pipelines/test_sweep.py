"""`medlens sweep`: one tiny run per combination, finished runs skipped, read by `medlens compare`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from medlens.errors import ConfigError
from medlens.pipelines.config import RunConfig
from medlens.pipelines.sweep import config_path, parse_grid, run_name


def test_grid_keys_and_names() -> None:
    grid = parse_grid(["activation=relu,elu", "train.lr=0.001", "seed=0,1"])
    assert grid == {"activation": ["relu", "elu"], "train.lr": [0.001], "seed": [0, 1]}
    assert config_path("activation", RunConfig) == ["model", "activation"]
    assert config_path("seed", RunConfig) == ["train", "seed"]
    assert config_path("model", RunConfig) == ["model", "name"]
    assert run_name({"model.activation": "elu", "seed": 1}) == "activation-elu_seed-1"
    with pytest.raises(ConfigError, match="did you mean"):
        config_path("activaton", RunConfig)
    with pytest.raises(ConfigError, match="key=v1,v2"):
        parse_grid(["seed"])


def test_sweep_trains_skips_finished_runs_and_compare_reads_it(tmp_path) -> None:
    from medlens.cli.main import get_app
    from medlens.data.synthetic import make_idc_like
    from medlens.evaluate.compare import compare_runs

    idc_small = make_idc_like(tmp_path / "data", patients=5, patches_per_patient=12, size=32, seed=1)

    base = tmp_path / "tiny.json"
    base.write_text(json.dumps({"data": {"path": str(idc_small), "audit": False},
                                "model": {"name": "test_cnn"}, "preprocess": {"size": 32},
                                "train": {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2},
                                "eval": {"n_bootstrap": 0, "samples_in_report": 0}}))
    out = tmp_path / "sweep"
    args = ["sweep", str(base), "--grid", "activation=relu,elu", "--out", str(out)]
    res = CliRunner().invoke(get_app(), args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    index = json.loads((out / "sweep.json").read_text())
    assert [(r["name"], r["status"]) for r in index["runs"]] == [("activation-relu", "done"), ("activation-elu", "done")]
    meta = json.loads((out / "activation-elu" / "model" / "metadata.json").read_text())
    assert meta["model"]["kwargs"]["activation"] == "elu"  # recorded in the package: it loads back as ELU
    stamp = (out / "activation-relu" / "metrics.json").stat().st_mtime_ns

    res = CliRunner().invoke(get_app(), args)  # again: both finished, nothing retrained
    assert res.exit_code == 0, res.output
    assert all(r["skipped"] for r in json.loads((out / "sweep.json").read_text())["runs"])
    assert (out / "activation-relu" / "metrics.json").stat().st_mtime_ns == stamp

    result, _ = compare_runs([out], out / "activation-relu", min_specificity=0.0, n_bootstrap=0,
                             out=tmp_path / "cmp")  # DATA given as a run: its data, its test split
    assert [r["name"] for r in result["leaderboard"]] == ["activation-relu", "activation-elu"]
    assert result["selected"] in ("activation-relu", "activation-elu") and result["split"] == "test"
    assert result["splits_from"].endswith("splits.csv")
