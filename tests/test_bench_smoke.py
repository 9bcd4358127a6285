"""The training benchmark still runs: --quick on tiny synthetic data prints the ratio table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file runs
    spec.loader.exec_module(mod)
    return mod


def test_bench_train_quick_prints_ratio_table(tmp_path, capsys):
    bench = _load()
    out_json = tmp_path / "bench.json"
    rows = bench.main(
        [
            "--quick",
            "--cases",
            "test_cnn",
            "--steps",
            "2",
            "--threads",
            "1",
            "--json",
            str(out_json),
        ]
    )
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert (
        "img/s" in header and "ratio vs plain-files" in header and "ratio vs plain-memory" in header
    )
    pipes = {r["pipeline"] for r in rows}
    assert {"plain-files w0", "plain-memory", "medlens"} <= pipes
    for r in rows:
        assert r["img_s"] > 0 and r["ratio_vs_plain_memory"] > 0
        assert f"| {r['pipeline']} |" in text
    mem = next(r for r in rows if r["pipeline"] == "plain-memory")
    assert abs(mem["ratio_vs_plain_memory"] - 1.0) < 1e-9
    saved = json.loads(out_json.read_text())
    assert len(saved["rows"]) == len(rows) and "load_start" in saved


def test_bench_train_rejects_unknown_case():
    bench = _load()
    try:
        bench.parse_args(["--cases", "nope"])
    except SystemExit as e:
        assert e.code == 2
    else:  # pragma: no cover - the parser must refuse
        raise AssertionError("unknown case accepted")


def test_bench_ct_quick_prints_stage_table(tmp_path, capsys):
    path = BENCH.with_name("bench_ct.py")
    spec = importlib.util.spec_from_file_location("bench_ct", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    res = bench.main(["--quick", "--threads", "1", "--baselines", "per-slice", "--json",
                      str(tmp_path / "ct.json"), "--keep", str(tmp_path / "report")])
    text = capsys.readouterr().out
    for stage in ("read", "lung mask", "candidate model", "grouping", "crop classification", "ranker",
                  "malignancy", "report", "**total**", "peak RSS", "naive per-slice loop"):
        assert stage in text, stage
    assert res["total_s"] == sum(res["stages"].values()) > 0 and res["candidates_scored"] == 16
    assert res["baselines"][0]["ratio"] > 0 and (tmp_path / "report" / "report.html").is_file()
    assert json.loads((tmp_path / "ct.json").read_text())["shape"] == [24, 96, 96]
    try:
        bench.parse_args(["--baselines", "nope"])
    except SystemExit as e:
        assert e.code == 2
    else:  # pragma: no cover - the parser must refuse
        raise AssertionError("unknown baseline accepted")


def test_bench_probe_compares_cached_features_with_the_backbone_every_epoch(capsys):
    spec = importlib.util.spec_from_file_location("bench_probe", BENCH.parent / "bench_probe.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--epochs", "1", "--threads", "1", "--size", "32"])
    text = capsys.readouterr().out
    assert [r["recipe"] for r in rows] == ["backbone every epoch", "cached features"]
    assert "| recipe |" in text and rows[1]["x_cached"] == 1.0 and rows[0]["x_cached"] > 0
    assert all(r["epochs"] == 1 for r in rows)
