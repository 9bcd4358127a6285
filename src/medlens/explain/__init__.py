"""Explanations and bias probes.

``explain(model, x, method=...)`` gives one heat map per image (Grad-CAM, Grad-CAM++,
LIME, occlusion, Integrated Gradients; 2D and 3D; classifiers and segmenters);
``evaluate_faithfulness`` says which of them this model's predictions actually follow;
``probe`` measures how predictions move under the perturbations of a bias study.
Built on MONAI ``visualize`` (CAMs) and captum (LIME, occlusion, IG).
"""

from __future__ import annotations

from medlens.explain.base import (
    EXPLAINERS,
    ClassTarget,
    Explainer,
    RegionTarget,
    hooks_released,
    make_target,
    register_explainer,
)
from medlens.explain.faithfulness import (
    FaithfulnessTable,
    evaluate_faithfulness,
    perturbation_curves,
)
from medlens.explain.layers import conv_layer_names, resolve_layer
from medlens.explain.methods import explain, list_methods
from medlens.explain.overlay import overlay_image, save_overlay
from medlens.explain.probes import DEFAULT_PROBES, PROBES, probe
from medlens.explain.report import report_section

__all__ = [
    "DEFAULT_PROBES",
    "EXPLAINERS",
    "PROBES",
    "ClassTarget",
    "Explainer",
    "FaithfulnessTable",
    "RegionTarget",
    "conv_layer_names",
    "evaluate_faithfulness",
    "explain",
    "hooks_released",
    "list_methods",
    "make_target",
    "overlay_image",
    "perturbation_curves",
    "probe",
    "register_explainer",
    "report_section",
    "resolve_layer",
    "save_overlay",
]
