"""Turn a pydantic ``ValidationError`` into one :class:`ConfigError` line that names the flag.

A user types ``--lr nan``; pydantic answers about ``train.lr`` with a multi-line report.
This module maps each error's location back to the command-line flag that set it (when
the running command has that flag) and keeps the config key beside it, so the same line
serves a flag, a ``--config`` file and the Python API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from medlens.errors import ConfigError

# config location → flag, where the flag is not simply ``--`` + the last key with dashes
_ALIASES: dict[tuple[str, ...], str] = {
    ("model",): "--model",
    ("model", "name"): "--model",
    ("model", "pretrained"): "--pretrained",
    ("augment",): "--no-augment",
    ("augment", "enabled"): "--no-augment",
    ("data",): "DATA",
    ("data", "path"): "DATA",
    ("data", "audit"): "--no-audit",
    ("data", "ignore_audit"): "--ignore-audit",
}
_LAST_KEY_ALIASES = {"max_steps_per_epoch": "--max-steps"}


def flag_for(loc: Sequence[Any], flags: set[str] | None) -> str | None:
    """The CLI flag that sets the config value at ``loc``, or None.

    Args:
        loc: pydantic's error location, e.g. ``("train", "lr")``.
        flags: the option names of the running command (``{"--lr", …}``); None outside
            the CLI, where no flag is named.
    """
    keys = tuple(str(k) for k in loc)
    if flags is None or not keys:
        return None
    flag = _ALIASES.get(keys) or _LAST_KEY_ALIASES.get(keys[-1]) or "--" + keys[-1].replace("_", "-")
    return flag if flag in flags or flag == "DATA" else None


def current_flags() -> set[str] | None:
    """Option names of the click command now running (None when not under the CLI)."""
    try:
        from typer._click.globals import get_current_context  # typer ships its own click
    except ImportError:  # pragma: no cover - outside the CLI's dependencies
        return None
    ctx = get_current_context(silent=True)
    if ctx is None:
        return None
    return {name for p in ctx.command.params for name in getattr(p, "opts", [])}


def invalid_config(err: ValidationError, *, what: str = "config",
                   flags: set[str] | None = None) -> ConfigError:
    """One ConfigError line for all problems in ``err``: flag (config key = value): reason.

    Args:
        err: the ValidationError pydantic raised.
        what: what was being configured, e.g. "run config", "segmentation config".
        flags: the running command's option names; looked up from click when omitted.
    """
    if flags is None:
        flags = current_flags()
    parts = []
    for e in err.errors():
        loc = tuple(e.get("loc") or ())
        key = ".".join(str(k) for k in loc) or what
        flag = flag_for(loc, flags)
        msg = str(e.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ")  # a validator's own message
        msg = msg[:1].lower() + msg[1:]
        if e.get("type") == "extra_forbidden":
            where = " (check the --config file)" if flags and "--config" in flags else ""
            parts.append(f"unknown setting {key} in the {what}{where}")
            continue
        value = e.get("input")
        shown = "" if not loc or isinstance(value, dict) else f" = {_short(value)}"
        name = f"{flag} ({key}{shown})" if flag else f"{key}{shown} in the {what}"
        parts.append(f"invalid value for {name}: {msg}")
    return ConfigError("; ".join(parts) or f"invalid {what}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
