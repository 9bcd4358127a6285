"""The typer application and the error boundary: what a user can cause → one ``error:`` line
and an exit code (0 success, 1 the job failed, 2 a usage error; see :mod:`medlens.errors`)."""

from __future__ import annotations

import logging
import os
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

    from medlens import __version__

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
                          console=_console(stderr=True))
    handler._medlens = True  # type: ignore[attr-defined]
    handler.setLevel(level)
    root.addHandler(handler)
    logging.getLogger("medlens").setLevel(min(level, logging.INFO))
    root.setLevel(logging.WARNING)


def _console(stderr: bool = False):  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 120)


def main() -> None:
    """Console-script entry point: the exit code reaches the shell (never 0 after an error)."""
    sys.exit(run())


def run(args: list[str] | None = None) -> int:
    """Run the CLI with ``args`` (default ``sys.argv[1:]``); return the process exit code."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    from medlens.cli import main as _main  # registers all commands
    from medlens.cli.boundary import as_medlens_error

    _main.register_all()
    try:
        rc = app(args=args, standalone_mode=False)  # returns the code of a typer.Exit
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except NoArgsIsHelpError as e:  # `medlens` or a group alone: the help, as click shows it
        e.show()
        return e.exit_code
    except ClickException as e:  # usage errors: bad flag, missing argument, bad type
        where = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) else ""
        typer.echo(f"error: {e.format_message()}{where}", err=True)
        return e.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except Exception as e:
        err = as_medlens_error(e)
        if err is not None:
            typer.echo(f"error: {err}", err=True)
            return err.exit_code
        if os.environ.get("MEDLENS_DEBUG"):
            raise
        typer.echo(f"internal error: {type(e).__name__}: {e} (set MEDLENS_DEBUG=1 for the traceback)",
                   err=True)
        return 1
    return rc if isinstance(rc, int) else 0
