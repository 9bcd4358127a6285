"""Domain errors. The CLI turns these into one clean line and a non-zero exit code."""

from __future__ import annotations


class MedlensError(Exception):
    """Base class for errors caused by the user's input or configuration."""


class BadInputError(MedlensError):
    """A file or folder cannot be used; the message names it and says why."""


class ConfigError(MedlensError):
    """An option or configuration value is invalid."""
