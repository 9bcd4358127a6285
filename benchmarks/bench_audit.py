"""Benchmark: audit 10,000 PNG patches of 50×50 (target < 60 s on 2 CPU cores).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_audit.py [--n 10000] [--keep DIR]``.
Generates random-ish patches with PIL in a temporary folder (imagefolder layout, two
classes, a few planted duplicates), then times ``run_audit`` and prints a small table:
files/s per stage and peak resident memory (``resource.getrusage``).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_patches(root: Path, n: int, seed: int = 0) -> float:
    import cv2
    from PIL import Image

    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    for i in range(n):
        coarse = rng.integers(0, 256, (5, 5, 3)).astype(np.uint8)
        img = cv2.resize(coarse, (50, 50), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        img = np.clip(img + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)
        d = root / ("cls1" if i % 3 == 0 else "cls0")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"p{i:06d}.png")
    # a few planted exact duplicates
    for k in range(10):
        src = root / ("cls1" if k * 3 % 3 == 0 else "cls0") / f"p{k * 3:06d}.png"
        (root / "cls1" / f"dup{k}.png").write_bytes(src.read_bytes())
    return time.perf_counter() - t


def peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--keep", type=Path, default=None, help="write the patches here (kept)")
    args = ap.parse_args()
    from medlens.audit import run_audit
    from medlens.data.layouts import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "patches"
        gen_s = make_patches(root, args.n)
        rss_before = peak_rss_mb()
        t = time.perf_counter()
        index = load_dataset(root)
        index_s = time.perf_counter() - t
        t = time.perf_counter()
        res = run_audit(index, out_dir=Path(tmp) / "report", exclude_list=Path(tmp) / "exclude.txt")
        audit_s = time.perf_counter() - t
        n = len(index.records)
        tm = res.timings
        print("| stage | seconds | files/s |\n|---|---|---|")
        print(f"| generate {args.n} PNGs (not timed in the target) | {gen_s:.1f} | {args.n / gen_s:,.0f} |")
        print(f"| index ({index.layout}) | {index_s:.2f} | {n / index_s:,.0f} |")
        for k in ("scan_s", "exact_s", "near_s", "shortcut_s"):
            if k in tm:
                print(f"| {k[:-2]} | {tm[k]:.2f} | {n / tm[k]:,.0f} |" if tm[k] > 0 else f"| {k[:-2]} | 0 | - |")
        print(f"| **audit total (incl. report)** | **{audit_s:.1f}** | **{n / audit_s:,.0f}** |")
        print(f"\npeak RSS: {rss_before:.0f} MB before the audit, {peak_rss_mb():.0f} MB after "
              f"({n} files; exact duplicate groups: {res.duplicates['exact']['n_groups']}, "
              f"near groups: {res.duplicates['near']['n_groups']}, blocking: {len(res.blocking)})")
        print(f"target < 60 s: {'met' if audit_s < 60 else 'MISSED'}")


if __name__ == "__main__":
    main()
