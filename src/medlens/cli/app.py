"""The typer application and the error boundary: user mistakes → one line, exit code 2."""

from __future__ import annotations

import logging
import os
import sys

import typer

from medlens.errors import MedlensError

app = typer.Typer(
    name="medlens",
    help="Early disease detection in medical images: inspect, audit, train, evaluate, explain, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="warnings and errors only"),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    setup_logging(level)


def setup_logging(level: int = logging.INFO) -> None:
    from rich.logging import RichHandler

    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_medlens", False):
            root.removeHandler(h)
    handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False,
                          console=_console(stderr=True))
    handler._medlens = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    logging.getLogger("medlens").setLevel(level)
    root.setLevel(logging.WARNING)


def _console(stderr: bool = False):  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 120)


def main() -> None:
    """Console-script entry point."""
    from medlens.cli import main as _main  # registers all commands

    _main.register_all()
    try:
        app(standalone_mode=False)
    except MedlensError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors come here with standalone_mode=False
        if type(e).__name__ == "Abort":
            sys.exit(1)
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # click/typer usage errors
            e.show()
            sys.exit(e.exit_code)
        if os.environ.get("MEDLENS_DEBUG"):
            raise
        typer.echo(f"internal error: {type(e).__name__}: {e} (set MEDLENS_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
