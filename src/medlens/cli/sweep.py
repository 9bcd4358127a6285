"""`medlens sweep CONFIG|DATA --grid key=v1,v2 --out DIR`: one training per combination
(:mod:`medlens.pipelines.sweep`); `medlens compare DIR --data DATA` then compares them."""

from __future__ import annotations

from pathlib import Path

import typer

from medlens.cli.app import app, make_console
from medlens.cli.boundary import out_must_be_folder
from medlens.cli.options import check_device, device_option, layout_option, task_help


@app.command("sweep")
def sweep_cmd(
    source: Path = typer.Argument(..., help="a config file (JSON/YAML with data.path), or DATA"),
    grid: list[str] = typer.Option(..., "--grid", help="key=v1,v2 (repeatable): a config path such as "
                                   "model.activation or train.lr, or a field name such as seed or activation"),
    out: Path = typer.Option(..., "--out", "-o", help="sweep folder: <name>/ per run, configs/, sweep.json"),
    config: Path | None = typer.Option(None, "--config", help="base config when SOURCE is DATA",
                                       show_default="none"),
    task: str | None = typer.Option(None, "--task", help=task_help(), show_default="detected from DATA"),
    layout: str | None = layout_option(),
    device: str | None = device_option(None),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the runs without training"),
) -> None:
    """Train one run per combination of --grid values into --out (finished runs are skipped)."""
    from rich.table import Table

    from medlens.pipelines.sweep import run_sweep

    out_must_be_folder(out)
    index = run_sweep(source, grid, out, config=config, task=task, layout=layout, device=check_device(device),
                      dry_run=dry_run)
    keys = list(index["grid"])
    t = Table(title=f"sweep of {index['data']} ({index['task']}): {len(index['runs'])} run(s)")
    for col in ("run", *keys, "status", "ROC-AUC", "sensitivity", "specificity"):
        t.add_column(col, justify="left" if col == "run" else "right")
    for r in index["runs"]:
        m = r.get("metrics") or {}
        status = "skipped (done)" if r.get("skipped") else r["status"]
        t.add_row(r["name"], *(str(r["values"][k]) for k in keys), status,
                  *(f"{m[k]:.3f}" if isinstance(m.get(k), (int, float)) else "n/a"
                    for k in ("roc_auc", "sensitivity", "specificity")))
    con = make_console()
    con.print(t)
    if not dry_run:
        con.print(f"index: {Path(out) / 'sweep.json'}  (compare them: medlens compare {out} --data DATA)",
                  soft_wrap=True)
