"""The MIL network: a cell encoder (any registered backbone) and a bag pooling.

Why not :class:`monai.networks.nets.MILModel`: its attention is Ilse et al.'s plain
(ungated) form with a fixed 2048-unit hidden layer, its default backbone needs torchvision
(which does not load beside medlens's CPU torch), its bags are dense ``(B, N, C, H, W)``
tensors (every patient padded to the same cell count) and it returns no attention
weights, which the report needs to show the cells that drove a diagnosis. The gated
attention here is ~15 lines (Ilse et al. 2018, eq. 9); the encoder is any network of
:mod:`medlens.models` whose ``num_classes`` outputs become the cell embedding.

A bag is one patient's cells ``(N, C, H, W)``; :meth:`MILNet.forward_bag` returns the
patient's logits ``(K,)`` and one weight per cell ``(N,)`` summing to 1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from medlens.errors import ConfigError
from medlens.models.registry import create_model, register_model

POOLINGS = ("gated_attention", "attention", "mean", "topk")


class AttentionPool(nn.Module):
    """Attention-based MIL pooling (Ilse, Tomczak & Welling 2018), gated (eq. 9) or plain (eq. 8).

    ``a_i = softmax_i(w^T (tanh(V h_i) ⊙ sigm(U h_i)))``; the bag embedding is ``Σ a_i h_i``.
    """

    def __init__(self, dim: int, hidden: int = 64, gated: bool = True) -> None:
        super().__init__()
        self.v = nn.Linear(dim, hidden)
        self.u = nn.Linear(dim, hidden) if gated else None
        self.w = nn.Linear(hidden, 1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``h`` (N, D) → bag embedding (D,), attention (N,)."""
        g = torch.tanh(self.v(h))
        if self.u is not None:
            g = g * torch.sigmoid(self.u(h))
        a = torch.softmax(self.w(g).squeeze(-1), dim=0)
        return a @ h, a


class MeanPool(nn.Module):
    """Baseline: every cell counts the same (``a_i = 1/N``)."""

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        a = torch.full((h.shape[0],), 1.0 / h.shape[0], device=h.device, dtype=h.dtype)
        return a @ h, a


class TopKPool(nn.Module):
    """Baseline: the mean embedding of the ``k`` cells an instance scorer ranks highest
    (weights ``1/k`` on them, 0 elsewhere)."""

    def __init__(self, dim: int, k: int = 5) -> None:
        super().__init__()
        self.k = int(k)
        self.score = nn.Linear(dim, 1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        s = self.score(h).squeeze(-1)
        k = min(self.k, h.shape[0])
        top = torch.topk(s, k).indices
        # a soft gate keeps the scorer trainable: the chosen cells' weights carry its gradient
        gate = torch.sigmoid(s[top])
        a = torch.zeros_like(s).index_put((top,), gate / gate.sum())
        return a @ h, a


class BagHead(nn.Module):
    """Everything after the encoder: projection → pooling → classifier.

    Why a module of its own: with a frozen encoder each cell's features are computed once
    (:func:`medlens.mil.embed.embed_cells`) and only this head trains, on the cached
    features — an epoch is milliseconds instead of minutes.
    """

    def __init__(self, feature_dim: int, num_classes: int, embed_dim: int, pooling: str = "gated_attention",
                 attention_dim: int = 64, top_k: int = 5, dropout: float = 0.25) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        # pooled backbone features (e.g. 1280 for EfficientNet-Lite) → the cell embedding
        self.project: nn.Module = (nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, embed_dim))
                                   if feature_dim != embed_dim else nn.Identity())
        self.pool: nn.Module = (AttentionPool(embed_dim, attention_dim, gated=pooling == "gated_attention")
                                if pooling in ("gated_attention", "attention")
                                else MeanPool() if pooling == "mean" else TopKPool(embed_dim, top_k))
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward_bag(self, f: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder features ``(N, F)`` → logits ``(K,)`` and attention ``(N,)``."""
        z, a = self.pool(torch.relu(self.project(f)))
        return self.classifier(self.drop(z)), a

    def forward(self, f: Tensor) -> Tensor:
        return self.forward_bag(f)[0].unsqueeze(0)


class MILNet(nn.Module):
    """Cell encoder → :class:`BagHead`. ``forward`` takes one bag ``(N, C, H, W)`` and
    returns ``(1, K)`` logits (the registry's contract, with the bag as the batch).

    ``feature_dim``: the encoder's output size when it is not ``embed_dim`` (pooled
    backbone features, projected to ``embed_dim`` by the head). ``encoder_trainable=False``
    freezes the encoder: no gradients, and eval mode (batch norm, dropout) even in training.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, embed_dim: int, pooling: str = "gated_attention",
                 attention_dim: int = 64, top_k: int = 5, dropout: float = 0.25, *,
                 feature_dim: int | None = None, encoder_trainable: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = BagHead(feature_dim or embed_dim, num_classes, embed_dim, pooling, attention_dim, top_k, dropout)
        self.pooling = pooling
        self.encoder_trainable = bool(encoder_trainable)
        if not self.encoder_trainable:
            self.encoder.requires_grad_(False)

    @property
    def classifier(self) -> nn.Module:
        return self.head.classifier

    def train(self, mode: bool = True) -> MILNet:
        """Batch norm in the encoder stays in eval mode (running statistics) while training;
        a frozen encoder stays in eval mode altogether.

        Why: a training batch is one patient's bag, so batch statistics would normalise away
        that patient's stain during training but not at inference (running statistics): a
        model that fits the training patients and fails on new ones.
        """
        super().train(mode)
        if not self.encoder_trainable:
            self.encoder.eval()
            return self
        for m in self.encoder.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def embed(self, x: Tensor, chunk: int = 256) -> Tensor:
        """Encoder features ``(N, F)``, encoded in chunks (memory stays bounded for big bags)."""
        return torch.cat([self.encoder(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])

    def pool_bag(self, f: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder features ``(N, F)`` → logits ``(K,)`` and attention ``(N,)``."""
        return self.head.forward_bag(f)

    def forward_bag(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One patient's cells ``(N, C, H, W)`` → logits ``(K,)``, attention ``(N,)``."""
        return self.pool_bag(self.embed(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_bag(x)[0].unsqueeze(0)


def strip_head(net: nn.Module, head: str) -> int:
    """Replace the classifier module ``head`` of ``net`` with the identity, in place, so the
    network returns its pooled features; return their size (the head's ``in_features``)."""
    module = net.get_submodule(head)
    if not isinstance(module, nn.Linear):
        raise ConfigError(f"the head {head!r} of {type(net).__name__} is not a linear layer; "
                          "set pooled_features to false")
    parent, _, name = head.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, name, nn.Identity())
    return int(module.in_features)


@register_model("mil", family="mil", hidden=True, cam_layer="encoder",
                description="patient-level MIL: a registered backbone per cell + attention/mean/top-k pooling")
def mil(*, num_classes: int, in_channels: int = 3, spatial_dims: int = 2, encoder: str = "resnet18",
        encoder_kwargs: dict[str, Any] | None = None, embed_dim: int = 128, pooling: str = "gated_attention",
        attention_dim: int = 64, top_k: int = 5, dropout: float = 0.25,
        input_size: int | None = None, pooled_features: bool = False, encoder_trainable: bool = True) -> MILNet:
    """Build :class:`MILNet` around ``create_model(encoder, num_classes=embed_dim, …)``;
    ``pooled_features``: the encoder's registered head is removed and its pooled features
    (projected to ``embed_dim`` in the bag head) are the cell's representation."""
    if spatial_dims != 2:
        raise ConfigError("the patient (MIL) task works on 2D cell images (spatial_dims=2)")
    kw = dict(encoder_kwargs or {})
    if input_size is not None:
        kw.setdefault("input_size", input_size)
    enc = create_model(encoder, num_classes=embed_dim, in_channels=in_channels, **kw)
    feature_dim = None
    if pooled_features:
        from medlens.models import model_info

        head = model_info(encoder).get("head")
        if not head:
            raise ConfigError(f"encoder {encoder!r} registers no classifier head, so it has no pooled features "
                              "to take; set pooled_features to false")
        feature_dim = strip_head(enc, head)
    return MILNet(enc, num_classes, embed_dim, pooling, attention_dim, top_k, dropout,
                  feature_dim=feature_dim, encoder_trainable=encoder_trainable)
