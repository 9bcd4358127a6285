"""The model package: everything needed to use a trained model, in one folder.

``<run>/model/`` holds ``weights.pt`` (state dict), ``metadata.json`` (task, classes,
architecture, input spec, preprocessing, normalisation, operating threshold,
temperature, metrics, versions) and ``model_card.md``. It is written atomically: a
reader sees the old package or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.errors import BadInputError
from medlens.io.atomic import atomic_write_json

FORMAT = "medlens-model"
FORMAT_VERSION = 1
WEIGHTS, METADATA, CARD = "weights.pt", "metadata.json", "model_card.md"


def versions() -> dict[str, str]:
    import monai

    import medlens

    return {"medlens": medlens.__version__, "torch": torch.__version__, "monai": monai.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def save_model_package(
    out_dir: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    model_kwargs: dict[str, Any],
    metadata: dict[str, Any],
    model_card: str | None = None,
) -> Path:
    """Write ``model`` + ``metadata`` to ``out_dir`` atomically (folder swap)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, tmp / WEIGHTS)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "versions": versions(), **metadata,
                "model": {"name": model_name, "kwargs": model_kwargs}}
        atomic_write_json(tmp / METADATA, meta)
        if model_card:
            (tmp / CARD).write_text(model_card, encoding="utf-8")
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def find_package(path: str | Path) -> Path:
    """Accept a run directory, its ``model/`` folder, or the ``metadata.json`` file."""
    p = Path(path)
    for cand in (p, p / "model", p.parent if p.name == METADATA else None):
        if cand is not None and (cand / METADATA).is_file() and (cand / WEIGHTS).is_file():
            return cand
    raise BadInputError(
        f"{p}: not a medlens model package (expected {METADATA} and {WEIGHTS} in it or in its model/ folder)"
    )


def load_package(path: str | Path, *, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from metadata and load its weights."""
    from medlens.models import create_model

    pkg = find_package(path)
    try:
        meta = json.loads((pkg / METADATA).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BadInputError(f"{pkg / METADATA}: unreadable model metadata ({e})") from None
    if meta.get("format") != FORMAT:
        raise BadInputError(f"{pkg / METADATA}: not a medlens model package (format={meta.get('format')!r})")
    model = create_model(meta["model"]["name"], **meta["model"]["kwargs"])
    try:
        state = torch.load(pkg / WEIGHTS, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, OSError) as e:
        raise BadInputError(f"{pkg / WEIGHTS}: weights do not load into {meta['model']['name']} ({e})") from None
    model.to(device).eval()
    return model, meta


class ModelPackage:
    """A loaded model package with prediction helpers (see :func:`medlens.load_model`)."""

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        self.path = find_package(path)
        self.model, self.metadata = load_package(self.path, device=device)
        self.device = torch.device(device)

    # --- description -------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.metadata.get("task", "classify")

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @property
    def input_size(self) -> tuple[int, ...]:
        s = self.metadata["input"]["size"]
        return tuple(s) if isinstance(s, list) else (s, s)

    @property
    def in_channels(self) -> int:
        return int(self.metadata["input"]["channels"])

    @property
    def threshold(self) -> float | None:
        return self.metadata.get("threshold")

    @property
    def negative_class(self) -> int:
        return int(self.metadata.get("negative_class", 0))

    @property
    def temperature(self) -> float:
        return float(self.metadata.get("temperature", 1.0) or 1.0)

    # --- inputs ------------------------------------------------------------------
    def load_images(self, paths: Sequence[str | Path]) -> list[np.ndarray]:
        from medlens.io.images import read_image

        if self.task == "segment":
            return [read_image(p, channels=self.in_channels) for p in paths]
        return [read_image(p) for p in paths]

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """``(H, W, C)`` uint8 images of any size → normalised ``(B, C, S, S)`` float."""
        if self.task == "segment":
            return self._preprocess_slices(images)
        from medlens.transforms.preprocess import PreprocessConfig, preprocess_image

        cfg = PreprocessConfig(**self.metadata["preprocess"])
        arr = np.stack([preprocess_image(_as_uint8(im), cfg) for im in images])
        x = torch.from_numpy(arr).float().div_(255.0)
        norm = self.metadata.get("normalize", {})
        mean = torch.tensor(norm.get("mean", [0.0] * x.shape[1])).view(1, -1, 1, 1)
        std = torch.tensor(norm.get("std", [1.0] * x.shape[1])).view(1, -1, 1, 1)
        return ((x - mean) / std).to(self.device)

    def _preprocess_slices(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """A segmenter's input, prepared as :func:`medlens.segment.predict.slices_tensor` does."""
        from medlens.segment.predict import slices_tensor

        inp = self.metadata.get("input", {})
        if int(inp.get("spatial_dims", 2)) != 2:
            raise BadInputError(f"{self.path}: a 3D segmenter; explain volumes through the Python API "
                                "(medlens.explain.explain(model, x)) with (B, C, D, H, W) input")
        return slices_tensor([_as_uint8(im) for im in images], resize=self.metadata.get("preprocess", {}).get("resize"),
                             divisor=int(inp.get("divisor", 16)), device=self.device)

    # --- prediction --------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, images: Sequence[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
        """Calibrated class probabilities ``(N, K)`` (temperature-scaled softmax)."""
        out = []
        for i in range(0, len(images), batch_size):
            logits = self.model(self.preprocess(images[i : i + batch_size])).float()
            out.append(torch.softmax(logits / self.temperature, 1).cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, len(self.classes)))

    def predict(self, inputs: Sequence[str | Path | np.ndarray] | str | Path | np.ndarray,
                *, batch_size: int = 64) -> list[dict[str, Any]]:
        """Predict files, folders or arrays: one dict per input (unreadable files get ``error``)."""
        if self.task != "classify":
            raise BadInputError(f"{self.path}: a {self.task} model; use medlens.segment.predict for it")
        items = _expand_inputs(inputs)
        images, names, results = [], [], {}
        from medlens.io.images import ImageReadError, read_image

        for i, item in enumerate(items):
            name = f"array[{i}]" if isinstance(item, np.ndarray) else str(item)
            try:
                images.append(item if isinstance(item, np.ndarray) else read_image(item))
                names.append((i, name))
            except ImageReadError as e:
                results[i] = {"file": name, "error": e.reason}
        probs = self.predict_proba(images, batch_size=batch_size)
        neg = self.negative_class
        for (i, name), p in zip(names, probs):
            score = float(1.0 - p[neg])
            row: dict[str, Any] = {"file": name, "predicted": self.classes[int(p.argmax())],
                                   "disease_score": score,
                                   "probabilities": {c: float(v) for c, v in zip(self.classes, p)}}
            if self.threshold is not None:
                row["decision"] = "positive" if score >= self.threshold else "negative"
                row["threshold"] = float(self.threshold)
            results[i] = row
        return [results[i] for i in range(len(items))]


def _as_uint8(im: np.ndarray) -> np.ndarray:
    if im.dtype == np.uint8:
        return im if im.ndim == 3 else im[..., None]
    a = im.astype(np.float64)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255
    a = np.nan_to_num(a).round().astype(np.uint8)
    return a if a.ndim == 3 else a[..., None]


def _expand_inputs(inputs: Any) -> list[Any]:
    from medlens.io.images import IMAGE_EXTENSIONS

    if isinstance(inputs, (str, Path, np.ndarray)):
        inputs = [inputs]
    out: list[Any] = []
    for item in inputs:
        if isinstance(item, np.ndarray):
            out.append(item)
            continue
        p = Path(item)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            out.append(str(p))
    return out


def load_model(path: str | Path, *, device: str = "cpu") -> ModelPackage:
    """Load a model package for prediction: ``medlens.load_model(run_dir).predict(images)``."""
    return ModelPackage(path, device=device)
