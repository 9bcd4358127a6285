"""`medlens compare RUN... --data DATA`: several packages on the same cases, one leaderboard
and the model a stated rule selects (:mod:`medlens.evaluate.compare`)."""

from __future__ import annotations

from pathlib import Path

import typer

from medlens.cli.app import app, make_console
from medlens.cli.boundary import out_must_be_folder
from medlens.cli.options import check_device, device_option, layout_option


@app.command("compare")
def compare_cmd(
    runs: list[Path] = typer.Argument(..., help="run folders, model packages or sweep folders (sweep.json)"),
    data: Path = typer.Option(..., "--data", help="data to compare on, or a run folder (its data and its splits)"),
    split: str = typer.Option("test", "--split", help="test, val, train or all"),
    rule: str | None = typer.Option(None, "--rule", help="fewest-fn, highest-auc or highest-balanced-accuracy",
                                    show_default="fewest-fn; highest-auc when no class means healthy"),
    min_specificity: float = typer.Option(0.5, "--min-specificity",
                                          help="fewest-fn: only models with at least this specificity qualify"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for compare.json, leaderboard.csv, "
                                    "compare.html", show_default="runs/compare-<date>-<time>"),
    layout: str | None = layout_option(),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", min=0, help="paired bootstrap resamples (0: none)"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    device: str = device_option(),
) -> None:
    """Compare models on the same cases: AUC with paired CIs, FN/FP at each model's operating
    point, calibration, DeLong and McNemar tests, and the model the rule selects."""
    from rich.table import Table

    from medlens.evaluate.compare import compare_runs
    from medlens.evaluate.compare_page import leaderboard_rows
    from medlens.evaluate.page import fmt

    out_must_be_folder(out)
    result, out_dir = compare_runs(runs, data, split=split, rule=rule, min_specificity=min_specificity, out=out,
                                   device=check_device(device) or "auto", n_bootstrap=n_bootstrap, seed=seed,
                                   layout=layout)
    rows = leaderboard_rows(result)
    t = Table(title=f"{result['n_cases']} {result['unit']}s, split {result['split']} — ★ selected")
    for i, col in enumerate(rows[0]):
        t.add_column(col, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*(fmt(v, count=k in ("FN", "FP")) for k, v in r.items()))
    con = make_console()
    con.print(t)
    con.print(f"selected: {result['selected']} — {result['selected_because']}", soft_wrap=True)
    con.print(f"output: {out_dir}  (page: {out_dir / 'compare.html'})", soft_wrap=True)
