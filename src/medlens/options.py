"""One lookup helper for every string option (typos answered with "did you mean"), and
the one check of `--device` values shared by every command that runs a model."""

from __future__ import annotations

import difflib
import re
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


DEVICE_HELP = "where the model runs: auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def check_device(value: str) -> str:
    """Validate a ``--device`` value eagerly, before any data is read or model built.

    Accepts ``auto``, ``cpu``, ``cuda`` and ``cuda:N``. Returns it normalised (lower case,
    no spaces); ``auto`` is kept, so a saved config runs on whatever machine reads it.

    Raises:
        ConfigError: an unknown device (with "did you mean"), or CUDA asked for on a
            machine without it (or a ``cuda:N`` beyond the GPUs present).
    """
    name = str(value).strip().lower()
    m = _DEVICE_RE.match(name)
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        base = name.split(":", 1)[0]
        look_up_option(base, ("auto", "cpu", "cuda"), what="--device")  # raises with a hint
        raise ConfigError(f"--device {value!r} is not a device; use auto, cpu, cuda or cuda:N "
                          "(N = the GPU's number, e.g. cuda:1)")
    if m.group(1) == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {value!r}: CUDA is not available on this machine "
                              f"(torch {torch.__version__}, no usable GPU); use --device cpu or auto")
        count = torch.cuda.device_count()
        if m.group(2) is not None and int(m.group(2)) >= count:
            raise ConfigError(f"--device {value!r}: this machine has {count} CUDA device(s) "
                              f"(cuda:0…cuda:{count - 1})")
    return name


def resolve_device(value: str) -> str:
    """The concrete device for ``value`` (validated): ``auto`` → ``cuda`` or ``cpu``."""
    name = check_device(value)
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
