"""Segmentation speed: medlens' pipeline vs MONAI's UNet in a plain PyTorch loop.

Both sides train and infer on the same synthetic brain-MRI slices, side by side in one
process (the machines are shared and noisy: compare within one run only).

* **plain**: MONAI ``UNet(16, 32, 64, 128, 256, strides 2, 2 residual units)``, float32
  tensors prepared up front, ``DiceLoss(sigmoid)``, AdamW, shuffled index batches,
  inference ``model(x)`` under ``no_grad``.
* **medlens**: ``BatchLoader`` over uint8 caches + ``SegmentTask.training_step`` (uint8 →
  float, batched flips/affine/intensity augmentation, Dice+BCE) with AdamW; inference
  through ``predict_slices``. Run once with the same MONAI UNet (pipeline overhead alone)
  and once with the given ``--model`` (medlens' default).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_segment.py --size 128 --slices 64 --steps 10 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch


def _data(slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    from medlens.data.synthetic.brain import make_brain_mri_like
    from medlens.segment.data import build_slices
    from medlens.segment.layouts import load_segmentation_dataset

    with tempfile.TemporaryDirectory() as tmp:
        per = 16
        root = make_brain_mri_like(tmp, patients=max(1, slices // per), slices=per, size=size, seed=0)
        s = build_slices(load_segmentation_dataset(root))
    return s.images[:slices], s.masks[:slices]


def _monai_unet() -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=3, out_channels=1, channels=(16, 32, 64, 128, 256),
                strides=(2, 2, 2, 2), num_res_units=2)


def _time_train_plain(images: np.ndarray, masks: np.ndarray, bs: int, steps: int) -> float:
    from monai.losses import DiceLoss

    torch.manual_seed(0)
    model = _monai_unet().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = DiceLoss(sigmoid=True)
    x_all = torch.from_numpy(images).float() / 255.0
    y_all = torch.from_numpy(masks).float()
    rates = []
    for step in range(steps + 1):
        idx = torch.randint(0, len(x_all), (bs,))
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_all[idx]), y_all[idx])
        loss.backward()
        opt.step()
        if step:  # first step is warm-up
            rates.append(bs / (time.perf_counter() - t))
    return statistics.median(rates)


def _time_train_medlens(images: np.ndarray, masks: np.ndarray, bs: int, steps: int, model_name: str | None,
                        *, same_work: bool = False) -> float:
    """``same_work``: Dice loss and no augmentation, the plain loop's exact work."""
    from medlens.models.registry import create_model
    from medlens.segment.data import sampling_weights
    from medlens.segment.task import SegmentTask
    from medlens.train.loader import BatchLoader

    torch.manual_seed(0)
    model = _monai_unet() if model_name is None else create_model(model_name, num_classes=1)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    task = SegmentTask(loss="dice", augment=None) if same_work else SegmentTask()
    pos = masks.reshape(len(masks), -1).any(1)
    loader = BatchLoader({"image": images, "mask": masks}, batch_size=bs, shuffle=True,
                         weights=sampling_weights(pos, 0.5), drop_last=True)
    rates, step, dev = [], 0, torch.device("cpu")
    while step <= steps:
        loader.set_epoch(step)
        it = iter(loader)
        while step <= steps:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            opt.zero_grad(set_to_none=True)
            loss = task.training_step(model, batch, dev)
            loss.backward()
            opt.step()
            if step:
                rates.append(bs / (time.perf_counter() - t))
            step += 1
    return statistics.median(rates)


@torch.no_grad()
def _time_infer(images: np.ndarray, bs: int, repeats: int, model: torch.nn.Module, medlens: bool) -> float:
    from medlens.segment.predict import predict_slices

    model.eval()
    rates = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        if medlens:
            predict_slices(model, images, resize=None, batch_size=bs)
        else:  # the same input (uint8 slices) and output (float32 probabilities in an array)
            out = np.empty((len(images), *images.shape[-2:]), dtype=np.float32)
            for i in range(0, len(images), bs):
                x = torch.from_numpy(images[i:i + bs]).float() / 255.0
                out[i:i + bs] = torch.sigmoid(model(x))[:, 0].numpy()
        if r:
            rates.append(len(images) / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per side and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--repeats", type=int, default=2, help="timed inference passes per side")
    ap.add_argument("--model", default="unet_small", help="medlens model for the default-model row")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from medlens.models.registry import create_model

    images, masks = _data(a.slices, a.size)
    print(f"data: {len(images)} slices {a.size}x{a.size}x3, batch {a.batch_size}, "
          f"torch threads {torch.get_num_threads()}, {a.rounds} interleaved rounds (medians)")
    torch.manual_seed(0)
    unet = _monai_unet()
    other = create_model(a.model, num_classes=1)
    pipelines = {  # name → (train timer, inference timer)
        "plain PyTorch + MONAI UNet (Dice)": (
            lambda: _time_train_plain(images, masks, a.batch_size, a.steps),
            lambda: _time_infer(images, a.batch_size, a.repeats, unet, medlens=False)),
        "medlens + MONAI UNet, same work": (
            lambda: _time_train_medlens(images, masks, a.batch_size, a.steps, None, same_work=True),
            lambda: _time_infer(images, a.batch_size, a.repeats, unet, medlens=True)),
        "medlens + MONAI UNet, default task": (
            lambda: _time_train_medlens(images, masks, a.batch_size, a.steps, None), None),
        f"medlens + {a.model}, default task": (
            lambda: _time_train_medlens(images, masks, a.batch_size, a.steps, a.model),
            lambda: _time_infer(images, a.batch_size, a.repeats, other, medlens=True)),
    }
    runs: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pipelines}
    for r in range(a.rounds):  # A B C D, then D C B A: drift on a noisy machine hits all alike
        for name in (list(pipelines) if r % 2 == 0 else list(reversed(pipelines))):
            train_t, infer_t = pipelines[name]
            runs[name][0].append(train_t())
            if infer_t is not None:
                runs[name][1].append(infer_t())
    med = {k: (statistics.median(tr), statistics.median(inf) if inf else float("nan"))
           for k, (tr, inf) in runs.items()}
    plain_tr, plain_inf = next(iter(med.values()))
    print("| pipeline | train slices/s | infer slices/s | train ratio | infer ratio |\n|---|---|---|---|---|")
    for name, (tr, inf) in med.items():
        print(f"| {name} | {tr:.1f} | {inf:.1f} | {tr / plain_tr:.2f} | {inf / plain_inf:.2f} |")
    print("same work: Dice loss, no augmentation (the plain loop's work); default task: Dice+BCE with "
          "flips/affine/intensity augmentation. Target for the same-work row: ratio >= 1.0.")


if __name__ == "__main__":
    main()
