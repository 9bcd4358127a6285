"""Benchmark: the lung-CT pipeline on one 512×512×~130 scan, stage by stage.

Target (issue 13): < 60 s for the whole pipeline on 2 CPU cores, peak memory < 4 GB.

Run: ``nice -n 10 .venv/bin/python benchmarks/bench_ct.py [--threads 2] [--model RUN/model]
[--data DIR | --phantom] [--crops 300] [--baselines per-slice[,monai]] [--json out.json]``;
``--quick`` is a tiny smoke run (a small phantom, tiny networks) for the test suite.

The scan: the real LIDC-IDRI-0001 series (133 × 512 × 512, DICOM) under
``<repo>/../shared/data/lidc_lung_ct`` when present, else a chest phantom of 130 × 512 × 512
(0.7 × 0.7 × 2.5 mm) from :func:`medlens.data.synthetic.chest_ct.make_chest_ct_like`, written
as ``.mhd/.raw`` in a child process (its ~1.5 GB build peak must not count) and read back.

The stages are those of :class:`medlens.ct.detect.Detector` (``candidates`` = lung mask →
U-Net on the lung box → grouping, in union with Hessian blobs; ``score`` = crops → nodule
network → ranker (candidate descriptors + the ranker network; without a trained package the
descriptors alone, on the scored points) → malignancy network),
called one by one so each can be timed, then the report (:func:`medlens.ct.report.write_ct_report`
and ``nodules.csv``). Networks: a trained package with ``--model``; by default untrained
weights of the default architectures (``unet`` 8-16-32-64 with one residual unit on 7 context
slices; ``ct_crop_cnn`` on 32×48×48 crops). Speed does not depend on the weights — but how
many candidates an untrained U-Net flags is arbitrary, so the crop stages are then run on
``--crops`` points inside the lungs (default 300, the pipeline's ``max_candidates`` cap: the
worst case). With a trained package the U-Net's own candidates are used.

Baselines for the candidate stage (the expensive one), same network and weights, whole
volume (no lung box): ``per-slice`` — a loop over every slice, batch 1, ``torch.no_grad``;
``monai`` — :func:`monai.inferers.sliding_window_inference` over every slice's context stack
with the training patch as window (64 px, overlap 0.25, 8 windows per batch), the way one
runs a patch-trained MONAI network (slow: ~10 min on a busy 2-core machine, so only on request).
Ratios are baseline seconds / medlens seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / ".." / "shared" / "data" / "lidc_lung_ct"
BASELINES = ("per-slice", "monai")


def peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="a scan file or folder (its first scan; "
                    "default: the real LIDC series when present, else a phantom)")
    ap.add_argument("--phantom", action="store_true", help="use the 130×512×512 phantom even if real data exist")
    ap.add_argument("--model", type=Path, default=None, help="a trained lung-CT package (default: untrained "
                    "weights of the default architectures)")
    ap.add_argument("--crops", type=int, default=300, help="candidates scored by the crop networks when the "
                    "U-Net is untrained (default 300 = max_candidates)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baselines", default="per-slice",
                    help=f"comma-separated among {', '.join(BASELINES)}, or 'none'")
    ap.add_argument("--roi", type=int, default=64, help="window side of the MONAI baseline (training patch)")
    ap.add_argument("--quick", action="store_true", help="tiny phantom and networks (smoke test)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="write the report here (kept)")
    args = ap.parse_args(argv)
    names = [] if args.baselines == "none" else [b.strip() for b in args.baselines.split(",") if b.strip()]
    bad = [b for b in names if b not in BASELINES]
    if bad:
        ap.error(f"unknown baseline(s) {', '.join(bad)}; choose among {', '.join(BASELINES)} or 'none'")
    args.baselines = names
    if args.crops < 0 or args.threads < 1:
        ap.error("--crops must be >= 0 and --threads >= 1")
    if args.quick:
        args.crops = min(args.crops, 16)
    return args


# --------------------------------------------------------------------------- the scan
def make_phantom(root: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                 *, in_process: bool) -> Path:
    """Write a one-scan LUNA16 phantom under ``root`` (a child process unless ``in_process``)."""
    if in_process:
        from medlens.data.synthetic.chest_ct import make_chest_ct_like

        make_chest_ct_like(root, n_scans=1, shape=shape, spacing_xyz=spacing, seed=0)
    else:
        code = ("import sys; from medlens.data.synthetic.chest_ct import make_chest_ct_like; "
                f"make_chest_ct_like(sys.argv[1], n_scans=1, shape={tuple(shape)!r}, "
                f"spacing_xyz={tuple(spacing)!r}, seed=0)")
        subprocess.run([sys.executable, "-c", code, str(root)], check=True)
    return root


def reference_of(scan_path: Path, volume: Any, phantom_root: Path | None) -> list[Any] | None:
    """Reference nodules for the report (not timed): the phantom's annotations, or the
    LIDC XML's nodules by LUNA16's rule."""
    from medlens.ct import annotations as ann

    uid = str(volume.meta.get("seriesuid", ""))
    if phantom_root is not None:
        return list(ann.read_luna16_annotations(phantom_root / "annotations.csv").get(uid, []))
    xmls = sorted(Path(scan_path).glob("*.xml")) if Path(scan_path).is_dir() else []
    return ann.reference_standard(ann.read_lidc_xml(xmls[0], volume)) if xmls else None


# --------------------------------------------------------------------------- networks
def build_detector(args: argparse.Namespace) -> tuple[Any, bool, str]:
    """(Detector, trained?, description)."""
    import torch

    from medlens.ct.crops import CropSpec
    from medlens.ct.pipeline import Detector, DetectParams
    from medlens.ct.train import CtConfig
    from medlens.models import create_model
    from medlens.segment.models import divisor, init_output_bias

    if args.model is not None:
        from medlens.package import ModelPackage

        return Detector.from_package(ModelPackage(args.model)), True, f"trained package {args.model}"
    torch.manual_seed(0)
    cfg = CtConfig(data=".")
    if args.quick:
        cand = create_model("test_unet", num_classes=1, in_channels=2 * cfg.context + 1, spatial_dims=2)
        crop = CropSpec((8, 12, 12), (3.0, 2.0, 2.0), cfg.hu_window)
        nod, mal = (create_model("test_ct_crop_cnn", num_classes=2, in_channels=1, spatial_dims=3) for _ in "ab")
        what = "untrained tiny test networks (test_unet, test_ct_crop_cnn), 8×12×12 crops"
    else:
        cand = create_model(cfg.candidate_model, num_classes=1, in_channels=2 * cfg.context + 1, spatial_dims=2,
                            **cfg.candidate_kwargs)
        crop = cfg.crop
        nod, mal = (create_model(cfg.crop_model, num_classes=2, in_channels=1, spatial_dims=3, **cfg.crop_kwargs)
                    for _ in "ab")
        what = (f"untrained {cfg.candidate_model} {cfg.candidate_kwargs} on {2 * cfg.context + 1} context "
                f"slices; {cfg.crop_model} on {'×'.join(map(str, crop.shape))} crops")
    init_output_bias(cand, 0.05)  # as the pipeline starts training
    params = DetectParams(context=cfg.context, hu_window=cfg.hu_window, candidate_threshold=cfg.candidate_threshold,
                          min_voxels=cfg.min_voxels, max_candidates=cfg.max_candidates, divisor=divisor(cand),
                          crop=crop, min_prob=cfg.min_prob)
    return Detector(cand.eval(), nod.eval(), mal.eval(), params), False, what


def lung_points(lungs: Any, n: int, seed: int = 0) -> np.ndarray:
    """``n`` candidate centres (continuous i, r, c) inside the coarse lung mask."""
    rng = np.random.default_rng(seed)
    idx = np.argwhere(lungs.mask)
    if not len(idx) or n == 0:
        return np.zeros((0, 3))
    pick = idx[rng.choice(len(idx), n, replace=len(idx) < n)]
    return (pick * np.asarray(lungs.stride) + rng.uniform(0, 1, (n, 3)) * np.asarray(lungs.stride)).astype(float)


# --------------------------------------------------------------------------- baselines
def baseline_per_slice(model: Any, hu: np.ndarray, params: Any) -> np.ndarray:
    """Every slice on its own (batch 1), whole in-plane field, no lung box, ``no_grad``."""
    import torch

    from medlens.ct.candidates import context_stack, pad_to

    model.eval()
    d = hu.shape[0]
    out = np.zeros(hu.shape, np.float32)
    with torch.no_grad():
        for i in range(d):
            stack = context_stack(hu, np.array([i]), params.context).astype(np.float32)
            x = torch.from_numpy(params.window.apply(stack[0])[None])
            x, (h, w) = pad_to(x, params.divisor)
            out[i] = torch.sigmoid(model(x)[0, 0, :h, :w]).numpy()
    return out


def baseline_monai(model: Any, hu: np.ndarray, params: Any, roi: int, chunk: int = 16) -> np.ndarray:
    """MONAI sliding-window inference of the same 2D network over every slice's context stack
    (window = the training patch), chunks of slices so memory stays bounded."""
    import torch
    from monai.inferers import sliding_window_inference

    from medlens.ct.candidates import context_stack

    model.eval()
    d = hu.shape[0]
    out = np.zeros(hu.shape, np.float32)
    with torch.no_grad():
        for s in range(0, d, chunk):
            focus = np.arange(s, min(s + chunk, d))
            x = torch.from_numpy(params.window.apply(context_stack(hu, focus, params.context).astype(np.float32)))
            y = sliding_window_inference(x, (roi, roi), 8, model, overlap=0.25)
            out[focus] = torch.sigmoid(y[:, 0]).numpy()
    return out


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from medlens.ct.blobs import detect_blobs, merge_candidates
    from medlens.ct.candidates import group_candidates, predict_probability
    from medlens.ct.classifier import score_crops
    from medlens.ct.crops import extract_crops
    from medlens.ct.features import candidate_features
    from medlens.ct.findings import Finding
    from medlens.ct.outputs import write_nodules_csv
    from medlens.ct.report import write_ct_report
    from medlens.ct.scan import find_scans, read_ct

    load_start = os.getloadavg()
    tmp = tempfile.TemporaryDirectory(prefix="bench_ct_")
    work = Path(tmp.name)
    phantom_root: Path | None = None
    gen_s = 0.0
    if args.quick:
        shape, spacing = (24, 96, 96), (0.8, 0.8, 2.5)
    else:
        shape, spacing = (130, 512, 512), (0.7, 0.7, 2.5)
    if args.data is None and not args.phantom and not args.quick and REAL.is_dir():
        args.data = REAL
    if args.data is None:
        t = time.perf_counter()
        phantom_root = make_phantom(work / "phantom", shape, spacing, in_process=args.quick)
        gen_s = time.perf_counter() - t
        args.data = phantom_root
    refs = find_scans(args.data) if Path(args.data).is_dir() else None
    scan_path = refs[0].path if refs else Path(args.data)
    source = (f"phantom {shape[0]}×{shape[1]}×{shape[2]} (generated in {gen_s:.1f} s, not timed)"
              if phantom_root else f"{scan_path}")

    det, trained, what = build_detector(args)
    p = det.params
    rss_before = peak_rss_mb()
    times: dict[str, float] = {}

    def clock(name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t0
        return out

    vol = clock("read", lambda: read_ct(scan_path))
    uid = str(vol.meta.get("seriesuid") or Path(scan_path).stem)
    lungs = clock("lung mask", lambda: det.lungs(vol))
    prob, box = clock("candidate model (U-Net on the lung box)", lambda: predict_probability(
        det.candidate_model, vol.array, lungs, window=p.window, context=p.context, batch_size=p.slice_batch,
        divisor=p.divisor, device=det.device))
    cands = clock("grouping (connected components)", lambda: group_candidates(
        prob, box, vol.geometry, seriesuid=uid, threshold=p.candidate_threshold, lungs=lungs,
        min_voxels=p.min_voxels, max_candidates=p.max_candidates))
    n_unet = len(cands)
    blobs = clock("blob candidates (Hessian, in union)", lambda: detect_blobs(vol.array, vol.geometry, lungs,
                                                                               seriesuid=uid, params=p.blobs))
    cands = merge_candidates(cands, blobs)
    centres = np.array([f.center_irc for f in cands], dtype=np.float64).reshape(-1, 3)
    if not trained:  # an untrained U-Net's candidates are arbitrary: score a fixed number of lung points
        centres = lung_points(lungs, args.crops)
        xyz = vol.geometry.index_to_world(centres) if len(centres) else np.zeros((0, 3))
        cands = [Finding(uid, tuple(map(float, w)), tuple(map(float, c)), 6.0, 0.0) for c, w in zip(centres, xyz)]

    def classify() -> tuple[np.ndarray, np.ndarray]:
        crops = extract_crops(vol.array, vol.geometry.array_spacing, centres, p.crop)
        return crops, score_crops(det.nodule_model, crops, batch_size=p.crop_batch, device=det.device)

    crops, nod = clock("crop classification (crops + nodule CNN)", classify)
    if det.ranker is not None or not trained:  # untrained: the descriptors' cost on the worst-case points
        nod = clock("ranker (descriptors + network)", lambda: det.rank(vol, cands, nod)
                    if det.ranker is not None else (candidate_features(vol, cands), nod)[1])
    keep = np.flatnonzero(nod >= p.min_prob)
    has_mal = det.malignancy_model is not None
    mal = clock("malignancy CNN", lambda: score_crops(det.malignancy_model, crops[keep], batch_size=p.crop_batch,
                                                      device=det.device) if len(keep) and has_mal else None)
    findings = sorted((Finding(uid, cands[k].center_xyz, cands[k].center_irc, cands[k].diameter_mm, float(nod[k]),
                               None if mal is None else float(mal[j])) for j, k in enumerate(keep)),
                      key=lambda f: -f.nodule_prob)
    reference = reference_of(scan_path, vol, phantom_root)
    out_dir = args.keep or work / "report"
    shown = [f for f in findings if f.nodule_prob >= p.nodule_threshold]

    def report() -> Path:
        write_nodules_csv(findings, out_dir / "nodules.csv")
        return write_ct_report(out_dir, [(vol, shown, reference)], None, f"Benchmark networks: {what}.")

    clock("report (nodules.csv + report.html)", report)
    total = sum(times.values())
    rss_pipeline = peak_rss_mb()
    cand_key = "candidate model (U-Net on the lung box)"

    base: dict[str, float] = {}
    for b in args.baselines:
        t0 = time.perf_counter()
        if b == "per-slice":
            baseline_per_slice(det.candidate_model, vol.array, p)
        else:
            baseline_monai(det.candidate_model, vol.array, p, args.roi if not args.quick else 32)
        base[b] = time.perf_counter() - t0
    load_end = os.getloadavg()

    d, h, w = vol.spatial_shape
    bd, bh, bw = (s.stop - s.start for s in box)
    print(f"scan: {source}\n  {d}×{h}×{w} voxels, spacing {tuple(round(s, 3) for s in vol.spacing)} mm; "
          f"lung box {bd}×{bh}×{bw} ({100 * bd * bh * bw / (d * h * w):.0f} % of the volume)")
    print(f"networks: {what}" + ("" if trained else " — speed does not depend on the weights"))
    print(f"candidates: {n_unet} from the U-Net, {len(blobs)} Hessian blobs" + ("" if trained else
          f" (untrained: arbitrary); crop stages scored {len(centres)} lung points instead"))
    print(f"torch threads {args.threads}, load average {load_start[0]:.1f} → {load_end[0]:.1f} "
          "(machine shared with other jobs)\n")
    print("| stage | seconds | share |\n|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {v:.2f} | {100 * v / total:.0f} % |")
    print(f"| **total** | **{total:.1f}** | target < 60 s: {'met' if total < 60 else 'MISSED'} |")
    print(f"\npeak RSS: {rss_before:.0f} MB before reading the scan (imports, networks), {rss_pipeline:.0f} MB "
          f"after the pipeline (target < 4096 MB: {'met' if rss_pipeline < 4096 else 'MISSED'})")
    rows = []
    if base:
        print("\n| candidate stage | seconds | ratio vs medlens | whole pipeline with it (s) |\n|---|---|---|---|")
        print(f"| medlens: lung box, batches of {p.slice_batch} slices, inference_mode | {times[cand_key]:.2f} | "
              f"1.00 | {total:.1f} |")
        for b, v in base.items():
            label = ("naive per-slice loop, whole volume, batch 1" if b == "per-slice" else
                     f"MONAI sliding_window_inference, whole volume, roi {args.roi if not args.quick else 32}")
            with_b = total - times[cand_key] + v
            print(f"| {label} | {v:.2f} | {v / times[cand_key]:.2f} | {with_b:.1f} |")
            rows.append({"baseline": b, "seconds": v, "ratio": v / times[cand_key], "pipeline_with_it_s": with_b})
        print(f"\npeak RSS after the baselines: {peak_rss_mb():.0f} MB")
    result = {"source": source, "shape": [d, h, w], "spacing": list(vol.spacing), "networks": what,
              "trained": trained, "threads": args.threads, "stages": times, "total_s": total,
              "peak_rss_mb": rss_pipeline, "peak_rss_before_mb": rss_before, "baselines": rows,
              "candidates_unet": n_unet, "candidates_blobs": len(blobs), "candidates_scored": int(len(centres)),
              "findings": len(findings),
              "load_start": load_start, "load_end": load_end, "lung_box": [bd, bh, bw]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
