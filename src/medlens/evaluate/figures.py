"""Report figures as PNG bytes (matplotlib's Agg canvas, no global pyplot state).

Each function takes plain data (usually a piece of ``metrics.json``) and returns PNG
bytes, or ``None`` when there is nothing to draw (e.g. no ROC curve for a one-class
test set). Figures are small (100 dpi) so a report renders in well under a second.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

_DPI = 100


def _plain(text: Any, limit: int = 40) -> str:
    """Text shown literally: ``$`` would otherwise start matplotlib mathtext."""
    return str(text)[:limit].replace("$", r"\$")


def _new_figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def roc_png(
    roc_curve: dict[str, Any] | None,
    *,
    auc: float | None = None,
    operating_point: dict[str, Any] | None = None,
) -> bytes | None:
    """ROC curve of the disease score, with the operating point marked when given."""
    if not roc_curve:
        return None
    fig, (ax,) = _new_figure(4.2, 4.0)
    label = "ROC" if auc is None else f"ROC (AUC {auc:.3f})"
    ax.plot(roc_curve["fpr"], roc_curve["tpr"], color="#1f5fa8", lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="#999999", lw=1, label="chance")
    op = operating_point or {}
    if op.get("sensitivity") is not None and op.get("specificity") is not None:
        ax.plot(
            [1 - op["specificity"]],
            [op["sensitivity"]],
            "o",
            color="#c0392b",
            ms=8,
            label=f"operating point (t={op['threshold']:.3f})",
        )
    ax.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def pr_png(pr_curve: dict[str, Any] | None, *, ap: float | None = None) -> bytes | None:
    """Precision-recall curve of the disease score, with the prevalence baseline."""
    if not pr_curve:
        return None
    fig, (ax,) = _new_figure(4.2, 4.0)
    label = "PR" if ap is None else f"PR (AP {ap:.3f})"
    ax.plot(pr_curve["recall"], pr_curve["precision"], color="#1f5fa8", lw=2, label=label)
    if pr_curve.get("prevalence") is not None:
        ax.axhline(pr_curve["prevalence"], ls="--", color="#999999", lw=1, label="prevalence")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def confusion_png(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """Two panels: counts and row-normalised (per true class) confusion matrix."""
    cm = np.asarray(matrix, dtype=np.float64)
    k = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = max(3.2, 0.55 * k + 2.2)
    fig, axes = _new_figure(2 * size + 0.6, size, ncols=2)
    names = [_plain(c, 18) for c in classes]
    for ax, data, title, fmt in (
        (axes[0], cm, "counts", "{:.0f}"),
        (axes[1], norm, "row-normalised", "{:.2f}"),
    ):
        ax.imshow(data, cmap="Blues", vmin=0, vmax=max(data.max(), 1e-9))
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= 12:
            cut = data.max() / 2 if data.max() > 0 else 1
            for i in range(k):
                for j in range(k):
                    ax.text(
                        j,
                        i,
                        fmt.format(data[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if data[i, j] > cut else "black",
                    )
    return _png(fig)


def reliability_png(
    before: dict[str, Any] | None,
    after: dict[str, Any] | None = None,
    *,
    ece: float | None = None,
    ece_after: float | None = None,
) -> bytes | None:
    """Reliability diagram (accuracy vs confidence per bin), before/after temperature."""
    if not before:
        return None
    fig, (ax,) = _new_figure(4.2, 4.0)
    ax.plot([0, 1], [0, 1], ls="--", color="#999999", lw=1, label="perfect")
    for curve, name, color, value in (
        (before, "model", "#1f5fa8", ece),
        (after, "after temperature", "#27ae60", ece_after),
    ):
        if not curve:
            continue
        pts = [(c, a) for c, a in zip(curve["confidence"], curve["accuracy"]) if c is not None]
        if not pts:
            continue
        xs, ys = zip(*pts)
        label = name if value is None else f"{name} (ECE {value:.3f})"
        ax.plot(xs, ys, "o-", color=color, ms=4, label=label)
    ax.set(xlabel="confidence (top label)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


#: History keys that are not learning curves (the learning rate is in the log).
_NOT_CURVES = ("epoch", "lr", "time", "seconds")
#: Throughput keys: items (images, slices, patches) per second.
_THROUGHPUT = ("items_per_s", "images_per_s", "img_per_s")


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[Any], list[float]]:
    pts = [
        (h.get("epoch", i), float(h[key]))
        for i, h in enumerate(history)
        if isinstance(h.get(key), (int, float)) and not isinstance(h.get(key), bool)
        and np.isfinite(h[key])
    ]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])


def training_curves_figure(
    history: Sequence[dict[str, Any]] | None,
    *,
    best_epoch: int | None = None,
    monitor: str | None = None,
) -> Any:
    """The training curves as a matplotlib ``Figure`` (``None`` without history).

    One panel per kind of quantity, so no scale hides another: losses; bounded metrics
    (AUC, accuracy, Dice — every value in [0, 1], y axis 0–1.05); throughput in items/s;
    and any other numeric series on a fourth panel. ``best_epoch`` (the epoch whose
    weights were kept) is marked on every panel with a dashed line, ``monitor`` names the
    metric it was chosen on.
    """
    if not history:
        return None
    from matplotlib.ticker import MaxNLocator

    keys: list[str] = []
    for h in history:
        for key, v in h.items():
            if key not in _NOT_CURVES and key not in keys and isinstance(v, (int, float)) \
                    and not isinstance(v, bool):
                keys.append(key)
    loss = [k for k in keys if "loss" in k]
    speed = [k for k in keys if k in _THROUGHPUT]
    rest = [k for k in keys if k not in loss and k not in speed]
    bounded = [k for k in rest if all(0.0 <= y <= 1.0 for y in _series(history, k)[1])]
    other = [k for k in rest if k not in bounded]
    panels = [
        (loss, "loss", "loss", None),
        (bounded, "validation metrics", "metric (0–1)", (0.0, 1.05)),
        (speed, "throughput", "items/s", None),
        (other, "other", "value", None),
    ]
    panels = [p for p in panels if p[0]] or [([], "training", "value", None)]
    fig, axes = _new_figure(3.4 * len(panels) + 0.6, 3.4, ncols=len(panels))
    for ax, (series, title, ylabel, ylim) in zip(axes, panels):
        for key in series:
            xs, ys = _series(history, key)
            if xs:
                ax.plot(xs, ys, "o-", ms=3, label=_plain(key))
        if best_epoch is not None and best_epoch >= 0:
            chosen = f"chosen epoch {best_epoch}" + (f" (best {_plain(monitor)})" if monitor else "")
            ax.axvline(best_epoch, ls="--", color="#c0392b", lw=1.2, label=chosen)
        if ylim:
            ax.set_ylim(*ylim)
        elif speed and series == speed:
            ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def training_curves_png(
    history: Sequence[dict[str, Any]] | None,
    *,
    best_epoch: int | None = None,
    monitor: str | None = None,
) -> bytes | None:
    """PNG of :func:`training_curves_figure`."""
    fig = training_curves_figure(history, best_epoch=best_epoch, monitor=monitor)
    return None if fig is None else _png(fig)


def image_grid_png(
    samples: Sequence[tuple[np.ndarray, str]], *, ncols: int = 6, tile: float = 1.7
) -> bytes | None:
    """Grid of (HWC or HW uint8 image, caption) pairs — e.g. correct/incorrect examples."""
    if not samples:
        return None
    from matplotlib.figure import Figure

    n = len(samples)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(tile * ncols, (tile + 0.35) * nrows), dpi=_DPI)
    for i, (img, caption) in enumerate(samples):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        arr = np.asarray(img)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(_plain(caption), fontsize=7)
        ax.axis("off")
    return _png(fig)
