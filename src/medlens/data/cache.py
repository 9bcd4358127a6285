"""Decode every image once into a uint8 array ``(N, C, S, S)``, cached on disk.

Decoding (PIL ~6k small PNGs/s per core, far less for full-size JPEGs) is the slowest
part of training on a CPU; the cache makes it a one-time cost per data set and
preprocessing config. Unreadable files become :class:`Problem` entries; the rest goes on.
Stain normalisation (``cfg.stain_normalize``, histology) is applied here, once per image and
not per epoch; images it leaves unchanged (too little tissue) are counted in the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medlens.data.records import DatasetIndex, Problem, Record
from medlens.io.atomic import atomic_write, atomic_write_json
from medlens.io.images import ImageReadError
from medlens.transforms.preprocess import PreprocessConfig, preprocess_image

log = logging.getLogger(__name__)


@dataclass
class ImageCache:
    """Decoded, preprocessed images aligned with ``records``."""

    images: np.ndarray  # (N, C, S, S) uint8
    records: list[Record]
    problems: list[Problem] = field(default_factory=list)
    stain_unchanged: int = 0  # images stain normalisation left as they were (no tissue, failure)

    @property
    def labels(self) -> np.ndarray:
        return np.array([-1 if r.label is None else r.label for r in self.records], dtype=np.int64)

    def select(self, mask: np.ndarray) -> ImageCache:
        idx = np.flatnonzero(mask)
        return ImageCache(self.images[idx], [self.records[i] for i in idx], list(self.problems),
                          self.stain_unchanged)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDLENS_CACHE_DIR", Path.home() / ".cache" / "medlens" / "images"))


def build_cache(
    index: DatasetIndex,
    cfg: PreprocessConfig,
    *,
    cache_dir: str | Path | None = None,
    use_disk: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> ImageCache:
    """Decode and preprocess all records of ``index`` (skipping unreadable ones)."""
    records = list(index.records)
    key = _cache_key(index, records, cfg)
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    npy, meta = cdir / f"{key}.npy", cdir / f"{key}.json"
    if use_disk and npy.exists() and meta.exists():
        try:
            info = json.loads(meta.read_text())
            images = np.load(npy, allow_pickle=False)  # a cache file never runs code
            kept = [records[i] for i in info["kept"]]
            problems = [Problem(**p) for p in info["problems"]]
            if len(kept) == len(images):
                log.info("image cache hit: %s (%d images)", npy, len(kept))
                unchanged = int(info.get("stain_unchanged", 0))
                if cfg.stain_normalize != "none":
                    _log_stain(cfg, unchanged, len(kept), info.get("stain_reasons") or {})
                return ImageCache(images, kept, problems, unchanged)
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring unreadable image cache %s: %s", npy, e)

    out = np.empty((len(records), cfg.channels, cfg.size, cfg.size), dtype=np.uint8)
    ok = np.zeros(len(records), dtype=bool)
    problems: list[Problem] = []
    stain_failures: list[str] = []  # list.append is atomic: shared by the worker threads

    def work(i: int) -> tuple[int, str | None]:
        try:
            img = index.read(records[i])
            out[i] = preprocess_image(img, cfg, stain_failures=stain_failures)
            return i, None
        except ImageReadError as e:
            return i, e.reason
        except (ValueError, TypeError, OSError) as e:
            return i, f"{type(e).__name__}: {e}"

    n_workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        for i, err in pool.map(work, range(len(records)), chunksize=64):
            if err is None:
                ok[i] = True
            else:
                problems.append(Problem(records[i].path, err))
                log.warning("skipping %s: %s", records[i].path, err)
    images = np.ascontiguousarray(out[ok])
    kept_idx = np.flatnonzero(ok)
    kept = [records[i] for i in kept_idx]
    reasons = {r: stain_failures.count(r) for r in sorted(set(stain_failures))}
    if cfg.stain_normalize != "none":
        _log_stain(cfg, len(stain_failures), len(kept), reasons)
    if use_disk:
        try:
            atomic_write(npy, lambda fh: np.save(fh, images))
            atomic_write_json(meta, {"kept": kept_idx.tolist(),
                                     "problems": [p.__dict__ for p in problems],
                                     "preprocess": cfg.model_dump(), "root": index.root,
                                     "stain_unchanged": len(stain_failures), "stain_reasons": reasons})
        except OSError as e:
            log.warning("could not write image cache to %s: %s", cdir, e)
    return ImageCache(images, kept, problems, len(stain_failures))


def _log_stain(cfg: PreprocessConfig, unchanged: int, total: int, reasons: dict[str, int]) -> None:
    why = "; ".join(f"{r}: {n}" for r, n in list(reasons.items())[:3])
    log.info("stain normalisation (%s): %d of %d image(s) left unchanged%s", cfg.stain_normalize, unchanged,
             total, f" ({why})" if why else "")


def _cache_key(index: DatasetIndex, records: list[Record], cfg: PreprocessConfig) -> str:
    h = hashlib.sha256()
    # fields left at "none" stay out: the key is the one caches had before those fields existed
    exclude = ({"stain_normalize", "stain_reference"} if cfg.stain_normalize == "none" else set()) | (
        {"colour_constancy"} if cfg.colour_constancy == "none" else set())
    h.update(cfg.model_dump_json(exclude=exclude).encode())
    for r in records:
        h.update(r.path.encode())
        src = r.path.split("#", 1)[0]
        try:
            st = os.stat(src)
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            h.update(b"missing")
    return h.hexdigest()[:24]
