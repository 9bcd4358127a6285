"""One lookup helper for every string option, answering typos with 'did you mean'."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from medlens.errors import ConfigError


def look_up_option(value: str, choices: Iterable[str], *, what: str = "option") -> str:
    """Return ``value`` if it is one of ``choices`` (case-insensitive), else raise.

    Raises:
        ConfigError: naming the closest valid choices and the full list.
    """
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    key = str(value).strip().lower()
    if key in lowered:
        return lowered[key]
    close = difflib.get_close_matches(key, list(lowered), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close else ""
    raise ConfigError(
        f"Unknown {what} {value!r}.{hint} Valid choices: {', '.join(sorted(options))}."
    )
