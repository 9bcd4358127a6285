"""Thin adapter from a saved model package and file paths to the tensor-level API.

The core functions take ``(model, x)``; the CLI and other callers holding a package
(``medlens.load_model(path)``) use these helpers, which read the files with the
package's own loader and preprocessing and write overlays and raw maps.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError
from medlens.io.atomic import atomic_write_bytes, atomic_write_json

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")


def _is_input(p: Path) -> bool:
    from medlens.io.images import IMAGE_EXTENSIONS

    name = p.name.lower()
    return p.suffix.lower() in IMAGE_EXTENSIONS or name.endswith(VOLUME_SUFFIXES)


def collect_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders expanded (sorted, recursive) to their image/volume files."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file() and _is_input(f) and not f.name.startswith(".")
                )
            )
        elif p.is_file():
            files.append(p)
        else:
            raise BadInputError(f"{p}: no such file or folder")
    if not files:
        raise BadInputError(f"No image files found in {', '.join(map(str, inputs))}")
    return files


def _package(model: Any) -> Any:
    if isinstance(model, (str, os.PathLike)):
        import medlens

        return medlens.load_model(str(model))
    return model


def _tensor(pkg: Any, paths: Sequence[Path]) -> Any:
    return pkg.preprocess(pkg.load_images([str(p) for p in paths]))


def _stem(p: Path) -> str:
    name = p.name
    for suf in VOLUME_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return p.stem


def explain_files(
    model: Any,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    method: str = "gradcam",
    target: int | None = None,
    layer: str | None = None,
    out_dir: str | os.PathLike[str] = "explanations",
    batch_size: int = 16,
    **opts: Any,
) -> list[dict[str, Any]]:
    """Explain each input; write ``<name>.<method>.png`` (overlay) and ``.npy`` (raw map).

    Args:
        model: a model package or its path.
        inputs: image/volume files or folders.

    Returns:
        One record per input: paths written, predicted class and explained target.
    """
    from medlens.explain.base import explain, forward, list_methods
    from medlens.explain.overlay import save_overlay
    from medlens.options import look_up_option

    method = look_up_option(method, list_methods(), what="explanation method")
    pkg = _package(model)
    files = collect_inputs(inputs)
    out = Path(out_dir)
    classes = list(getattr(pkg, "classes", []) or [])
    stems = [_stem(f) for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    records = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        x = _tensor(pkg, chunk)
        maps = explain(pkg.model, x, method=method, target=target, layer=layer, **opts)
        logits = forward(pkg.model, x)
        for j, f in enumerate(chunk):
            stem = stems[start + j]
            stem = f"{start + j:04d}_{stem}" if stem in dup else stem
            png = save_overlay(out / f"{stem}.{method}.png", x[j], maps[j])
            npy = out / f"{stem}.{method}.npy"
            buf = io.BytesIO()
            np.save(buf, maps[j])
            atomic_write_bytes(npy, buf.getvalue())
            rec: dict[str, Any] = {"input": str(f), "overlay": str(png), "map": str(npy)}
            if logits.ndim == 2:
                pred = int(logits[j].argmax()) if logits.shape[1] > 1 else int(logits[j, 0] > 0)
                rec["predicted"] = classes[pred] if pred < len(classes) else pred
            rec["target"] = target
            records.append(rec)
    atomic_write_json(out / f"explanations.{method}.json", records)
    return records


def evaluate_files(
    model: Any,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    methods: Sequence[str] | None = None,
    target: int | None = None,
    layer: str | None = None,
    max_images: int = 16,
    **kwargs: Any,
) -> Any:
    """Faithfulness table over (up to ``max_images``) inputs; see ``evaluate_faithfulness``."""
    from medlens.explain.faithfulness import DEFAULT_METHODS, evaluate_faithfulness

    pkg = _package(model)
    files = collect_inputs(inputs)[:max_images]
    x = _tensor(pkg, files)
    return evaluate_faithfulness(
        pkg.model, x, methods or DEFAULT_METHODS, target=target, layer=layer, **kwargs
    )


def probe_files(
    model: Any,
    data: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] = "probes",
    max_images: int = 64,
    seed: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Bias probes on the images under ``data``; writes ``probes.json`` and example PNGs.

    Labels come from the parent folder's name when it is one of the package's classes
    (class-folder layout); otherwise results are grouped by the original prediction.
    """
    from medlens.explain.probes import probe

    pkg = _package(model)
    files = collect_inputs([data])
    if len(files) > max_images:
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), max_images, replace=False))]
    classes = list(getattr(pkg, "classes", []) or [])
    labels = [classes.index(f.parent.name) if f.parent.name in classes else None for f in files]
    y = labels if all(v is not None for v in labels) else None
    x = _tensor(pkg, files)
    out = Path(out_dir)
    result = probe(
        pkg.model, x, y, classes=classes or None, seed=seed, example_dir=out / "examples", **kwargs
    )
    result["grouped_by"] = "true label" if y is not None else "original prediction"
    result["inputs"] = [str(f) for f in files]
    for entry in result["probes"].values():
        for ex in entry["examples"]:
            ex["input"] = str(files[ex["index"]])
    atomic_write_json(out / "probes.json", result)
    return result
