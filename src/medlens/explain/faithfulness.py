"""Which explanation can be trusted for this model? Deletion and insertion curves.

Deletion (Petsiuk et al. 2018, RISE): replace the most important pixels first by a
baseline (blurred image or its mean) in ``steps`` equal steps and follow the target
probability; a faithful map makes it fall fast (low AUC). Insertion starts from the
baseline and puts the most important pixels back; a faithful map makes it rise fast (high
AUC). Each method is compared with random maps on the same images; the summary score is
``insertion AUC − deletion AUC`` (higher is better).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.explain.base import (
    EXPLAINERS,
    Target,
    as_model_and_input,
    check_input,
    forward,
    make_target,
)
from medlens.explain.layers import conv_layer_names
from medlens.explain.methods import explain, load_builtin_explainers
from medlens.options import look_up_option

logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("gradcam", "gradcam++", "occlusion", "integrated-gradients", "lime")
BASELINES = ("mean", "blur")


def make_baseline(x: torch.Tensor, kind: str = "blur", sigma: float | None = None) -> torch.Tensor:
    """Blurred copy of ``x`` (Gaussian, sigma = 1/10 of the smallest side) or its mean."""
    kind = look_up_option(kind, BASELINES, what="faithfulness baseline")
    if kind == "mean":
        dims = tuple(range(1, x.ndim))
        return x.mean(dim=dims, keepdim=True).expand_as(x).clone()
    from scipy.ndimage import gaussian_filter

    spatial = x.shape[2:]
    s = float(sigma if sigma is not None else max(1.0, min(spatial) / 10))
    arr = gaussian_filter(x.detach().float().cpu().numpy(), sigma=(0, 0, *[s] * len(spatial)))
    return torch.from_numpy(arr).to(x.dtype)


def perturbation_curves(
    model: nn.Module,
    x: torch.Tensor,
    maps: np.ndarray | torch.Tensor,
    target: Target,
    *,
    steps: int = 20,
    baseline: str = "mean",
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves, each ``(B, steps + 1)`` of target probabilities."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    maps_t = torch.as_tensor(np.asarray(maps), dtype=torch.float32)
    if tuple(maps_t.shape) != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"maps shape {tuple(maps_t.shape)} does not match input {tuple(x.shape)}")
    base = make_baseline(x, baseline)
    deletion, insertion = [], []
    for i in range(x.shape[0]):
        flat = maps_t[i].flatten()
        n = flat.numel()
        order = torch.argsort(-flat, stable=True)
        ranks = torch.empty(n, dtype=torch.long)
        ranks[order] = torch.arange(n)
        ks = torch.round(torch.arange(steps + 1, dtype=torch.float64) * n / steps).long()
        m = (ranks[None] < ks[:, None]).view(steps + 1, 1, *x.shape[2:]).to(x.dtype)
        xi, bi = x[i : i + 1], base[i : i + 1]
        tgt = target.select(i)
        curves = []
        for images in (xi * (1 - m) + bi * m, bi * (1 - m) + xi * m):
            out = forward(model, images, batch_size)
            curves.append(tgt(out, prob=True).float().cpu().numpy())
        deletion.append(curves[0])
        insertion.append(curves[1])
    return np.stack(deletion), np.stack(insertion)


def auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve sampled evenly on [0, 1] (trapezoid rule)."""
    c = np.asarray(curves, dtype=np.float64)
    return (c[:, 1:] + c[:, :-1]).sum(1) / (2 * (c.shape[1] - 1))


@dataclass
class FaithfulnessRow:
    method: str
    deletion_auc: float
    insertion_auc: float
    seconds_per_image: float
    n_images: int
    note: str = ""

    @property
    def score(self) -> float:
        return self.insertion_auc - self.deletion_auc


@dataclass
class FaithfulnessTable:
    """Per-method AUCs; ``random`` is the baseline row every method should beat."""

    rows: list[FaithfulnessRow]
    baseline: str
    steps: int
    skipped: dict[str, str] = field(default_factory=dict)

    def row(self, method: str) -> FaithfulnessRow:
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(method)

    @property
    def best(self) -> str | None:
        """The method with the highest insertion − deletion score (not ``random``)."""
        cands = [r for r in self.rows if r.method != "random"]
        return max(cands, key=lambda r: r.score).method if cands else None

    def beats_random(self, method: str) -> bool:
        r, rnd = self.row(method), self.row("random")
        return r.deletion_auc < rnd.deletion_auc and r.insertion_auc > rnd.insertion_auc

    def verdict(self) -> str:
        best = self.best
        if best is None:
            return "No method could be evaluated."
        beats = "beats" if self.beats_random(best) else "does NOT clearly beat"
        return (
            f"Most faithful for this model and data: {best} (insertion − deletion = "
            f"{self.row(best).score:.3f}; it {beats} random maps, "
            f"{self.row('random').score:.3f})."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "steps": self.steps,
            "best": self.best,
            "rows": [{**asdict(r), "score": r.score} for r in self.rows],
            "skipped": self.skipped,
        }

    def to_rich(self) -> Any:
        from rich.table import Table

        t = Table(title=f"Faithfulness ({self.baseline} baseline, {self.steps} steps)")
        for col in ("method", "deletion AUC ↓", "insertion AUC ↑", "ins − del ↑", "s/image"):
            t.add_column(col, justify="left" if col == "method" else "right")
        best = self.best
        for r in sorted(self.rows, key=lambda r: -r.score):
            name = f"[bold green]{r.method}[/]" if r.method == best else r.method
            t.add_row(
                name,
                f"{r.deletion_auc:.3f}",
                f"{r.insertion_auc:.3f}",
                f"{r.score:.3f}",
                f"{r.seconds_per_image:.3f}",
            )
        return t

    def to_html(self) -> str:
        from html import escape

        head = "".join(
            f"<th>{h}</th>"
            for h in (
                "method",
                "deletion AUC ↓",
                "insertion AUC ↑",
                "insertion − deletion ↑",
                "s / image",
            )
        )
        body = "".join(
            f"<tr><td>{'<b>' + escape(r.method) + '</b>' if r.method == self.best else escape(r.method)}"
            f"</td><td>{r.deletion_auc:.3f}</td><td>{r.insertion_auc:.3f}</td>"
            f"<td>{r.score:.3f}</td><td>{r.seconds_per_image:.3f}</td></tr>"
            for r in sorted(self.rows, key=lambda r: -r.score)
        )
        skipped = "".join(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in self.skipped.items())
        return (
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<p>{escape(self.verdict())}</p>" + (f"<ul>{skipped}</ul>" if skipped else "")
        )


def evaluate_faithfulness(
    model: nn.Module,
    x: torch.Tensor,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    target: int | None = None,
    layer: str | None = None,
    steps: int = 20,
    baseline: str = "mean",
    n_random: int = 3,
    seed: int = 0,
    method_opts: dict[str, dict[str, Any]] | None = None,
) -> FaithfulnessTable:
    """Deletion/insertion AUC (mean over images) per method and for random maps.

    A CAM method on a model without convolutions is listed in ``skipped`` with the
    reason; any other error propagates.
    """
    load_builtin_explainers()
    model, x = as_model_and_input(model, x)
    check_input(model, x)
    baseline = look_up_option(baseline, BASELINES, what="faithfulness baseline")
    tgt = make_target(forward(model, x), target)
    method_opts = method_opts or {}
    rows: list[FaithfulnessRow] = []
    skipped: dict[str, str] = {}
    for method in methods:
        cls = EXPLAINERS.get(method)
        if cls.needs_layer and not conv_layer_names(model):
            skipped[cls.name] = "needs a convolutional layer; the model has none"
            continue
        t0 = time.perf_counter()
        maps = explain(
            model, x, method=cls.name, target=tgt, layer=layer, **method_opts.get(cls.name, {})
        )
        secs = (time.perf_counter() - t0) / x.shape[0]
        d, ins = perturbation_curves(model, x, maps, tgt, steps=steps, baseline=baseline)
        rows.append(
            FaithfulnessRow(
                cls.name, float(auc(d).mean()), float(auc(ins).mean()), secs, x.shape[0]
            )
        )
    gen = torch.Generator().manual_seed(seed)
    dels, inss = [], []
    for _ in range(max(1, n_random)):
        rnd = torch.rand((x.shape[0], *x.shape[2:]), generator=gen).numpy()
        d, ins = perturbation_curves(model, x, rnd, tgt, steps=steps, baseline=baseline)
        dels.append(auc(d).mean())
        inss.append(auc(ins).mean())
    rows.append(
        FaithfulnessRow("random", float(np.mean(dels)), float(np.mean(inss)), 0.0, x.shape[0])
    )
    return FaithfulnessTable(rows, baseline, steps, skipped)
