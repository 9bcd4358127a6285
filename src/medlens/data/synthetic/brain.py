"""Brain-MRI-like data with lesion masks, for tests, demos and benchmarks.

Each patient is a small 3D head: an elliptical brain with smooth texture, a bright
skull ring, two dark ventricles and (in most patients) one FLAIR-hyperintense lesion of
random, irregular shape spanning a run of slices. Three channels mimic the LGG set:
pre-contrast, FLAIR, post-contrast. ``difficulty`` in [0, 1] lowers lesion contrast and
size and raises noise and bias field, so a model's score moves with it.

Layouts written (see :func:`make_brain_mri_like`): ``kaggle_3m`` (TIFF slices and 0/255
masks per case folder), ``nifti`` (``images/<case>.nii.gz`` 4D + ``labels/<case>.nii.gz``)
and ``nnunet`` (``dataset.json``, ``imagesTr/<case>_000<c>.nii.gz``, ``labelsTr``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from medlens.options import look_up_option

FORMATS = ("kaggle_3m", "nifti", "nnunet")
#: Physical voxel size written to volumes, (x, y, z) mm.
SPACING = (1.0, 1.0, 3.0)


def brain_volume(
    rng: np.random.Generator,
    *,
    slices: int = 20,
    size: int = 128,
    difficulty: float = 0.5,
    lesion: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic head: image ``(3, D, H, W)`` uint8 and mask ``(D, H, W)`` uint8 0/1."""
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    if slices < 1 or size < 16:
        raise ValueError(f"need slices >= 1 and size >= 16, got slices={slices}, size={size}")
    d, s = slices, size
    z = np.linspace(-1, 1, d)[:, None, None]
    y = np.linspace(-1, 1, s)[None, :, None]
    x = np.linspace(-1, 1, s)[None, None, :]
    # head radius shrinks towards the top and bottom slices
    ax, ay = rng.uniform(0.72, 0.82), rng.uniform(0.82, 0.92)
    rz = np.sqrt(np.clip(1 - (0.8 * z) ** 2, 0.15, 1))
    r = np.sqrt((x / (ax * rz)) ** 2 + (y / (ay * rz)) ** 2)
    brain = r < 0.88
    skull = (r >= 0.9) & (r < 1.0)
    vx = rng.uniform(0.08, 0.12)
    vent = (((np.abs(x) - vx) / 0.07) ** 2 + (y / 0.22) ** 2 < 1 / rz**2 * 0.35) & (np.abs(z) < 0.5)
    vent &= brain

    texture = _smooth_noise(rng, (d, s, s), sigma=s / 24)
    noise_sd = 0.02 + 0.08 * difficulty
    bias = 1 + (0.05 + 0.25 * difficulty) * (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1))
    mask = np.zeros((d, s, s), dtype=bool)
    if lesion:
        mask = _lesion(rng, brain & ~vent, z, y, x, difficulty)

    contrast = 0.45 * (1 - difficulty) + 0.12
    chans = []
    #            brain  skull  ventricle  lesion delta
    for base, sk, ve, le in ((0.45, 0.85, 0.15, -0.4 * contrast),
                             (0.40, 0.25, 0.08, contrast),
                             (0.42, 0.80, 0.12, 0.2 * contrast)):
        c = np.zeros((d, s, s))
        c[brain] = base + 0.06 * texture[brain]
        c[skull] = sk
        c[vent] = ve
        c[mask] += le
        c = c * bias + rng.normal(0, noise_sd, c.shape) * (brain | skull)
        chans.append(c)
    img = np.clip(np.stack(chans) * 255, 0, 255).astype(np.uint8)
    return img, mask.astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.normal(size=shape), sigma=(0.6, sigma, sigma))
    return n / (n.std() + 1e-8)


def _lesion(rng, allowed, z, y, x, difficulty) -> np.ndarray:
    """An irregular blob: union of 2–5 ellipsoids near a random centre inside the brain."""
    d = allowed.shape[0]
    scale = 0.22 * (1 - 0.55 * difficulty) * rng.uniform(0.7, 1.3)
    for _ in range(20):
        cz, cy, cx = rng.uniform(-0.4, 0.4), rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)
        blob = np.zeros(allowed.shape, dtype=bool)
        for _ in range(int(rng.integers(2, 6))):
            oy, ox = rng.normal(0, scale * 0.6, 2)
            ry, rx = scale * rng.uniform(0.5, 1.1, 2)
            rzz = max(scale * rng.uniform(1.5, 3.0), 2.5 / d)
            blob |= ((z - cz) / rzz) ** 2 + ((y - cy - oy) / ry) ** 2 + ((x - cx - ox) / rx) ** 2 < 1
        blob &= allowed
        if blob.sum() > 20:
            return blob
    return np.zeros(allowed.shape, dtype=bool)


def make_brain_mri_like(
    root: str | Path,
    *,
    patients: int = 6,
    slices: int = 20,
    size: int = 128,
    difficulty: float = 0.5,
    seed: int = 0,
    fmt: str = "kaggle_3m",
    lesion_fraction: float = 0.85,
    institutions: int = 0,
) -> Path:
    """Write a synthetic brain-MRI segmentation set under ``root`` and return ``root``.

    Args:
        patients: number of cases (case folder / volume per patient).
        slices: slices per patient (axial).
        size: slice side in pixels.
        difficulty: 0 (obvious lesions) … 1 (small, faint lesions in noise).
        seed: everything is drawn from ``numpy.random.default_rng(seed)``.
        fmt: ``"kaggle_3m"``, ``"nifti"`` or ``"nnunet"`` (see the module docstring).
        lesion_fraction: share of patients with a lesion (at least one always has one).
        institutions: when > 0, cases are named like TCGA's (``TCGA_S<k>_<case>_<date>``,
            site ``S<k>`` for case ``i`` with ``k = i % institutions``), so validation by
            institution (``--group-by institution``) can be tried on them.
    """
    fmt = look_up_option(fmt, FORMATS, what="synthetic brain format")
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(patients):
        case = (f"TCGA_S{i % institutions}_{i:04d}_2020{(i % 12) + 1:02d}01" if institutions > 0
                else f"SYN_{i:03d}_2020{(i % 12) + 1:02d}01")
        has = i == 0 or rng.random() < lesion_fraction
        img, mask = brain_volume(rng, slices=slices, size=size, difficulty=difficulty, lesion=has)
        cases.append(case)
        if fmt == "kaggle_3m":
            _write_kaggle_case(root / case, case, img, mask)
        elif fmt == "nifti":
            from medlens.io.volumes import write_volume

            geo = _geometry()
            write_volume(root / "images" / f"{case}.nii.gz", img, like=geo)
            write_volume(root / "labels" / f"{case}.nii.gz", mask, like=geo)
        else:
            from medlens.io.volumes import write_volume

            geo = _geometry()
            for c in range(img.shape[0]):
                write_volume(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", img[c], like=geo)
            write_volume(root / "labelsTr" / f"{case}.nii.gz", mask, like=geo)
    if fmt == "nnunet":
        from medlens.io.atomic import atomic_write_text

        meta = {
            "channel_names": {"0": "T1", "1": "FLAIR", "2": "T1c"},
            "labels": {"background": 0, "lesion": 1},
            "numTraining": patients,
            "file_ending": ".nii.gz",
        }
        atomic_write_text(root / "dataset.json", json.dumps(meta, indent=2) + "\n")
    return root


def _geometry() -> dict[str, list[float]]:
    return {"spacing": list(SPACING), "origin": [0.0, 0.0, 0.0],
            "direction": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]}


def _write_kaggle_case(folder: Path, case: str, img: np.ndarray, mask: np.ndarray) -> None:
    from PIL import Image

    from medlens.io.atomic import atomic_write_bytes

    for k in range(img.shape[1]):
        for name, arr in ((f"{case}_{k + 1}.tif", np.moveaxis(img[:, k], 0, -1)),
                          (f"{case}_{k + 1}_mask.tif", mask[k] * 255)):
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8))).save(buf, format="TIFF")
            atomic_write_bytes(folder / name, buf.getvalue())
