"""Benchmark: medlens' training loop against plain PyTorch loops, side by side in one run.

Run: ``python benchmarks/bench_train.py [--repeats 3] [--steps 20] [--threads 2] [--quick]
[--cases cancernet,resnet18] [--json out.json]``.

Same model (built by ``create_model``, same seed, ``channels_last`` as ``model_info``
says), same images, same batch size, same torch threads, same optimiser (AdamW), same
augmentation (random h/v flips + 90° rotations) in every pipeline:

- ``plain-files w0`` / ``w2``: what a typical user writes — a ``Dataset`` that opens each
  PNG with PIL, augments it in numpy and normalises it per item, a ``DataLoader`` with
  ``num_workers=0`` / ``2``, and a standard loop with ``loss.item()`` every step.
- ``plain-memory``: the same loop over pre-decoded uint8 tensors in memory, augmented per
  batch in torch — the fair "same data" reference.
- ``medlens``: the uint8 cache (``build_cache``) + ``BatchLoader`` + ``ClassificationTask``
  (batched augmentation, flips/rot90 only) + ``engine.fit`` with progress off.
- ``medlens full-aug``: the same with the default ``AugmentConfig`` (adds affine, colour
  jitter, noise): shows what the richer augmentation costs.

Each measurement runs ``steps + 1`` training steps and times the last ``steps`` (the first
is a warm-up); for ``fit`` the window is taken from the loader's own batch requests, so
validation and checkpoint writing are excluded. Pipelines are interleaved (ABAB…, order
reversed every other repeat) and medians reported, because the machine is noisy. Data:
the real IDC patches in ``<repo>/../shared/data/idc_breast_histopathology`` when present,
else synthetic IDC-like patches (``make_idc_like``); case ``pneumonia`` uses the
PneumoniaMNIST ``.npz`` (in memory only, so no plain-files rows).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling baselines module, also when loaded by path
from train_baselines import FLIP_ONLY, build_model, data_only_rates, run_plain_files, run_plain_memory  # noqa: E402, I001

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data"


@dataclass
class Case:
    """One model/input/batch configuration."""

    model: str
    size: int
    batch: int
    source: str = "idc"  # "idc" (PNG files) or "pneumonia" (npz, memory only)
    channels: int = 3


@dataclass
class Data:
    """The images of one case: files + labels and the medlens uint8 cache."""

    files: list[str]
    labels: np.ndarray
    images: np.ndarray  # (N, C, S, S) uint8, from build_cache
    mean: list[float]
    std: list[float]
    source: str
    cache_s: dict[str, float] = field(default_factory=dict)


CASES = {
    "cancernet": Case("cancernet", 50, 64),
    "resnet18": Case("resnet18", 28, 128),  # slow on CPU (small stem keeps 28 px): ~17 img/s/thread
    "small_cnn": Case("test_cnn", 32, 128),  # tiny network: per-step overhead shows most here
    "pneumonia": Case("resnet18", 28, 128, source="pneumonia", channels=1),
    # tiny ones for --quick / the smoke test
    "test_cancernet": Case("test_cancernet", 50, 16),
    "test_cnn": Case("test_cnn", 32, 16),
}


# ------------------------------------------------------------------------------ data


def idc_root(tmp: Path, quick: bool, synthetic: bool) -> tuple[Path, str]:
    real = SHARED / "idc_breast_histopathology"
    if real.is_dir() and not synthetic:
        return real.resolve(), f"real IDC ({real.resolve()})"
    from medlens.data.synthetic import make_idc_like

    pat, per = (2, 40) if quick else (10, 300)
    root = tmp / "idc"
    if not root.is_dir():  # generated once, shared by the cases of this run
        make_idc_like(root, patients=pat, patches_per_patient=per, seed=0)
    return root, f"synthetic IDC-like ({pat * per} patches)"


def load_case_data(case: Case, tmp: Path, quick: bool, synthetic: bool) -> Data:
    """Index the data and build the medlens cache twice (miss, then hit), timed."""
    from medlens.data.cache import build_cache
    from medlens.data.layouts import load_dataset
    from medlens.transforms.preprocess import PreprocessConfig

    if case.source == "pneumonia":
        root, desc = (
            (SHARED / "pneumoniamnist" / "pneumoniamnist.npz").resolve(),
            "PneumoniaMNIST train",
        )
        if not root.is_file():
            raise SystemExit(f"case 'pneumonia': {root} not found; leave it out of --cases")
    else:
        root, desc = idc_root(tmp, quick, synthetic)
    index = load_dataset(root)
    if case.source == "pneumonia":
        index = index.subset([r for r in index.records if r.split == "train"])
    pcfg = PreprocessConfig(size=case.size, channels=case.channels, resize="stretch")
    cdir = tmp / f"cache_{case.model}_{case.size}"
    times = {}
    for what in ("first_run", "cache_hit"):
        t = time.perf_counter()
        cache = build_cache(index, pcfg, cache_dir=cdir)
        times[what] = time.perf_counter() - t
    chans = [cache.images[:, c].astype(np.float32) / 255.0 for c in range(case.channels)]
    mean, std = [float(x.mean()) for x in chans], [max(float(x.std()), 1e-3) for x in chans]
    return Data(
        [r.path for r in cache.records],
        cache.labels,
        cache.images,
        mean,
        std,
        f"{desc}, {len(cache.records)} images",
        times,
    )


# ------------------------------------------------------------------------------ pipelines


class TimedLoader:
    """Wraps a BatchLoader; records when each batch is handed out (the previous step has ended)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.stamps, self.sizes = inner, [], []

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self):
        for batch in self.inner:
            self.stamps.append(time.perf_counter())
            self.sizes.append(len(batch["label"]))
            yield batch
        self.stamps.append(time.perf_counter())

    def rate(self) -> float:
        """Images/s from the end of the warm-up step to the end of the last timed step."""
        # stamps[i] is taken when batch i is handed out, i.e. after step i-1 ended.
        if len(self.stamps) < 3:
            raise RuntimeError("too few steps to time; raise --steps or use more data")
        last = len(self.stamps) - 1
        return sum(self.sizes[1:last]) / (self.stamps[last] - self.stamps[1])


def run_medlens(
    case: Case, data: Data, steps: int, threads: int, tmp: Path, full_aug: bool = False
) -> float:
    from medlens.train.classify import ClassificationTask
    from medlens.train.config import TrainConfig
    from medlens.train.engine import fit
    from medlens.train.loader import BatchLoader
    from medlens.transforms.augment import AugmentConfig

    torch.set_num_threads(threads)
    model, cl = build_model(case)
    aug = AugmentConfig() if full_aug else AugmentConfig(**FLIP_ONLY)
    task = ClassificationTask(
        num_classes=2, mean=data.mean, std=data.std, augment=aug, channels_last=cl
    )
    train = TimedLoader(
        BatchLoader(
            {"image": data.images, "label": data.labels},
            batch_size=case.batch,
            shuffle=True,
            seed=0,
            drop_last=True,
        )
    )
    nval = min(len(data.labels), case.batch)
    val = BatchLoader(
        {"image": data.images[:nval], "label": data.labels[:nval]}, batch_size=nval, shuffle=False
    )
    cfg = TrainConfig(
        epochs=1,
        batch_size=case.batch,
        max_steps_per_epoch=steps + 1,
        scheduler="none",
        progress=False,
        threads=threads,
        channels_last=cl,
        device="cpu",
        seed=0,
    )
    with tempfile.TemporaryDirectory(dir=tmp) as run_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-batch validation may hold one class only
        fit(model, task, train, val, cfg, run_dir)
    # with max_steps_per_epoch the engine asks for batch steps+1 and stops: that stamp ends the window
    train.stamps = train.stamps[: steps + 2]
    return train.rate()


# ------------------------------------------------------------------------------ driver


def pipelines_for(case: Case, quick: bool, tmp: Path) -> dict[str, Any]:
    p: dict[str, Any] = {}
    if case.source != "pneumonia":
        p["plain-files w0"] = lambda c, d, s, t: run_plain_files(c, d, s, t, 0)
        if not quick:
            p["plain-files w2"] = lambda c, d, s, t: run_plain_files(c, d, s, t, 2)
    p["plain-memory"] = run_plain_memory
    p["medlens"] = lambda c, d, s, t: run_medlens(c, d, s, t, tmp)
    if not quick:
        p["medlens full-aug"] = lambda c, d, s, t: run_medlens(c, d, s, t, tmp, full_aug=True)
    return p


def bench_case(case: Case, data: Data, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    steps = min(args.steps, len(data.labels) // case.batch - 1)
    if steps < 2:
        raise SystemExit(
            f"{case.model}: {len(data.labels)} images are too few for batch {case.batch}"
        )
    pipes = pipelines_for(case, args.quick, tmp)
    rates: dict[str, list[float]] = {k: [] for k in pipes}
    for r in range(args.repeats):
        order = list(pipes) if r % 2 == 0 else list(reversed(pipes))
        for name in order:
            rates[name].append(pipes[name](case, data, steps, args.threads))
    med = {k: statistics.median(v) for k, v in rates.items()}
    files_ref = max((v for k, v in med.items() if k.startswith("plain-files")), default=None)
    rows = []
    for name, v in med.items():
        rows.append(
            {
                "model": case.model,
                "input": f"{case.size}x{case.size}x{case.channels}",
                "batch": case.batch,
                "pipeline": name,
                "img_s": v,
                "runs": rates[name],
                "steps": steps,
                "ratio_vs_plain_files": None if files_ref is None else v / files_ref,
                "ratio_vs_plain_memory": v / med["plain-memory"],
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = [
        "model",
        "input",
        "batch",
        "pipeline",
        "img/s",
        "ratio vs plain-files",
        "ratio vs plain-memory",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rf = "-" if r["ratio_vs_plain_files"] is None else f"{r['ratio_vs_plain_files']:.2f}"
        lines.append(
            f"| {r['model']} | {r['input']} | {r['batch']} | {r['pipeline']} | {r['img_s']:,.0f} "
            f"| {rf} | {r['ratio_vs_plain_memory']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--repeats", type=int, default=3, help="interleaved repeats per pipeline (median reported)"
    )
    ap.add_argument(
        "--steps", type=int, default=10, help="timed training steps per run (+1 warm-up)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for every pipeline (1: on a shared 2-core machine 2 oversubscribe)",
    )
    ap.add_argument(
        "--cases",
        default=None,
        help=f"comma-separated cases from {sorted(CASES)} (default cancernet,small_cnn)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny synthetic data and tiny models, 1 repeat, 3 steps, fewer pipelines (smoke test)",
    )
    ap.add_argument(
        "--synthetic",
        action="store_true",
        help="use synthetic IDC-like data even if real data exists",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.synthetic = True
        args.cases = args.cases or "test_cancernet,test_cnn"
        args.repeats, args.steps = 1, min(args.steps, 3)
    args.cases = args.cases or "cancernet,small_cnn"
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")
    if args.repeats < 1 or args.steps < 2 or args.threads < 1:
        ap.error("--repeats and --threads must be >= 1, --steps >= 2")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    load = os.getloadavg()
    print(
        f"torch {torch.__version__}, threads {args.threads}, steps {args.steps}, repeats {args.repeats}, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="medlens_bench_train_") as t:
        tmp = Path(t)
        for name in args.cases.split(","):
            case = CASES[name]
            data = load_case_data(case, tmp, args.quick, args.synthetic)
            print(
                f"\n{name}: {data.source}; cache build {data.cache_s['first_run']:.2f} s first run, "
                f"{data.cache_s['cache_hit']:.2f} s cache hit",
                flush=True,
            )
            torch.set_num_threads(args.threads)
            dr = data_only_rates(case, data, min(args.steps, len(data.labels) // case.batch - 1))
            print(
                "data path alone (no model), img/s: "
                + ", ".join(f"{k} {v:,.0f}" for k, v in dr.items())
            )
            case_rows = bench_case(case, data, args, tmp)
            print(format_table(case_rows), flush=True)
            rows += case_rows
            extra[name] = {"data": data.source, "cache_s": data.cache_s, "data_only_img_s": dr}
    load_end = os.getloadavg()
    print("\n" + format_table(rows))
    print(
        f"\nload average at end: {load_end[0]:.1f} {load_end[1]:.1f} {load_end[2]:.1f}; "
        "ratio vs plain-files is against the faster plain-files variant; target for medlens: >= 1.0"
    )
    if args.json:
        from medlens.io.atomic import atomic_write_json

        atomic_write_json(
            args.json,
            {
                "argv": sys.argv[1:] if argv is None else argv,
                "load_start": load,
                "load_end": load_end,
                "torch": torch.__version__,
                "rows": rows,
                "cases": extra,
            },
        )
    return rows


if __name__ == "__main__":
    main()
