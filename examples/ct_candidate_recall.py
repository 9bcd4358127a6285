"""How many reference nodules become candidates at all, before any ranking, by size.

A lung-CT package finds a nodule only if its candidate generator (the U-Net in union with the
Hessian blobs) puts a candidate within the nodule's radius (the LUNA16 rule of ``medlens ct
evaluate``: :func:`medlens.ct.froc.match_scan`); the ranker can only reorder those.
This prints the candidate recall of a package on LUNA16-style folders (``annotations.csv`` +
scans) by nodule diameter, and by nodule kind when the folder is a medlens phantom set
(``truth.json``). The folders are only read.

    python examples/ct_candidate_recall.py RUN/model DATA [DATA ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from medlens.ct.dataset import load_ct_data
from medlens.ct.detect import Detector
from medlens.ct.froc import match_scan
from medlens.ct.scan import read_ct
from medlens.package import load_model

SIZES_MM = ((0, 5), (5, 8), (8, 12), (12, 100))


def _kind(truth: dict[str, list[dict]], uid: str, centre: tuple[float, float, float]) -> str:
    """The phantom nodule's kind (solid, part-solid, ground glass): the truth.json nodule at that centre."""
    near = [n for n in truth.get(uid, []) if np.linalg.norm(np.subtract(n["center_xyz"], centre)) < 0.5]
    return near[0]["kind"] if near else "?"


def main(model: str, roots: list[str]) -> int:
    det = Detector.from_package(load_model(model))
    rows: list[tuple[float, str, bool]] = []
    for root in map(Path, roots):
        ct = load_ct_data(root, need_annotations=True)
        truth_file = root / "truth.json"  # medlens phantom sets: the nodules' kinds
        truth = ({t["seriesuid"]: t["nodules"] for t in json.loads(truth_file.read_text(encoding="utf-8"))["scans"]}
                 if truth_file.is_file() else {})
        for ref in ct.refs:
            nodules = ct.annotations.get(ref.seriesuid, [])
            if not nodules:
                continue
            with torch.inference_mode():
                found = det.candidates(read_ct(ref.path), seriesuid=ref.seriesuid)
            best = match_scan(found, nodules, ct.excluded.get(ref.seriesuid, [])).nodule_best_prob
            rows += [(n.diameter_mm, _kind(truth, ref.seriesuid, n.center_xyz), b is not None)
                     for n, b in zip(nodules, best, strict=True)]
    print(f"candidate recall: {sum(h for *_, h in rows)} of {len(rows)} reference nodules")
    for lo, hi in SIZES_MM:
        sel = [h for d, _, h in rows if lo <= d < hi]
        print(f"  {lo}-{hi} mm: {sum(sel)} of {len(sel)}")
    for kind in sorted({k for _, k, _ in rows} - {"?"}):
        sel = [h for _, k, h in rows if k == kind]
        print(f"  {kind}: {sum(sel)} of {len(sel)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
