"""Bias probes: perturb the images the way the blood-cell (AML/APL) study did and measure
how often and how far predictions move, per class.

Each probe maps one image, scaled to [0, 1] (``(C, *spatial)``), to a perturbed copy; the
copy is scaled back to the model's input range. With the package's normalisation
(``norm``) the [0, 1] image is the picture the user sees (so a colour shift shifts the
real stain); without it each image is stretched to [0, 1]. A model that flips its answer when the
background changes, or *keeps* it when the region it relies on is hidden, is suspect.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.errors import ConfigError
from medlens.explain.base import as_model_and_input, check_input, forward
from medlens.explain.layers import conv_layer_names
from medlens.explain.methods import explain
from medlens.registry import Registry

logger = logging.getLogger(__name__)


@dataclass
class ProbeContext:
    """What a perturbation may use besides the image."""

    rng: np.random.Generator
    relied: np.ndarray | None = None  # bool (*spatial): the region the model relies on


ProbeFn = Callable[[np.ndarray, ProbeContext], np.ndarray]
PROBES: Registry[ProbeFn] = Registry("bias probe")
DEFAULT_PROBES = (
    "hide-region",
    "random-shapes",
    "replace-background",
    "isolate-object",
    "blur",
    "colour-shift",
    "equalize",
)
def foreground(img: np.ndarray) -> np.ndarray:
    """Object mask by Otsu's threshold; the object is the smaller side of the threshold."""
    from skimage.filters import threshold_otsu

    grey = img.mean(0)
    if float(grey.max()) <= float(grey.min()):
        return np.zeros(grey.shape, bool)
    fg = grey > threshold_otsu(grey)
    return fg if fg.mean() <= 0.5 else ~fg


@PROBES.register("hide-region")
def hide_region(img: np.ndarray, ctx: ProbeContext) -> np.ndarray:
    """Fill the region the model relies on (top of its CAM, or a given mask) with the
    mean of the rest of the image."""
    if ctx.relied is None or not ctx.relied.any():
        return img.copy()
    out = img.copy()
    rest = ~ctx.relied
    fill = img[:, rest].mean(1) if rest.any() else img.reshape(img.shape[0], -1).mean(1)
    out[:, ctx.relied] = fill[:, None]
    return out


@PROBES.register("hide-cell")
def hide_cell(img: np.ndarray, ctx: ProbeContext) -> np.ndarray:
    """Fill the Otsu foreground (the cell) with the mean of the background."""
    return hide_region(img, ProbeContext(ctx.rng, foreground(img)))


@PROBES.register("random-shapes")
def random_shapes(img: np.ndarray, ctx: ProbeContext, n: int = 3) -> np.ndarray:
    """Paste ``n`` boxes of random grey value, each 1/10–1/5 of the image side."""
    out = img.copy()
    spatial = img.shape[1:]
    for _ in range(n):
        sides = [int(ctx.rng.integers(max(1, s // 10), max(2, s // 5) + 1)) for s in spatial]
        lo = [int(ctx.rng.integers(0, max(1, s - d + 1))) for s, d in zip(spatial, sides)]
        out[(slice(None), *[slice(a, a + d) for a, d in zip(lo, sides)])] = ctx.rng.random()
    return out


@PROBES.register("replace-background")
def replace_background(img: np.ndarray, ctx: ProbeContext) -> np.ndarray:
    """Keep the Otsu foreground; put it on a smooth random texture."""
    from scipy.ndimage import gaussian_filter

    fg = foreground(img)
    noise = gaussian_filter(ctx.rng.random(img.shape[1:]), sigma=max(1.0, min(img.shape[1:]) / 16))
    noise = (noise - noise.min()) / max(float(np.ptp(noise)), 1e-6)
    out = img.copy()
    out[:, ~fg] = noise[~fg][None]
    return out


@PROBES.register("isolate-object")
def isolate_object(img: np.ndarray, ctx: ProbeContext) -> np.ndarray:
    """Keep the Otsu foreground on a black background."""
    out = img.copy()
    out[:, ~foreground(img)] = 0.0
    return out


@PROBES.register("blur")
def blur(img: np.ndarray, ctx: ProbeContext) -> np.ndarray:
    """Gaussian blur, sigma = 1/50 of the smallest side (at least 1 pixel)."""
    from scipy.ndimage import gaussian_filter

    s = max(1.0, min(img.shape[1:]) / 50)
    return gaussian_filter(img, sigma=(0, *[s] * (img.ndim - 1)))


@PROBES.register("colour-shift")
def colour_shift(img: np.ndarray, ctx: ProbeContext, hue: float = 0.05) -> np.ndarray:
    """RGB 2D: rotate the hue (a stain change); otherwise brighten by 10 %."""
    if img.shape[0] == 3 and img.ndim == 3:
        from skimage.color import hsv2rgb, rgb2hsv

        hsv = rgb2hsv(np.moveaxis(img, 0, -1))
        hsv[..., 0] = (hsv[..., 0] + hue) % 1.0
        return np.moveaxis(hsv2rgb(hsv), -1, 0).astype(img.dtype)
    return np.clip(img * 0.9 + 0.1, 0, 1)


@PROBES.register("equalize")
def equalize(img: np.ndarray, ctx: ProbeContext) -> np.ndarray:
    """Histogram equalisation of each channel."""
    from skimage.exposure import equalize_hist

    return np.stack([equalize_hist(c) if np.ptp(c) > 0 else c for c in img]).astype(img.dtype)


def _relied_regions(
    model: nn.Module, x: torch.Tensor, fraction: float, layer: str | None
) -> np.ndarray:
    method = "gradcam" if conv_layer_names(model) else "occlusion"
    maps = explain(model, x, method=method, layer=layer)
    flat = maps.reshape(maps.shape[0], -1)
    k = max(1, round(fraction * flat.shape[1]))
    thresh = -np.sort(-flat, axis=1)[:, k - 1 : k]
    return (flat >= thresh).reshape(maps.shape) & (maps > 0)


def _probs(out: torch.Tensor) -> torch.Tensor:
    if out.shape[1] == 1:
        p = torch.sigmoid(out)
        return torch.cat([1 - p, p], 1)
    return out.softmax(1)


def probe(
    model: nn.Module,
    x: torch.Tensor,
    y: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    *,
    probes: Sequence[str] = DEFAULT_PROBES,
    masks: np.ndarray | torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
    layer: str | None = None,
    hide_fraction: float = 0.1,
    seed: int = 0,
    n_examples: int = 3,
    example_dir: str | os.PathLike[str] | None = None,
    norm: tuple[Sequence[float], Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Run bias probes on a classifier.

    Args:
        x: ``(B, C, *spatial)`` preprocessed images; y: true labels (groups the per-class
            numbers; without them the original prediction is used).
        probes: names from :data:`PROBES` (did-you-mean on a typo).
        masks: ``(B, *spatial)`` regions to hide instead of the top Grad-CAM region.
        hide_fraction: share of pixels hidden by ``hide-region`` when no mask is given.
        example_dir: when set, the ``n_examples`` largest changes of every probe are
            written there as PNGs (original | perturbed).
        norm: ``(mean, std)`` per channel that ``x`` was normalised with (``x = (img -
            mean) / std`` with ``img`` in [0, 1]); probes then perturb the true image.

    Per probe the result also holds its ``description`` and the scores before and after:
    accuracy (with ``y``) and the mean probability of the originally predicted class.
    Returns:
        JSON-ready dict: per probe the flip rate (share of predictions that change),
        the mean |Δ probability| of the originally predicted class, per-class numbers and
        the examples.
    """
    model, x = as_model_and_input(model, x)
    check_input(model, x)
    out0 = forward(model, x)
    if out0.ndim != 2:
        raise ConfigError("Bias probes need a classifier (logits (B, K)); this model segments.")
    names = [canonical_probe(p) for p in probes]
    p0 = _probs(out0)
    pred0 = p0.argmax(1)
    groups = pred0.numpy() if y is None else np.asarray(torch.as_tensor(y)).astype(int)
    if len(groups) != x.shape[0]:
        raise ValueError(f"y has {len(groups)} labels for {x.shape[0]} images")
    label = (lambda c: classes[c]) if classes else (lambda c: str(c))
    relied = None
    if "hide-region" in names:
        if masks is not None:
            relied = np.asarray(torch.as_tensor(masks)).astype(bool)
            if relied.shape != (x.shape[0], *x.shape[2:]):
                raise ValueError(
                    f"masks must have shape {(x.shape[0], *x.shape[2:])}, got {relied.shape}"
                )
        else:
            relied = _relied_regions(model, x, hide_fraction, layer)
    lo, span = _unit_scale(x.detach().float().cpu(), norm)
    x01 = ((x.detach().float().cpu() - lo) / span).clamp(0, 1).numpy()
    truth = None if y is None else groups
    result: dict[str, Any] = {
        "n_images": int(x.shape[0]),
        "scale": "package normalisation undone" if norm is not None else "each image stretched to [0, 1]",
        "probes": {},
    }
    for name in names:
        rng = np.random.default_rng(seed)
        fn = PROBES.get(name)
        pert = np.stack(
            [
                fn(x01[i], ProbeContext(rng, None if relied is None else relied[i]))
                for i in range(x.shape[0])
            ]
        ).astype(np.float32)
        xp = torch.from_numpy(pert) * span + lo
        p1 = _probs(forward(model, xp.to(x.dtype)))
        flips = (p1.argmax(1) != pred0).numpy()
        before = p0.gather(1, pred0[:, None])[:, 0].numpy()
        after = p1.gather(1, pred0[:, None])[:, 0].numpy()
        dprob = np.abs(after - before)
        per_class = {
            label(int(c)): {
                "n": int((groups == c).sum()),
                "flip_rate": float(flips[groups == c].mean()),
                "mean_abs_dprob": float(dprob[groups == c].mean()),
                **probe_scores(groups == c, before, after, pred0.numpy(), p1.argmax(1).numpy(), truth),
            }
            for c in np.unique(groups)
        }
        examples = []
        for i in np.argsort(-dprob, kind="stable")[:n_examples]:
            ex = {
                "index": int(i),
                "before": label(int(pred0[i])),
                "after": label(int(p1[i].argmax())),
                "abs_dprob": float(dprob[i]),
            }
            if example_dir is not None:
                ex["image"] = str(
                    save_example(Path(example_dir) / f"{name}_{i}.png", x01[i], pert[i])
                )
            examples.append(ex)
        result["probes"][name] = {
            "description": describe_probe(fn),
            "flip_rate": float(flips.mean()),
            "mean_abs_dprob": float(dprob.mean()),
            **probe_scores(np.ones(len(flips), bool), before, after, pred0.numpy(), p1.argmax(1).numpy(), truth),
            "per_class": per_class,
            "examples": examples,
        }
    return result


def _unit_scale(
    xs: torch.Tensor, norm: tuple[Sequence[float], Sequence[float]] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, span)`` with ``x01 = (x - lo) / span``: the image in [0, 1] as the user sees
    it when ``norm`` is known, else each image stretched to [0, 1]."""
    if norm is not None:
        shape = (1, -1) + (1,) * (xs.ndim - 2)
        mean = torch.as_tensor(list(norm[0]), dtype=torch.float32).reshape(shape)
        std = torch.as_tensor(list(norm[1]), dtype=torch.float32).reshape(shape)
        # x = (img - mean) / std  =>  img = x * std + mean  =>  lo = -mean / std, span = 1 / std
        return -mean / std, 1.0 / std
    dims = tuple(range(1, xs.ndim))
    lo = xs.amin(dim=dims, keepdim=True)
    return lo, (xs.amax(dim=dims, keepdim=True) - lo).clamp_min(1e-8)


def probe_scores(
    sel: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    pred0: np.ndarray,
    pred1: np.ndarray,
    truth: np.ndarray | None,
) -> dict[str, float]:
    """Scores of the selected images before/after a probe: mean probability of the
    originally predicted class, and accuracy when the true labels are known."""
    out = {"p_before": float(before[sel].mean()), "p_after": float(after[sel].mean())}
    if truth is not None:
        out["accuracy_before"] = float((pred0[sel] == truth[sel]).mean())
        out["accuracy_after"] = float((pred1[sel] == truth[sel]).mean())
    return out


def describe_probe(fn: Callable[..., Any]) -> str:
    """A probe's first docstring sentence: what it does to the image."""
    doc = " ".join((fn.__doc__ or "").replace("``", "").split())
    return doc.split(". ")[0].rstrip(".") + "." if doc else ""


def canonical_probe(name: str) -> str:
    from medlens.options import look_up_option

    return look_up_option(name, PROBES.names(), what="bias probe")


def save_example(path: Path, before: np.ndarray, after: np.ndarray) -> Path:
    from medlens.explain.overlay import enlarge_panel, panel_grid, png_bytes, to_display
    from medlens.io.atomic import atomic_write_bytes

    panels = []
    unit = ([0.0], [1.0])  # the probe's images are already pictures in [0, 1]
    for img in (before, after):
        rgb = to_display(img if img.ndim == 3 else img[:, img.shape[1] // 2], unit)
        panels.append(enlarge_panel((rgb * 255).round().astype(np.uint8)))
    return atomic_write_bytes(path, png_bytes(panel_grid([panels])))


@dataclass
class ProbeBag:
    """One patient's cells for the bag-level probes (:mod:`medlens.explain.bag_probes`); kept
    here because task predictors build it without needing the bag probing itself."""

    patient: str
    cells: np.ndarray  # (n, C, S, S) float in [0, 1]: the pictures the user sees
    paths: list[str]
    label: int | None = None  # the patient's true class index, when known
