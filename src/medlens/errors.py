"""Domain errors. The CLI turns these into one clean line and an exit code.

Exit codes (what scripts and workflow engines see):

* 0 — success;
* 1 — the job failed: bad or unusable data, a blocking audit finding, an input refused by
  ``--strict``, a run folder held by another job, an output that cannot be written;
* 2 — a usage error: a bad flag or value, an unknown name (model, method, layout).

Each class carries its ``exit_code`` so the CLI's error boundary needs no table.
"""

from __future__ import annotations


class MedlensError(Exception):
    """Base class for errors caused by the user's input, configuration or environment."""

    exit_code: int = 1


class BadInputError(MedlensError):
    """A file or folder cannot be used; the message names it and says why (exit 1)."""

    exit_code = 1


class ConfigError(MedlensError):
    """An option or configuration value is invalid, or a name is unknown (exit 2)."""

    exit_code = 2


class JobFailedError(MedlensError):
    """The job ran but its result is unusable or blocked, e.g. a blocking audit finding (exit 1)."""

    exit_code = 1


class OutputError(MedlensError):
    """An output cannot be written: a read-only folder, a full disk, a file where a folder
    should be, a run folder held by another job (exit 1)."""

    exit_code = 1


class RunLockedError(OutputError):
    """Another medlens job is writing this run folder (exit 1)."""
