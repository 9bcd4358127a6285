"""Predict lesion masks for images and volumes, written in the input's own format.

* 2D images (PNG/TIFF/JPEG/BMP/DICOM): mask ``<stem>_mask<ext>`` (PNG for JPEG/DICOM
  inputs, as lossy or DICOM masks are of no use), values 0/255, same size as the input.
* Volumes (NIfTI, MetaImage, NRRD, DICOM series folder): mask volume with the input's
  :class:`~medlens.io.geometry.Geometry` (spacing, origin, direction),
  ``<stem>_mask<suffix>`` (``.nii.gz`` for DICOM). Intensities go through the package's
  intensity policy (``preprocess.intensity``; absent: the default percentile window).
* Always an overlay ``<stem>_overlay.png`` (prediction in red on the FLAIR / first channel;
  for volumes the slice with the largest predicted area).

Models trained with a fixed ``resize`` see inputs resized to it and their probability
maps resized back; models trained on patches (``resize: null``) run
``monai.inferers.sliding_window_inference`` whenever the input exceeds the patch.

3D packages (metadata ``input.spatial_dims == 3``) take whole volumes: slices resized
in-plane to ``resize`` (when set), then sliding-window inference with the training patch
``(D, H, W)`` over the whole volume, probabilities resized back to the input's voxels.
A 3D package refuses 2D images (one slice is no volume); a 2D package predicts a volume
slice by slice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medlens.errors import BadInputError
from medlens.io.images import IMAGE_EXTENSIONS
from medlens.io.volumes import VOLUME_SUFFIXES, volume_suffix
from medlens.io.walk import files_under
from medlens.transforms.intensity import to_float

logger = logging.getLogger(__name__)


def _pad_forward(model: torch.nn.Module, x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Forward with zero padding up to a multiple of ``divisor``, cropped back."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return model(x)[..., :h, :w]


def slices_tensor(images: Sequence[np.ndarray], *, resize: int | None, divisor: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """``(H, W, C)`` uint8 images → the network's input ``(B, C, S, S)``: resized to the
    training side as :func:`predict_slices` resizes (area), [0, 1], zero-padded to the
    divisor. Used where a caller needs the input tensor itself (explanations)."""
    xs = [to_float(torch.from_numpy(np.ascontiguousarray(np.moveaxis(im, -1, 0)))[None]) for im in images]
    if resize is not None:
        xs = [x if tuple(x.shape[-2:]) == (resize, resize) else F.interpolate(x, size=(resize, resize), mode="area")
              for x in xs]
    if len({tuple(x.shape) for x in xs}) > 1:
        raise BadInputError("this segmenter keeps native sizes; give images of one size "
                            f"(got {sorted({tuple(x.shape[-2:]) for x in xs})})")
    x = torch.cat(xs)
    x = F.pad(x, (0, (-x.shape[-1]) % divisor, 0, (-x.shape[-2]) % divisor))
    return x.to(torch.device(device))


@torch.no_grad()
def predict_slices(model: torch.nn.Module, images: np.ndarray, *, resize: int | None,
                   patch: Sequence[int] | None = None, divisor: int = 16, batch_size: int = 16,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Lesion probabilities ``(N, H, W)`` float32 at the images' own size.

    Args:
        images: ``(N, C, H, W)`` uint8 slices.
        resize: the training side; slices are resized to it and back.
        patch: training patch ``(h, w)`` for sliding-window inference when ``resize`` is
            ``None`` and a slice is larger than it.
    """
    model.eval()
    dev = torch.device(device)
    n, _, h, w = images.shape
    out = np.empty((n, h, w), dtype=np.float32)
    for i in range(0, n, batch_size):
        x = to_float(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(dev))
        if resize is not None and (h, w) != (resize, resize):
            xi = F.interpolate(x, size=(resize, resize), mode="area")
            logits = _pad_forward(model, xi, divisor)
            logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
        elif patch is not None and (h > patch[0] or w > patch[1]):
            from monai.inferers import sliding_window_inference

            logits = sliding_window_inference(x, roi_size=tuple(patch), sw_batch_size=batch_size,
                                              predictor=lambda t: _pad_forward(model, t, divisor),
                                              overlap=0.25, mode="gaussian")
        else:
            logits = _pad_forward(model, x, divisor)
        out[i:i + len(x)] = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
    return out


@torch.no_grad()
def window_logits(model: torch.nn.Module, x: torch.Tensor, *, window: Sequence[int], sw_batch_size: int = 4,
                  overlap: float = 0.25) -> torch.Tensor:
    """Float32 logits of a float input ``(B, C, *spatial)`` (any number of spatial axes) by
    ``monai.inferers.sliding_window_inference`` with windows of ``window``: MONAI pads an
    input smaller than a window (zeros) and blends overlapping windows with a Gaussian."""
    from monai.inferers import sliding_window_inference

    logits = sliding_window_inference(x, roi_size=tuple(int(p) for p in window), sw_batch_size=sw_batch_size,
                                      predictor=model, overlap=overlap, mode="gaussian")
    return torch.as_tensor(logits).float()


@torch.no_grad()
def volume_logits(model: torch.nn.Module, image: np.ndarray, *, patch: Sequence[int],
                  resize: int | None = None, sw_batch_size: int = 4, overlap: float = 0.25,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits ``(1, 1, D, H, W)`` of one volume by sliding-window inference.

    Args:
        image: ``(C, D, H, W)`` uint8 (after the intensity policy,
            :mod:`medlens.transforms.intensity`) or float32.
        patch: the training patch ``(D, H, W)``; its sides are multiples of the model's
            divisor, so every window fits the network. MONAI pads a volume smaller than a
            window (zeros, as training pads) and blends overlapping windows with a Gaussian.
        resize: the training in-plane side; slices are resized to it (area) and the
            logits back to ``(H, W)`` (trilinear). ``None`` keeps the voxels as they are.
    """
    if image.ndim != 4:
        raise ValueError(f"volume_logits: expected (C, D, H, W), got shape {image.shape}")
    model.eval()
    x = to_float(torch.from_numpy(np.ascontiguousarray(image)[None]).to(torch.device(device)))
    d, h, w = x.shape[-3:]
    if resize is not None and (h, w) != (resize, resize):
        x = F.interpolate(x, size=(d, resize, resize), mode="area")
    logits = window_logits(model, x, window=patch, sw_batch_size=sw_batch_size, overlap=overlap)
    if tuple(logits.shape[-2:]) != (h, w):
        logits = F.interpolate(logits, size=(d, h, w), mode="trilinear", align_corners=False)
    return logits


def predict_volume(model: torch.nn.Module, image: np.ndarray, *, patch: Sequence[int],
                   resize: int | None = None, sw_batch_size: int = 4,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Lesion probabilities ``(D, H, W)`` float32 of one ``(C, D, H, W)`` uint8 volume."""
    logits = volume_logits(model, image, patch=patch, resize=resize, sw_batch_size=sw_batch_size, device=device)
    return torch.sigmoid(logits)[0, 0].cpu().numpy().astype(np.float32)


def overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 overlay on a grey ``(H, W)`` background.

    With ``truth``: true positive green, false positive red, false negative orange.
    Without: prediction red.
    """
    g = image.astype(np.float32)
    if g.ndim == 3:  # (C, H, W): FLAIR is the middle channel of 3-channel MRI
        g = g[1] if g.shape[0] == 3 else g[0]
    g = (g - g.min()) / (np.ptp(g) or 1.0) * 255
    rgb = np.repeat(g[..., None], 3, axis=2)
    p = pred.astype(bool)
    colours = []
    if truth is None:
        colours.append((p, (255, 0, 0)))
    else:
        t = truth.astype(bool)
        colours += [(p & t, (0, 200, 0)), (p & ~t, (255, 0, 0)), (~p & t, (255, 150, 0))]
    for sel, col in colours:
        rgb[sel] = 0.45 * rgb[sel] + 0.55 * np.asarray(col, dtype=np.float32)
    return rgb.clip(0, 255).astype(np.uint8)


def _save_png(path: Path, rgb: np.ndarray) -> None:
    import io

    from PIL import Image

    from medlens.io.atomic import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _spec(metadata: dict[str, Any]) -> tuple[int, int | None, list[int] | None, float, int]:
    inp = metadata.get("input", {})
    pre = metadata.get("preprocess", {})
    return (int(inp.get("channels", 3)), pre.get("resize"), inp.get("patch"),
            float(metadata.get("threshold", 0.5)), int(inp.get("divisor", 16)))


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files and folders → image files, volume files and DICOM series folders."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir() and not any(f.suffix.lower() == ".dcm" for f in p.iterdir() if f.is_file()):
            out += sorted(f for f in files_under(p)
                          if (f.suffix.lower() in IMAGE_EXTENSIONS or volume_suffix(f) in VOLUME_SUFFIXES)
                          and "_mask" not in f.name and "_overlay" not in f.name)
        else:
            out.append(p)
    return out


def predict_files(model: torch.nn.Module, metadata: dict[str, Any], inputs: Sequence[str | Path],
                  out_dir: str | Path, *, device: str = "cpu") -> list[dict[str, Any]]:
    """Predict every input; one result dict per input (``error`` set for unusable ones)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    paths = expand_inputs(inputs)
    images = read_images(metadata, [p for p in paths if not is_volume_input(p)]) if _spatial_dims(metadata) == 2 else {}
    for path in paths:
        try:
            if is_volume_input(path):
                rows.append(_predict_volume(model, metadata, path, out_dir, device))
            else:
                rows.append(_predict_image(model, metadata, path, out_dir, device, images.get(path)))
        except BadInputError as e:
            logger.warning("skipped: %s", e)
            rows.append({"file": str(path), "error": str(e)})
    return rows


def _spatial_dims(metadata: dict[str, Any]) -> int:
    return int(metadata.get("input", {}).get("spatial_dims", 2))


def read_images(metadata: dict[str, Any], paths: Sequence[Path]) -> dict[Path, np.ndarray | BadInputError]:
    """2D image files → ``(C, H, W)`` arrays as the package's network was trained on them:
    with ``preprocess.slice_intensity == "patient"`` the images of one folder are one
    patient's slices and go through the intensity policy together
    (:func:`~medlens.transforms.intensity.apply_to_group`), as in training. An unreadable
    file maps to its error; the others go on."""
    from medlens.io.images import read_image
    from medlens.transforms.intensity import apply_to_group

    channels = _spec(metadata)[0]
    out: dict[Path, np.ndarray | BadInputError] = {}
    for p in paths:
        try:
            out[p] = np.moveaxis(read_image(p, channels=channels), -1, 0)
        except BadInputError as e:
            out[p] = e
    pre = metadata.get("preprocess", {})
    if pre.get("slice_intensity", "none") == "patient":
        folders: dict[Path, list[Path]] = {}
        for p, im in out.items():
            if isinstance(im, np.ndarray):
                folders.setdefault(p.parent, []).append(p)
        for group in folders.values():
            done = apply_to_group(pre.get("intensity"), [out[p] for p in group])  # type: ignore[misc]
            out.update(zip(group, done))
    return out


def segment_image(model: torch.nn.Module, metadata: dict[str, Any], path: Path,
                  device: torch.device | str = "cpu", image: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 2D image file → ``(image (C, H, W), probability (H, W), mask (H, W) bool)``; writes nothing.
    ``image``: the file already read by :func:`read_images` (with the package's per-patient
    intensity policy); ``None`` reads it alone.

    Raises:
        BadInputError: the package is a 3D U-Net, or the file holds several frames.
    """
    from PIL import Image

    from medlens.segment.postprocess import apply_postprocess

    if _spatial_dims(metadata) == 3:
        raise BadInputError(f"{path}: a 2D image, but this model is a 3D U-Net that needs volumes "
                            "(NIfTI, MetaImage, NRRD or a DICOM series folder); use a 2D model for images")
    channels, resize, patch, thr, div = _spec(metadata)
    if image is None:
        got = read_images(metadata, [path])[path]
        if isinstance(got, BadInputError):
            raise got
        image = got
    img = image
    with Image.open(path) as im:
        if getattr(im, "n_frames", 1) > 1:
            raise BadInputError(f"{path}: a 3D volume ({im.n_frames} frames) where a 2D image is "
                                "expected; convert it to NIfTI/MetaImage to predict it as a volume")
    prob = predict_slices(model, img[None], resize=resize, patch=patch, divisor=div, device=device)[0]
    return img, prob, apply_postprocess(prob >= thr, metadata.get("postprocess"))


def segment_volume(model: torch.nn.Module, metadata: dict[str, Any], path: Path,
                   device: torch.device | str = "cpu") -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """A volume file or DICOM series → ``(volume, slices (D, C, H, W), probability (D, H, W),
    mask (D, H, W) uint8)``, the volume as read (with its geometry); writes nothing."""
    from medlens.io.volumes import read_volume
    from medlens.segment.postprocess import apply_postprocess
    from medlens.transforms.intensity import parse_intensity

    channels, resize, patch, thr, div = _spec(metadata)
    vol = read_volume(path)
    arr = vol.array if vol.array.ndim == 4 else vol.array[None]
    if arr.shape[0] != channels:
        if arr.shape[0] == 1:
            arr = np.repeat(arr, channels, 0)
        else:
            raise BadInputError(f"{path}: {arr.shape[0]} channels but the model expects {channels}")
    # (C, D, H, W); packages without a stored policy were trained with the default one
    img = parse_intensity(metadata.get("preprocess", {}).get("intensity")).apply(arr)
    slices = np.moveaxis(img, 1, 0)  # (D, C, H, W)
    if _spatial_dims(metadata) == 3:
        if not patch:
            raise BadInputError(f"{path}: the 3D model's metadata gives no input.patch; retrain or fix metadata.json")
        prob = predict_volume(model, img, patch=patch, resize=resize, device=device)
    else:
        prob = predict_slices(model, slices, resize=resize, patch=patch, divisor=div, device=device)
    mask = apply_postprocess(prob >= thr, metadata.get("postprocess")).astype(np.uint8)
    return vol, slices, prob, mask


def is_volume_input(path: Path) -> bool:
    """A DICOM series folder or a volume file (NIfTI, MetaImage, NRRD), not a 2D image."""
    return path.is_dir() or volume_suffix(path) in VOLUME_SUFFIXES


def _predict_image(model, metadata, path: Path, out_dir: Path, device, image=None) -> dict[str, Any]:
    from medlens.io.volumes import write_mask_2d

    if isinstance(image, BadInputError):
        raise image
    img, prob, mask = segment_image(model, metadata, path, device, image)
    ext = path.suffix.lower() if path.suffix.lower() in (".png", ".tif", ".tiff", ".bmp") else ".png"
    mask_path = write_mask_2d(out_dir / f"{path.stem}_mask{ext}", mask)
    ov = out_dir / f"{path.stem}_overlay.png"
    _save_png(ov, overlay(img, mask))
    return {"file": str(path), "mask": str(mask_path), "overlay": str(ov),
            "lesion_pixels": int(mask.sum()), "max_probability": float(prob.max())}


def _predict_volume(model, metadata, path: Path, out_dir: Path, device) -> dict[str, Any]:
    from medlens.io.volumes import write_volume

    vol, slices, prob, mask = segment_volume(model, metadata, path, device)
    suffix = volume_suffix(path)
    stem = path.name[: -len(suffix)] if suffix in VOLUME_SUFFIXES else path.name
    suffix = suffix if suffix in (".nii.gz", ".nii", ".mha", ".nrrd") else ".nii.gz"
    mask_path = write_volume(out_dir / f"{stem}_mask{suffix}", mask, like=vol)
    z = int(mask.reshape(len(mask), -1).sum(1).argmax()) if mask.any() else len(mask) // 2
    ov = out_dir / f"{stem}_overlay.png"
    _save_png(ov, overlay(slices[z], mask[z]))
    vox = vol.geometry.voxel_volume
    return {"file": str(path), "mask": str(mask_path), "overlay": str(ov),
            "lesion_voxels": int(mask.sum()), "lesion_volume_mm3": float(mask.sum()) * vox,
            "max_probability": float(prob.max())}


def predict_to_folder(pkg: Any, inputs: Sequence[str | Path], out: str | Path | None) -> list[dict[str, Any]]:
    """``medlens predict`` for segmentation packages: masks + overlays + ``predictions.json``
    into ``out`` (default ``<run>/predictions``); one row per input.

    Raises:
        BadInputError: no inputs found, or none could be predicted.
    """
    from medlens.io.atomic import atomic_write_json

    out_dir = Path(out) if out else Path(pkg.path).parent / "predictions"
    if out_dir.suffix.lower() in (".json", ".csv"):
        out_dir = out_dir.with_suffix("")
    rows = predict_files(pkg.model, pkg.metadata, inputs, out_dir, device=str(pkg.device))
    if not rows:
        raise BadInputError("no images or volumes found in the given inputs")
    atomic_write_json(out_dir / "predictions.json", rows)
    if all("error" in r for r in rows):
        raise BadInputError(f"none of the {len(rows)} input(s) could be predicted")
    return rows
