"""The candidate ranker: a logistic regression on shape/intensity descriptors of each
candidate, the last word on how likely a candidate is a nodule.

Why: a linear model on physical descriptors (:mod:`medlens.ct.features`) learns from a few
dozen nodules what a 3D CNN cannot (on fresh phantoms the crop network ranked candidates
with AUC 0.79, the descriptors 0.92). Two input sets (:data:`INPUT_SETS`):

* ``image`` (default): the image descriptors only. A model trained on phantoms meets real CT
  with a U-Net and a crop network that have never seen it; their outputs shift, the physics
  of a round lump in lung does not (on LIDC-IDRI-0001 the reference nodule ranks first of 327
  candidates with ``image``, 24th with ``all``);
* ``all``: also the generator's score and size and the crop network's logit — for training
  sets where the networks learn real anatomy (LUNA16), where they may carry the most.

Its weights are plain tensors, so the package stays weights-only (no pickled estimator).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medlens.ct.features import FEATURE_NAMES, GENERATOR_FEATURES, IMAGE_FEATURES
from medlens.errors import BadInputError
from medlens.models.registry import register_model

#: The ranker's input sets: names of the columns it takes, in order.
INPUT_SETS: dict[str, tuple[str, ...]] = {
    "image": IMAGE_FEATURES,
    "all": (*IMAGE_FEATURES, *GENERATOR_FEATURES, "crop_network_logit"),
}


class CandidateRanker(nn.Module):
    """``(B, F)`` candidate descriptors → ``(B, 1)`` nodule logits: standardise, then linear."""

    def __init__(self, n_features: int, inputs: str = "all") -> None:
        super().__init__()
        self.inputs = inputs  # the input set it was fitted on (a label; the package stores the names)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.linear = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.scale)


@register_model("ct_candidate_ranker", family="linear", spatial_dims=(3,), hidden=True,
                description="logistic regression on lung-CT candidate descriptors (ranker stage)")
def ct_candidate_ranker(*, num_classes: int = 1, in_channels: int = len(INPUT_SETS["all"]),
                        spatial_dims: int = 3, inputs: str = "all") -> CandidateRanker:
    """The ranker stage; ``in_channels`` is the number of descriptors of input set ``inputs``."""
    if num_classes != 1:
        raise ValueError(f"ct_candidate_ranker gives one logit; got num_classes={num_classes}")
    return CandidateRanker(in_channels, inputs)


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.log(q / (1 - q))


def needs_network(inputs: str | Sequence[str]) -> bool:
    """Whether the input set (or list of names) takes the crop network's logit: when it does
    not, detection and fitting skip running the network on every candidate."""
    return "crop_network_logit" in (INPUT_SETS[inputs] if isinstance(inputs, str) else tuple(inputs))


def ranker_inputs(features: np.ndarray, crop_prob: np.ndarray, inputs: str | Sequence[str] = "all") -> np.ndarray:
    """The ranker's input matrix from the candidates' descriptors
    (:func:`medlens.ct.features.candidate_features`) and the crop network's probabilities:
    the columns of input set ``inputs``, or of the names given (a package's stored list).

    Raises:
        BadInputError: a name this version does not compute (a package from another version).
    """
    full = np.column_stack([np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURE_NAMES)),
                            logit(crop_prob)])
    names = INPUT_SETS[inputs] if isinstance(inputs, str) else tuple(inputs)
    known = (*FEATURE_NAMES, "crop_network_logit")
    missing = [n for n in names if n not in known]
    if missing:
        raise BadInputError(f"the package's ranker takes descriptors this medlens does not compute "
                            f"({', '.join(missing[:5])}); retrain with `medlens ct train` or use a matching version")
    return full[:, [known.index(n) for n in names]]


def fit_ranker(x: np.ndarray, y: np.ndarray, *, inputs: str = "all", c: float = 0.03, seed: int = 0
               ) -> CandidateRanker:
    """Fit the ranker on inputs ``x`` (:func:`ranker_inputs` of set ``inputs``) and 0/1 labels
    ``y``: L2-penalised logistic regression (inverse strength ``c``) on standardised inputs,
    classes balanced.

    Raises:
        ValueError: ``y`` does not hold both classes.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        raise ValueError("the ranker needs nodules and non-nodules among the training candidates")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    clf = LogisticRegression(C=c, max_iter=5000, class_weight="balanced", random_state=seed)
    clf.fit((x - mean) / scale, y)
    from medlens.models import create_model

    model = create_model("ct_candidate_ranker", num_classes=1, in_channels=int(x.shape[1]), spatial_dims=3,
                         inputs=inputs)
    with torch.no_grad():
        model.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        model.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        model.linear.weight.copy_(torch.as_tensor(clf.coef_, dtype=torch.float32))
        model.linear.bias.copy_(torch.as_tensor(clf.intercept_, dtype=torch.float32))
    return model.eval()


@torch.inference_mode()
def rank(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Nodule probabilities of the candidates with inputs ``x``."""
    if not len(x):
        return np.zeros(0)
    t = torch.as_tensor(np.nan_to_num(np.asarray(x, dtype=np.float64)), dtype=torch.float32,
                        device=next(model.parameters()).device)
    return torch.sigmoid(model(t)[:, 0]).double().cpu().numpy()


def reasons(model: CandidateRanker, x: np.ndarray, names: Sequence[str] | None = None, k: int = 3) -> list[str]:
    """Per candidate, the ``k`` inputs that moved its logit most: ``name=value (±share)``, where
    share is the input's exact additive part of the logit (weight × standardised value; a
    linear model's explanation needs no approximation)."""
    if not len(x):
        return []
    names = tuple(names) if names is not None else INPUT_SETS[model.inputs]
    w = model.linear.weight.detach().cpu().double().numpy()[0]
    mean, scale = (t.detach().cpu().double().numpy() for t in (model.mean, model.scale))
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    part = w * (x - mean) / scale
    top = np.argsort(-np.abs(part), axis=1)[:, :k]
    return ["; ".join(f"{names[j]}={x[i, j]:.3g} ({part[i, j]:+.2f})" for j in row) for i, row in enumerate(top)]


def strongest_inputs(model: CandidateRanker, k: int = 8, names: Sequence[str] | None = None
                     ) -> list[tuple[str, float]]:
    """The ``k`` inputs with the largest standardised weights (name, weight): what the ranker
    relies on, for the model card."""
    w = model.linear.weight.detach().cpu().numpy()[0]
    names = tuple(names) if names is not None else INPUT_SETS[model.inputs]
    order = np.argsort(-np.abs(w))[:k]
    return [(names[i], float(w[i])) for i in order]
