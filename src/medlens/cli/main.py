"""The console entry point: imports every command module (each registers itself on
:data:`medlens.cli.app.app`), guards the commands and runs the app."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

_MODULES = ["commands", "audit", "explain", "segment", "crossval", "compare", "sweep", "calibrate", "ct"]
_done = False


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn what a user can cause into one ``error:`` line and the error's exit code (1 a
    failed job, 2 a usage error), also under CliRunner where ``app.main`` does not run."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import typer

        from medlens.cli.boundary import as_medlens_error

        try:
            return fn(*args, **kwargs)
        except Exception as e:  # translated, or re-raised as a bug
            err = as_medlens_error(e)
            if err is None:
                raise
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None

    wrapper._medlens_guarded = True  # type: ignore[attr-defined]
    return wrapper


def register_all():  # noqa: ANN201
    """Import the command modules and guard every command; returns the app."""
    global _done
    from medlens.cli.app import app

    if not _done:
        for name in _MODULES:
            full = f"medlens.cli.{name}"
            if importlib.util.find_spec(full) is not None:
                importlib.import_module(full)
        _guard_commands(app)
        _done = True
    return app


def _guard_commands(typer_app) -> None:  # noqa: ANN001
    """Guard every command of ``typer_app`` and of its sub-apps (``medlens ct …``)."""
    for info in typer_app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_medlens_guarded", False):
            info.callback = _guard(info.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _guard_commands(group.typer_instance)


def get_app():  # noqa: ANN201
    return register_all()


def main() -> None:
    """Console-script entry point: the exit code reaches the shell (never 0 after an error)."""
    sys.exit(run())


def run(args: list[str] | None = None) -> int:
    """Run the CLI with ``args`` (default ``sys.argv[1:]``); return the process exit code.

    The error boundary: what a user can cause → one ``error:`` line and an exit code (0
    success, 1 the job failed, 2 a usage error; see :mod:`medlens.errors`)."""
    import typer
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    from medlens.cli.boundary import as_medlens_error

    app = register_all()
    try:
        # one program name in every message, whether started as `medlens`, `python -m medlens` or in-process
        rc = app(args=args, prog_name="medlens", standalone_mode=False)  # returns the code of a typer.Exit
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


if __name__ == "__main__":
    sys.exit(main())
