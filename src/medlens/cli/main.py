"""Imports every command module so that each registers itself on the app."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

_MODULES = ["commands", "audit", "explain", "segment", "crossval"]
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
        for info in app.registered_commands:
            if info.callback is not None and not getattr(info.callback, "_medlens_guarded", False):
                info.callback = _guard(info.callback)
        _done = True
    return app


def get_app():  # noqa: ANN201
    return register_all()


def main() -> None:
    from medlens.cli.app import main as run

    run()


if __name__ == "__main__":
    sys.exit(main())
