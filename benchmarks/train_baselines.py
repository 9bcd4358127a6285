"""The plain-PyTorch baselines of ``bench_train.py``: the loops a user writes by hand, and
the model every pipeline of that benchmark builds (same architecture, seed and memory format).

- :func:`run_plain_files`: a ``Dataset`` that opens each PNG with PIL, augments it in numpy
  and normalises it per item, a ``DataLoader`` and a standard loop with ``loss.item()``;
- :func:`run_plain_memory`: the same loop over pre-decoded uint8 tensors, augmented per batch;
- :func:`data_only_rates`: each pipeline's data path alone (no model), plain and medlens.

``case``/``data`` are ``bench_train.Case`` / ``bench_train.Data``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: The augmentation every pipeline shares: random h/v flips and 90° turns only.
FLIP_ONLY = {
    "hflip": True,
    "vflip": True,
    "rot90": True,
    "rotate_deg": 0.0,
    "scale": 0.0,
    "translate": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "noise_std": 0.0,
}


class PngDataset(torch.utils.data.Dataset):
    """The typical hand-written dataset: PIL per item, numpy augmentation, per-item normalise."""

    def __init__(
        self,
        files: list[str],
        labels: np.ndarray,
        size: int,
        channels: int,
        mean: list[float],
        std: list[float],
    ) -> None:
        self.files, self.labels, self.size = files, labels, size
        self.mode = "RGB" if channels == 3 else "L"
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.files[i]) as im:
            im = im.convert(self.mode)
            if im.size != (self.size, self.size):
                im = im.resize((self.size, self.size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if np.random.rand() < 0.5:
            a = a[:, :, ::-1]
        if np.random.rand() < 0.5:
            a = a[:, ::-1, :]
        a = np.rot90(a, np.random.randint(4), axes=(1, 2))
        a = (a - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(a)), int(self.labels[i])


def _flip_rot_batch(x: torch.Tensor) -> torch.Tensor:
    """Random h/v flips and 90° turns per item, batched (what a careful user writes)."""
    b = x.shape[0]
    x = torch.where((torch.rand(b) < 0.5)[:, None, None, None], x.flip(3), x)
    x = torch.where((torch.rand(b) < 0.5)[:, None, None, None], x.flip(2), x)
    k = torch.randint(0, 4, (b,))
    out = x.clone()
    for r in (1, 2, 3):
        m = k == r
        if m.any():
            out[m] = torch.rot90(x[m], r, dims=(2, 3))
    return out


def build_model(case: Any, seed: int = 0) -> tuple[torch.nn.Module, bool]:
    from medlens.models import create_model, model_info
    from medlens.train.engine import seed_everything

    seed_everything(seed)
    model = create_model(case.model, num_classes=2, in_channels=case.channels, input_size=case.size)
    return model, bool(model_info(case.model).get("channels_last", False))


def _plain_loop(case: Any, batches: Any, steps: int, threads: int) -> float:
    """Standard loop; returns images/s over steps 1..steps (step 0 is the warm-up)."""
    torch.set_num_threads(threads)
    model, cl = build_model(case)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    running, n, t0 = 0.0, 0, 0.0
    for step, (x, y) in enumerate(batches):
        if step == 1:
            t0 = time.perf_counter()
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        running += loss.item()
        if step >= 1:
            n += len(y)
        if step >= steps:
            break
    return n / (time.perf_counter() - t0)


def run_plain_files(case: Any, data: Any, steps: int, threads: int, workers: int) -> float:
    ds = PngDataset(data.files, data.labels, case.size, case.channels, data.mean, data.std)
    dl = torch.utils.data.DataLoader(
        ds,
        batch_size=case.batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
    )
    return _plain_loop(case, dl, steps, threads)


def run_plain_memory(case: Any, data: Any, steps: int, threads: int) -> float:
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)

    def batches():
        order = torch.randperm(len(images))
        for i in range(len(images) // case.batch):
            idx = order[i * case.batch : (i + 1) * case.batch]
            x = _flip_rot_batch(images[idx].float().div_(255.0))
            yield (x - mean) / std, labels[idx]

    return _plain_loop(case, batches(), steps, threads)


def data_only_rates(case: Any, data: Any, steps: int) -> dict[str, float]:
    """Images/s of each pipeline's data path alone (no model): is loading a bottleneck?"""
    from medlens.train.classify import ClassificationTask
    from medlens.train.loader import BatchLoader
    from medlens.transforms.augment import AugmentConfig

    out: dict[str, float] = {}
    if case.source != "pneumonia":
        ds = PngDataset(data.files, data.labels, case.size, case.channels, data.mean, data.std)
        dl = torch.utils.data.DataLoader(ds, batch_size=case.batch, shuffle=True, drop_last=True)
        out["plain-files w0"] = _time_iter((x for x, _ in dl), steps)
    for name, aug in (
        ("medlens", AugmentConfig(**FLIP_ONLY)),
        ("medlens full-aug", AugmentConfig()),
    ):
        task = ClassificationTask(
            num_classes=2, mean=data.mean, std=data.std, augment=aug, channels_last=True
        )
        bl = BatchLoader(
            {"image": data.images, "label": data.labels},
            batch_size=case.batch,
            shuffle=True,
            drop_last=True,
        )
        out[name] = _time_iter(
            (task.prepare(b["image"], torch.device("cpu"), train=True) for b in bl), steps
        )
    return out


def _time_iter(it: Any, steps: int) -> float:
    n, t0 = 0, 0.0
    for i, x in enumerate(it):
        if i == 1:
            t0 = time.perf_counter()
        if i >= 1:
            n += len(x)
        if i >= steps:
            break
    return n / max(time.perf_counter() - t0, 1e-9)
