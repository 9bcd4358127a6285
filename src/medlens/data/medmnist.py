"""MedMNIST ``.npz`` files: reading them as a :class:`DatasetIndex` and fetching them.

MedMNIST v2/v3 files hold ``{train,val,test}_images`` (``(N, H, W)`` or ``(N, H, W, 3)``
uint8) and ``{train,val,test}_labels`` (``(N, 1)`` or ``(N,)``). The images stay in
memory: records are addressed as ``"<abs npz>#<split>/<i>"`` and read through
:meth:`DatasetIndex.read`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from medlens.data.records import SPLITS, DatasetIndex, Record
from medlens.errors import BadInputError, ConfigError, MedlensError

logger = logging.getLogger(__name__)

#: Official MedMNIST v3 (MedMNIST+) download location; override with MEDLENS_MEDMNIST_URL.
DEFAULT_BASE_URL = "https://zenodo.org/records/10519652/files"
SIZES = (28, 64, 128, 224)

#: Class names of the standard 2D MedMNIST flags (from MedMNIST's ``INFO`` table).
_ORGAN = [
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
]
CLASS_NAMES: dict[str, list[str]] = {
    "pathmnist": [
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ],
    "dermamnist": [
        "actinic keratoses and intraepithelial carcinoma",
        "basal cell carcinoma",
        "benign keratosis-like lesions",
        "dermatofibroma",
        "melanoma",
        "melanocytic nevi",
        "vascular lesions",
    ],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "breastmnist": ["malignant", "normal, benign"],
    "bloodmnist": [
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature granulocytes",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ],
    "tissuemnist": [
        "Collecting Duct, Connecting Tubule",
        "Distal Convoluted Tubule",
        "Glomerular endothelial cells",
        "Interstitial endothelial cells",
        "Leukocytes",
        "Podocytes",
        "Proximal Tubule Segments",
        "Thick Ascending Limb",
    ],
    "organamnist": _ORGAN,
    "organcmnist": _ORGAN,
    "organsmnist": _ORGAN,
}
MULTI_LABEL_FLAGS = frozenset({"chestmnist"})

#: Official md5 sums (MedMNIST v3 ``INFO``), keyed by (flag, size).
MD5: dict[tuple[str, int], str] = {
    ("pathmnist", 28): "a8b06965200029087d5bd730944a56c1",
    ("pathmnist", 64): "55aa9c1e0525abe5a6b9d8343a507616",
    ("pathmnist", 128): "ac42d08fb904d92c244187169d1fd1d9",
    ("pathmnist", 224): "2c51a510bcdc9cf8ddb2af93af1eadec",
    ("chestmnist", 28): "02c8a6516a18b556561a56cbdd36c4a8",
    ("dermamnist", 28): "0744692d530f8e62ec473284d019b0c7",
    ("dermamnist", 64): "b70a2f5635c6199aeaa28c31d7202e1f",
    ("dermamnist", 128): "2defd784463fa5243564e855ed717de1",
    ("dermamnist", 224): "8974907d8e169bef5f5b96bc506ae45d",
    ("octmnist", 28): "c68d92d5b585d8d81f7112f81e2d0842",
    ("octmnist", 64): "e229e9440236b774d9f0dfef9d07bdaf",
    ("octmnist", 128): "0a97e76651ace45c5d943ee3f65b63ae",
    ("octmnist", 224): "abc493b6d529d5de7569faaef2773ba3",
    ("pneumoniamnist", 28): "28209eda62fecd6e6a2d98b1501bb15f",
    ("pneumoniamnist", 64): "8f4eceb4ccffa70c672198ea285246c6",
    ("pneumoniamnist", 128): "05b46931834c231683c68f40c47b2971",
    ("pneumoniamnist", 224): "d6a3c71de1b945ea11211b03746c1fe1",
    ("retinamnist", 28): "bd4c0672f1bba3e3a89f0e4e876791e4",
    ("retinamnist", 64): "afda852cc34dcda56f86ad2b2457dbcc",
    ("retinamnist", 128): "e48e916a24454daf90583d4e6efb1a18",
    ("retinamnist", 224): "eae7e3b6f3fcbda4ae613ebdcbe35348",
    ("breastmnist", 28): "750601b1f35ba3300ea97c75c52ff8f6",
    ("breastmnist", 64): "742edef2a1fd1524b2efff4bd7ba9364",
    ("breastmnist", 128): "363e4b3f8d712e9b5de15470a2aaadf1",
    ("breastmnist", 224): "b56378a6eefa9fed602bb16d192d4c8b",
    ("bloodmnist", 28): "7053d0359d879ad8a5505303e11de1dc",
    ("bloodmnist", 64): "2b94928a2ae4916078ca51e05b6b800b",
    ("bloodmnist", 128): "adace1e0ed228fccda1f39692059dd4c",
    ("bloodmnist", 224): "b718ff6835fcbdb22ba9eacccd7b2601",
    ("tissuemnist", 28): "ebe78ee8b05294063de985d821c1c34b",
    ("organamnist", 28): "68e3f8846a6bd62f0c9bf841c0d9eacc",
    ("organamnist", 224): "50747347e05c87dd3aaf92c49f9f3170",
}
_FLAG_RE = re.compile(r"^(?P<flag>[a-z0-9]+mnist(?:3d)?)(?:_(?P<size>\d+))?$", re.IGNORECASE)


def flag_of(path: str | os.PathLike[str]) -> str | None:
    """The MedMNIST flag a file name stands for (``pneumoniamnist_64.npz`` → ``pneumoniamnist``)."""
    m = _FLAG_RE.match(Path(path).stem)
    return m["flag"].lower() if m else None


def load_npz(path: str | os.PathLike[str]) -> DatasetIndex:
    """Index a MedMNIST ``.npz`` with its official splits; images are held in memory.

    Raises:
        BadInputError: not a readable npz, no ``<split>_images``/``<split>_labels`` pair,
            or arrays of the wrong shape.
        ConfigError: a multi-label (ChestMNIST) or 3D file, not supported yet.
    """
    p = Path(path).expanduser().resolve()
    try:
        with np.load(p, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise BadInputError(f"{p}: not a readable .npz file ({e})") from None
    flag = flag_of(p)
    splits = [s for s in SPLITS if f"{s}_images" in data and f"{s}_labels" in data]
    if not splits:
        raise BadInputError(
            f"{p}: no MedMNIST arrays found; expected keys like train_images/train_labels, "
            f"found {sorted(data)}"
        )
    arrays: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for s in splits:
        arrays[s] = _check_images(data[f"{s}_images"], p, s)
        labels[s] = _check_labels(data[f"{s}_labels"], len(arrays[s]), p, s, flag)
    top = (
        max(int(v.max()) for v in labels.values() if v.size)
        if any(v.size for v in labels.values())
        else 0
    )
    known = CLASS_NAMES.get(flag or "")
    if known is not None and len(known) > top:
        classes = list(known)
    else:
        classes = [str(i) for i in range(top + 1)]
    src = str(p)
    records = [
        Record(path=f"{src}#{s}/{i}", label=int(lab), split=s)
        for s in splits
        for i, lab in enumerate(labels[s])
    ]
    shape = arrays[splits[0]].shape[1:]
    return DatasetIndex(
        root=src,
        layout="medmnist",
        classes=classes,
        records=records,
        arrays={src: arrays},
        info={"flag": flag, "image_shape": list(shape), "npz": src},
    )


def _check_images(arr: np.ndarray, p: Path, split: str) -> np.ndarray:
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 4 and arr.shape[-1] not in (3,):
        raise ConfigError(
            f"{p}: {split}_images has shape {arr.shape}; 3D MedMNIST volumes are not supported "
            "yet (expected (N, H, W) or (N, H, W, 3))"
        )
    if arr.ndim not in (3, 4):
        raise BadInputError(f"{p}: {split}_images has shape {arr.shape}; expected (N, H, W[, 3])")
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "uif" or (arr.dtype.kind == "f" and not np.isfinite(arr).all()):
            raise BadInputError(f"{p}: {split}_images has unusable dtype {arr.dtype}")
        a = arr.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        logger.warning("%s: %s_images are %s, rescaled to uint8", p, split, arr.dtype)
        arr = (
            np.zeros(arr.shape, np.uint8)
            if hi <= lo
            else ((a - lo) / (hi - lo) * 255).round().astype(np.uint8)
        )
    return arr


def _check_labels(lab: np.ndarray, n: int, p: Path, split: str, flag: str | None) -> np.ndarray:
    if flag in MULTI_LABEL_FLAGS or (lab.ndim == 2 and lab.shape[1] > 1):
        raise ConfigError(
            f"{p}: {split}_labels has shape {lab.shape}: multi-label data sets (such as "
            "ChestMNIST) are not supported yet; use a single-label MedMNIST flag"
        )
    lab = lab.reshape(-1) if lab.ndim == 2 else lab
    if lab.ndim != 1 or len(lab) != n:
        raise BadInputError(
            f"{p}: {split}_labels has shape {lab.shape} but {split}_images holds {n} images"
        )
    if lab.dtype.kind not in "iu" and not (lab.dtype.kind == "f" and np.all(lab == np.round(lab))):
        raise BadInputError(f"{p}: {split}_labels must be integer class indices, got {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise BadInputError(f"{p}: {split}_labels has negative class index {int(lab.min())}")
    return lab.astype(np.int64)


def medmnist_filename(flag: str, size: int = 28) -> str:
    """``pneumoniamnist.npz`` for 28 px, ``pneumoniamnist_64.npz`` for the larger sizes."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def fetch_medmnist(
    flag: str,
    size: int = 28,
    *,
    root: str | os.PathLike[str],
    url: str | None = None,
    md5: str | None = "auto",
    timeout: float = 60.0,
) -> Path:
    """Download ``<flag>[_<size>].npz`` into ``root`` (atomically) and return its path.

    An existing file is reused (after an md5 check when the sum is known). Without
    ``url``, the base URL is ``$MEDLENS_MEDMNIST_URL`` or the official Zenodo record.

    Args:
        flag: MedMNIST flag, e.g. ``"pneumoniamnist"``.
        size: 28, 64, 128 or 224 pixels.
        root: folder to store the file in (created if needed).
        url: base URL (the file name is appended) or a full URL ending in ``.npz``.
        md5: expected md5; ``"auto"`` uses the official table for the official URL only,
            ``None`` skips the check.
        timeout: socket timeout in seconds.

    Raises:
        ConfigError: bad flag or size.
        BadInputError: the download or an existing file fails the md5/size/npz check.
        MedlensError: the server cannot be reached.
    """
    import urllib.error
    import urllib.request

    from medlens.io.atomic import atomic_write

    flag = str(flag).strip().lower()
    if not re.fullmatch(r"[a-z0-9]+mnist(3d)?", flag):
        raise ConfigError(f"flag {flag!r} is not a MedMNIST flag (e.g. 'pneumoniamnist')")
    if size not in SIZES:
        raise ConfigError(f"size must be one of {SIZES}, got {size!r}")
    name = medmnist_filename(flag, size)
    base = url or os.environ.get("MEDLENS_MEDMNIST_URL") or DEFAULT_BASE_URL
    official = base.rstrip("/") == DEFAULT_BASE_URL
    full = base if base.split("?")[0].endswith(".npz") else f"{base.rstrip('/')}/{name}"
    if official:
        full += "?download=1"
    expected = (
        MD5.get((flag, size)) if md5 == "auto" and official else (None if md5 == "auto" else md5)
    )
    target = Path(root).expanduser() / name
    if target.exists():
        if expected and _md5(target) != expected:
            raise BadInputError(
                f"{target}: existing file does not match the official md5 {expected}; "
                "move it away to download a fresh copy, or pass md5=None to use it as is"
            )
        logger.info("reusing %s", target)
        return target

    def write(fh) -> None:
        h = hashlib.md5()
        n = 0
        head = b""
        try:
            with urllib.request.urlopen(full, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                while chunk := resp.read(1 << 20):
                    head = head or chunk[:4]
                    fh.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
        except urllib.error.HTTPError as e:
            raise MedlensError(f"download of {full} failed: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise MedlensError(
                f"cannot download {full} ({e}); check the network, or set "
                "MEDLENS_MEDMNIST_URL to a mirror, or put the file in the root folder yourself"
            ) from None
        if total is not None and int(total) != n:
            raise BadInputError(f"download of {full} is truncated: {n} of {total} bytes")
        if expected and h.hexdigest() != expected:
            raise BadInputError(
                f"download of {full} has md5 {h.hexdigest()}, expected {expected}; not saved"
            )
        if not head.startswith(b"PK"):
            raise BadInputError(f"download of {full} is not an .npz (zip) file; not saved")

    logger.info("downloading %s → %s", full, target)
    return atomic_write(target, write)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()
