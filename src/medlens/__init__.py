"""medlens: early disease detection in medical images.

The package follows the data's path: ``io`` → ``data`` → ``transforms`` → ``models``
→ ``train`` → ``evaluate`` → ``explain`` / ``audit`` → ``cli``.
"""

from __future__ import annotations

from medlens.version import __version__

__all__ = ["__version__", "load_model"]


def load_model(path: str):  # noqa: ANN201 - lazy import keeps `import medlens` light
    """Load a model package (a run directory or its ``model/`` folder) for prediction."""
    from medlens.package import load_model as _load

    return _load(path)
