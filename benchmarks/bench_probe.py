"""Linear probe on a frozen ImageNet backbone: cached features against the backbone every epoch.

The small-photo-set recipe trains only a linear head on EfficientNet-Lite0 frozen for the
whole run. Both rows train that head on the same images, split and seed, through the same
engine; they differ only in where the head's inputs come from:

* ``backbone every epoch`` — the frozen backbone runs on every (augmented) training and
  validation image each epoch (medlens before the cache; what a plain frozen fine-tuning
  loop does);
* ``cached features`` — ``train/head_features.py``: 5 augmented views of the training
  images and the validation images go through the backbone once, then only the head runs.

Columns: seconds for ``--epochs`` epochs (no early stop; the cached row includes its one
feature pass), seconds per epoch after that pass, the run projected to the recipe's 30
epochs, the ratio to the cached row, and the validation AUC each reached (same task, so
they should be close: the cache changes how often augmentations are drawn, not the model).

    OMP_NUM_THREADS=2 python benchmarks/bench_probe.py --data ../shared/data/isic_skin_lesions --epochs 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RECIPE_EPOCHS = 30


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="a small photo set (default: synthetic dermoscopy)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=None, help="input side (default: the recipe's 224)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from medlens.data.cache import build_cache
    from medlens.data.synthetic import make_dataset
    from medlens.models import model_info
    from medlens.pipelines.classification import load_index, make_splits
    from medlens.pipelines.classifier_fit import build_model, pretrained_normalize
    from medlens.pipelines.recipes import apply_recipe
    from medlens.train import head_features
    from medlens.train.classify import ClassificationTask
    from medlens.train.engine import fit, seed_everything
    from medlens.train.loader import BatchLoader

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_dataset("dermoscopy", Path(tmp) / "photos", n=48, seed=0)
        cfg = apply_recipe({"data": {"path": str(data), "allow_outside_paths": True},
                            "preprocess": {} if args.size is None else {"size": args.size},
                            "train": {"epochs": args.epochs, "patience": args.epochs + 1, "progress": False,
                                      "device": "cpu"}})
        if cfg.train.freeze_backbone_epochs < cfg.train.epochs:
            ap.error(f"{data}: not a small photo set (the recipe does not freeze the backbone); give one")
        index = make_splits(load_index(cfg), cfg, Path(tmp))
        cache = build_cache(index, cfg.preprocess, progress=False)
        tr = np.array([r.split == "train" for r in cache.records])
        va = np.array([r.split == "val" for r in cache.records])
        x, y = cache.images, cache.labels
        k = len(index.classes)
        mean, std = pretrained_normalize(cfg)
        tcfg = cfg.train.model_copy(update={"head": model_info(cfg.model.name).get("head"), "threads": args.threads})
        rows = []
        for name in ("backbone every epoch", "cached features"):
            seed_everything(tcfg.seed)
            model, _ = build_model(cfg, k)
            task = ClassificationTask(num_classes=k, mean=mean, std=std, augment=cfg.augment)
            t = time.perf_counter()
            if name == "cached features":
                res = head_features.fit_head(model, task, {"image": x[tr], "label": y[tr]},
                                             {"image": x[va], "label": y[va]}, tcfg, Path(tmp) / "cached")
            else:
                res = fit(model, task, BatchLoader({"image": x[tr], "label": y[tr]}, batch_size=tcfg.batch_size,
                                                   shuffle=True, seed=tcfg.seed),
                          BatchLoader({"image": x[va], "label": y[va]}, batch_size=tcfg.batch_size * 2, shuffle=False),
                          tcfg, Path(tmp) / "every-epoch")
            total = time.perf_counter() - t
            per_epoch = sum(h["seconds"] for h in res.history) / len(res.history)
            once = total - per_epoch * len(res.history)
            rows.append({"recipe": name, "images": int(tr.sum() + va.sum()), "epochs": len(res.history),
                         "run_s": round(total, 1), "s_per_epoch": round(per_epoch, 2),
                         f"projected_{RECIPE_EPOCHS}_epochs_s": round(once + RECIPE_EPOCHS * per_epoch, 1),
                         "val_auc_last": round(float(res.history[-1]["val_auc"]), 3)})
    base = rows[-1][f"projected_{RECIPE_EPOCHS}_epochs_s"]
    for r in rows:
        r["x_cached"] = round(float(r[f"projected_{RECIPE_EPOCHS}_epochs_s"]) / max(float(base), 1e-9), 1)
    print(f"data: {data}; {args.threads} thread(s); input {cfg.preprocess.size} px")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
