"""The candidate ranker: a small network (or a logistic regression) on shape/intensity
descriptors of each candidate, the last word on how likely a candidate is a nodule.

Why: a model on physical descriptors (:mod:`medlens.ct.features`) learns from a few dozen
nodules what a 3D CNN cannot (on fresh phantoms the crop network ranked candidates with AUC
0.79, the descriptors 0.92). One hidden layer (default 16 units, ``ranker_hidden``; 0 = the
logistic regression of packages before 2026-12-03) lets it weigh the descriptors differently
for a small and a large lump, a solid and a ground-glass one; on fresh phantoms that raised
the CPM by 0.10–0.15 over the linear model with the same inputs (README, lung CT). Two input
sets (:data:`INPUT_SETS`):

* ``image`` (default): the image descriptors only. A model trained on phantoms meets real CT
  with a U-Net and a crop network that have never seen it; their outputs shift, the physics
  of a round lump in lung does not (on LIDC-IDRI-0001 the reference nodule ranks first of 327
  candidates with ``image``, 24th with ``all``);
* ``all``: also the generator's score and size and the crop network's logit — for training
  sets where the networks learn real anatomy (LUNA16), where they may carry the most.

Its weights are plain tensors, so the package stays weights-only (no pickled estimator).
Why a finding ranks where it does (:func:`reasons`) is each descriptor's occlusion effect: how
much the logit moves when that descriptor is set to the training candidates' mean — for the
linear model exactly its term of the logit.
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
    """``(B, F)`` candidate descriptors → ``(B, 1)`` nodule logits: standardise, then one hidden
    layer of ``hidden`` ReLU units (0: linear, a logistic regression).

    With a hidden layer the standardised inputs are clamped to the range of the training
    candidates (``low``/``high``): a network answers for values it never saw by extrapolation
    (a real scan's lump leaving the ball 21 times, where no phantom's did), the clamp makes
    such a value count as the most extreme one seen. A linear model is monotone and unclamped.
    """

    def __init__(self, n_features: int, inputs: str = "all", hidden: int = 0) -> None:
        super().__init__()
        self.inputs = inputs  # the input set it was fitted on (a label; the package stores the names)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        if hidden:
            self.register_buffer("low", torch.full((n_features,), -torch.inf))
            self.register_buffer("high", torch.full((n_features,), torch.inf))
        self.hidden = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU()) if hidden else nn.Identity()
        self.linear = nn.Linear(hidden or n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.scale
        if hasattr(self, "low"):
            z = torch.clamp(z, self.low, self.high)
        return self.linear(self.hidden(z))


@register_model("ct_candidate_ranker", family="descriptor_mlp", spatial_dims=(3,), hidden=True,
                description="a small network (or logistic regression) on lung-CT candidate descriptors (ranker stage)")
def ct_candidate_ranker(*, num_classes: int = 1, in_channels: int = len(INPUT_SETS["all"]),
                        spatial_dims: int = 3, inputs: str = "all", hidden_units: int = 0) -> CandidateRanker:
    """The ranker stage; ``in_channels`` is the number of descriptors of input set ``inputs``,
    ``hidden_units`` the width of its hidden layer (0: linear)."""
    if num_classes != 1:
        raise ValueError(f"ct_candidate_ranker gives one logit; got num_classes={num_classes}")
    return CandidateRanker(in_channels, inputs, hidden_units)


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


def fit_ranker(x: np.ndarray, y: np.ndarray, *, inputs: str = "all", hidden: int = 16, c: float = 0.03,
               alpha: float = 1.0, seed: int = 0) -> CandidateRanker:
    """Fit the ranker on inputs ``x`` (:func:`ranker_inputs` of set ``inputs``) and 0/1 labels
    ``y``, on standardised inputs with the classes balanced: a network with one hidden layer of
    ``hidden`` units (scikit-learn's MLP, L2 strength ``alpha``; inputs clamped to the training
    range, :class:`CandidateRanker`), or with ``hidden=0`` an
    L2-penalised logistic regression (inverse strength ``c``). The fitted weights are copied
    into a :class:`CandidateRanker`.

    Raises:
        ValueError: ``y`` does not hold both classes.
    """
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        raise ValueError("the ranker needs nodules and non-nodules among the training candidates")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    if hidden:
        from sklearn.neural_network import MLPClassifier
        from sklearn.utils.class_weight import compute_sample_weight

        clf = MLPClassifier((hidden,), alpha=alpha, max_iter=2000, random_state=seed)
        clf.fit(z, y, sample_weight=compute_sample_weight("balanced", y))
        layers = [(clf.coefs_[0].T, clf.intercepts_[0]), (clf.coefs_[1].T, clf.intercepts_[1])]
    else:
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=c, max_iter=5000, class_weight="balanced", random_state=seed).fit(z, y)
        layers = [(clf.coef_, clf.intercept_)]
    from medlens.models import create_model

    model = create_model("ct_candidate_ranker", num_classes=1, in_channels=int(x.shape[1]), spatial_dims=3,
                         inputs=inputs, hidden_units=hidden)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        model.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        if hidden:
            model.low.copy_(torch.as_tensor(z.min(axis=0), dtype=torch.float32))
            model.high.copy_(torch.as_tensor(z.max(axis=0), dtype=torch.float32))
        for lin, (w, b) in zip(linears, layers, strict=True):
            lin.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            lin.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
    return model.eval()


@torch.inference_mode()
def rank(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Nodule probabilities of the candidates with inputs ``x``."""
    if not len(x):
        return np.zeros(0)
    t = torch.as_tensor(np.nan_to_num(np.asarray(x, dtype=np.float64)), dtype=torch.float32,
                        device=next(model.parameters()).device)
    return torch.sigmoid(model(t)[:, 0]).double().cpu().numpy()


@torch.inference_mode()
def occlusion_effects(model: CandidateRanker, x: np.ndarray, *, chunk: int = 512) -> np.ndarray:
    """``(N, F)``: how much each candidate's logit drops when one descriptor is set to the
    training mean (its standardised value to 0), one descriptor at a time. For a linear
    ranker this is exactly the descriptor's term of the logit (weight × standardised value).
    ``chunk`` candidates at a time (each becomes F rows)."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    n, f = x.shape
    out = np.zeros((n, f))
    dev = next(model.parameters()).device
    for start in range(0, n, chunk):
        t = torch.as_tensor(x[start:start + chunk], dtype=torch.float32, device=dev)
        m = len(t)
        occluded = t.repeat_interleave(f, dim=0)  # row i·f + j: candidate i with descriptor j at the mean
        occluded[torch.arange(m * f, device=dev), torch.arange(f, device=dev).repeat(m)] = model.mean.repeat(m)
        out[start:start + m] = (model(t)[:, :1] - model(occluded)[:, 0].view(m, f)).double().cpu().numpy()
    return out


def reasons(model: CandidateRanker, x: np.ndarray, names: Sequence[str] | None = None, k: int = 3) -> list[str]:
    """Per candidate, the ``k`` inputs that moved its logit most: ``name=value (±effect)``, the
    effect being :func:`occlusion_effects` (for a linear ranker the exact term of the logit)."""
    if not len(x):
        return []
    names = tuple(names) if names is not None else INPUT_SETS[model.inputs]
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    part = occlusion_effects(model, x)
    top = np.argsort(-np.abs(part), axis=1)[:, :k]
    return ["; ".join(f"{names[j]}={x[i, j]:.3g} ({part[i, j]:+.2f})" for j in row) for i, row in enumerate(top)]


def strongest_inputs(model: CandidateRanker, x: np.ndarray, k: int = 8, names: Sequence[str] | None = None
                     ) -> list[tuple[str, float]]:
    """The ``k`` inputs that move the logit most on candidates ``x`` (the training candidates):
    (name, mean absolute occlusion effect, signed by whether a higher value raises the logit) —
    what the ranker relies on, for the model card. For a linear ranker the sign is the weight's."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    part = occlusion_effects(model, x)
    z = (x - model.mean.cpu().double().numpy()) / model.scale.cpu().double().numpy()
    size = np.abs(part).mean(axis=0) * np.sign((part * z).mean(axis=0))
    names = tuple(names) if names is not None else INPUT_SETS[model.inputs]
    order = np.argsort(-np.abs(size))[:k]
    return [(names[i], float(size[i])) for i in order]
