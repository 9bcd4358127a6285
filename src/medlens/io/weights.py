"""Read PyTorch weight files without running code from them.

A ``.pt`` file is a pickle: loaded with ``weights_only=False`` it can run any code its
author chose. Checkpoints, model packages and ``--pretrained`` files are often shared, so
every file medlens reads goes through :func:`load_weights_file`, which only accepts tensors
and plain containers (dict, list, tuple, str, int, float, bool, None) and turns a refusal
or a damaged file into one :class:`~medlens.errors.BadInputError` naming the file.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

from medlens.errors import BadInputError


def load_weights_file(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with user-facing errors.

    Raises:
        BadInputError: the file holds objects or code beyond weights ("refusing to load"),
            is missing, unreadable, or not a PyTorch file.
    """
    import torch

    p = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise BadInputError(
                f"refusing to load {p}: it contains code/objects, not only weights "
                "(medlens loads weights-only files; save with torch.save(model.state_dict(), path))"
            ) from None
        raise BadInputError(f"{p}: not a readable PyTorch weights file ({_first_line(e)})") from None
    except FileNotFoundError:
        raise BadInputError(f"{p}: file not found") from None
    except OSError as e:
        raise BadInputError(f"{p}: cannot be read ({e.strerror or e})") from None
    except (RuntimeError, ValueError, KeyError, EOFError, TypeError) as e:  # damaged zip/pickle stream
        raise BadInputError(f"{p}: not a readable PyTorch weights file ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__
