"""Patient-level MIL speed: 20 patients × 150 cells at 128 px (issue 14's budget: < 15 min on 2 cores).

Generates the synthetic APL/AML set once (``--data``), then trains each recipe for
``--epochs`` epochs (no early stop) and prints one table row per recipe:

* ``frozen:ENCODER`` — the default: the pretrained encoder is frozen, every cell's
  features are computed once (``embed_s``) and only the pooling head trains on them;
* ``e2e:ENCODER`` — the encoder trains end to end: every cell is encoded (forward and
  backward) every epoch.

Columns: decode time, the one-time feature pass, seconds per epoch, the whole run, the
run projected to the default epoch count, and each recipe's projected run relative to
the fastest one.

    OMP_NUM_THREADS=2 python benchmarks/bench_mil.py --epochs 2 --recipes frozen:efficientnet_lite0 e2e:resnet18
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "medlens-bench-aplaml")
    ap.add_argument("--patients-per-class", type=int, default=10)
    ap.add_argument("--cells", type=int, default=150)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipes", nargs="+", default=["frozen:efficientnet_lite0", "e2e:resnet18"],
                    help="frozen:ENCODER (pretrained imagenet, cached features) or e2e:ENCODER (trained end to end)")
    args = ap.parse_args()

    from medlens.data.synthetic.blood import make_leukemia_like
    from medlens.mil.config import DEFAULT_TRAIN, PatientConfig
    from medlens.mil.train import train_patient
    from medlens.train.config import TrainConfig

    t = time.perf_counter()
    if not (args.data / "master.csv").exists():
        make_leukemia_like(args.data, patients_per_class=args.patients_per_class, cells_per_patient=args.cells,
                           size=args.size, seed=0, overwrite=True)
    gen_s = time.perf_counter() - t
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            kind, _, enc = recipe.partition(":")
            if kind not in ("frozen", "e2e") or not enc:
                ap.error(f"recipe {recipe!r}: write frozen:ENCODER or e2e:ENCODER")
            train = dict(DEFAULT_TRAIN, epochs=args.epochs, patience=args.epochs + 1, device="cpu",
                         threads=args.threads, progress=False)
            frozen = kind == "frozen"
            cfg = PatientConfig(data=str(args.data), size=args.size, encoder=enc, n_bootstrap=200,
                                pretrained="imagenet" if frozen else None, encoder_trainable=not frozen,
                                max_cells=None if frozen else args.cells,  # e2e: every cell, every epoch
                                train=TrainConfig(**train))
            t = time.perf_counter()
            # a fresh feature cache per recipe: the one-time feature pass is part of the measured run
            m = train_patient(cfg, Path(tmp) / recipe.replace(":", "-"), cache_dir=Path(tmp) / f"cache-{kind}")
            total = time.perf_counter() - t
            tm = m["timing_seconds"]
            per_epoch = tm["fit"] / max(tm["epochs"], 1)
            projected = total - tm["fit"] + DEFAULT_TRAIN["epochs"] * per_epoch
            rows.append({"recipe": recipe, "cells": 2 * args.patients_per_class * args.cells, "size": args.size,
                         "decode_s": round(tm["decode"], 1), "embed_s": round(tm.get("embed", 0.0), 1),
                         "s_per_epoch": round(per_epoch, 2), "run_s": round(total, 1),
                         f"projected_{DEFAULT_TRAIN['epochs']}_epochs_min": round(projected / 60, 2),
                         "test_auc": m.get("roc_auc"), "_projected": projected})
    fastest = min(r["_projected"] for r in rows)
    for r in rows:
        r["x_fastest"] = round(r.pop("_projected") / fastest, 1)
    print(f"data: {args.data} (generated in {gen_s:.0f} s)")
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
