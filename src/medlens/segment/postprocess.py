"""Post-processing of predicted masks, chosen on validation patients (as nnU-Net does).

A U-Net trained on few patients often leaves small false-positive islands next to one
true lesion. Keeping only the largest connected component removes them, but it would
also drop real second lesions, so it is not a fixed rule: :func:`choose_postprocess`
compares mean per-patient Dice on the *validation* patients with and without it and
keeps the rule only when it helps there. The choice is stored in the model package and
applied by ``evaluate`` and ``predict``; test patients never take part in it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

POSTPROCESS = ("none", "largest_component")


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected foreground component of a 2D slice or 3D volume (full
    connectivity); an empty mask stays empty."""
    from monai.transforms.utils import get_largest_connected_component_mask

    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return m
    return np.asarray(get_largest_connected_component_mask(m), dtype=bool)


def apply_postprocess(mask: np.ndarray, rule: str | None) -> np.ndarray:
    """``mask`` (one slice or one patient's volume) after ``rule``."""
    if rule in (None, "none"):
        return np.asarray(mask, dtype=bool)
    if rule == "largest_component":
        return keep_largest_component(mask)
    raise ValueError(f"unknown post-processing {rule!r}; choose from {', '.join(POSTPROCESS)}")


def count_components(mask: np.ndarray) -> int:
    """Connected foreground components of a slice or volume (full connectivity)."""
    from skimage.measure import label

    m = np.asarray(mask, dtype=bool)
    return int(label(m, connectivity=m.ndim).max()) if m.any() else 0


def choose_postprocess(volumes: Iterable[tuple[np.ndarray, np.ndarray]], *, threshold: float,
                       single_lesion: bool = False) -> tuple[str, dict[str, float]]:
    """Pick the rule with the best mean per-patient Dice on validation.

    Largest-component filtering is kept when it raises validation Dice. On a tie (the
    validation predictions were one blob already, so validation cannot tell), the
    training data decides: ``single_lesion`` — every training truth volume holds at most
    one lesion — keeps it, else nothing is removed.

    Args:
        volumes: ``(probabilities, truth)`` per validation patient, each a slice stack
            ``(D, H, W)`` in slice order (or one 2D slice).
        threshold: the decision threshold.
        single_lesion: the training truths have at most one connected lesion each.

    Returns:
        The chosen rule and the validation mean Dice of every rule.
    """
    from medlens.segment.metrics import dice

    pairs = [(np.asarray(p) >= threshold, np.asarray(t, dtype=bool)) for p, t in volumes]
    scores = {rule: float(np.mean([dice(apply_postprocess(p, rule), t) for p, t in pairs]))
              if pairs else float("nan") for rule in POSTPROCESS}
    gain = scores["largest_component"] - scores["none"]
    best = "largest_component" if gain > 1e-9 or (abs(gain) <= 1e-9 and single_lesion) else "none"
    return best, scores


def decide_postprocess(setting: str, threshold: float, val_volumes: Iterable[tuple[np.ndarray, np.ndarray]],
                       train_truths: Iterable[np.ndarray]) -> dict[str, Any]:
    """The rule for a run (``setting``: ``auto`` or a rule name) with its evidence.

    ``auto`` decides on the validation patients' ``(probabilities, truth)`` volumes; a tie
    is settled by whether every training truth volume in ``train_truths`` holds at most
    one lesion. The returned dict goes into ``metrics.json``, its ``rule`` into the package.
    """
    if setting != "auto":
        return {"rule": setting, "chosen_by": "config"}
    lesions = [count_components(t) for t in train_truths]
    single = bool(lesions) and max(lesions) <= 1
    rule, scores = choose_postprocess(val_volumes, threshold=threshold, single_lesion=single)
    logger.info("post-processing %s (validation mean Dice %s; training volumes with > 1 lesion: %d of %d)",
                rule, {k: round(v, 4) for k, v in scores.items()}, sum(n > 1 for n in lesions), len(lesions))
    return {"rule": rule, "chosen_by": "validation patients", "validation_dice": scores,
            "training_single_lesion": single}


def postprocess_probs(prob: np.ndarray, threshold: float, rule: str | None,
                      keep: np.ndarray | None = None) -> np.ndarray:
    """``prob`` with the voxels that ``rule`` removes set to 0, so that thresholding the
    result gives the post-processed mask (reports and overlays show what is scored);
    ``keep``: that rule's mask when the caller has it already."""
    if rule in (None, "none"):
        return prob
    keep = apply_postprocess(prob >= threshold, rule) if keep is None else keep
    return np.where(keep | (prob < threshold), prob, 0).astype(prob.dtype, copy=False)
