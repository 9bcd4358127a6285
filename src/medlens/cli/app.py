"""The typer application, its root options and the console logging. The command modules
register themselves on :data:`app`; :mod:`medlens.cli.main` imports them and runs it."""

from __future__ import annotations

import logging
import sys

import typer

app = typer.Typer(
    name="medlens",
    help="Early disease detection in medical images: inspect, audit, train, evaluate, explain, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version_line() -> str:
    """``medlens 0.1.0 (torch 2.13.0, monai 1.5.1)``: read from the installed metadata, so
    ``--version`` answers without importing torch."""
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    from medlens.version import __version__

    return f"medlens {__version__} (torch {v('torch')}, monai {v('monai')})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="warnings and errors only"),
    version: bool = typer.Option(False, "--version", help="print the versions of medlens, torch and monai",
                                 callback=_print_version, is_eager=True),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    setup_logging(level)


def setup_logging(level: int = logging.INFO) -> None:
    """Console logging at ``level``; the ``medlens`` logger itself passes INFO at least, so a
    run's ``run.log`` (:mod:`medlens.io.runlog`) is complete even under ``--quiet``."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_medlens", False):
            root.removeHandler(h)
    handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False,
                          console=make_console(stderr=True))
    handler._medlens = True  # type: ignore[attr-defined]
    handler.setLevel(level)
    root.addHandler(handler)
    logging.getLogger("medlens").setLevel(min(level, logging.INFO))
    root.setLevel(logging.WARNING)


def make_console(stderr: bool = False):  # noqa: ANN201
    """A rich console (stdout, or stderr), 120 columns wide when not on a terminal."""
    from rich.console import Console

    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 120)
