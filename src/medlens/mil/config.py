"""The configuration of a patient-level (MIL) run, saved as ``config.json`` in its run folder."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medlens.train.config import TrainConfig

#: layouts whose labels belong to patients (a bag of images each): the patient task's data
PATIENT_LAYOUTS = ("aplaml", "patient_table")
#: one bag (patient) per step: the engine's batch is a bag, so batch_size is unused. Tuned for the
#: default recipe (a frozen encoder: only the bag head trains, an epoch takes milliseconds)
DEFAULT_TRAIN = {"epochs": 60, "batch_size": 1, "lr": 5e-4, "patience": 15, "scheduler": "cosine",
                 "weight_decay": 1e-2}
#: the default cell encoder: ImageNet weights that install offline (the medlens[imagenet] extra)
DEFAULT_ENCODER = "efficientnet_lite0"
#: without the imagenet extra: this encoder, trained end to end on ``FALLBACK_MAX_CELLS`` cells per bag
FALLBACK_ENCODER = "resnet18"
#: cells drawn per patient per epoch when the encoder trains and ``max_cells`` is not set
TRAINABLE_MAX_CELLS = 64


class PatientConfig(BaseModel):
    """Everything that defines a patient-level MIL run."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["patient"] = "patient"  # the key of the task union (medlens.tasks.config)
    data: str
    layout: str | None = None
    size: int = Field(128, ge=16, le=1024, description="cells are resized (padded) to size×size")
    encoder: str = Field(DEFAULT_ENCODER, description="cell encoder: any registered 2D backbone (`medlens models`)")
    pretrained: str | None = Field("imagenet", description="encoder weights: a local file or 'imagenet' "
                                   "(efficientnet_lite0/1/2, medlens[imagenet] extra); None: random init")
    encoder_trainable: bool | None = Field(None, description="fine-tune the encoder end to end (every cell "
                                           "encoded every epoch: slow on a CPU); None: frozen when pretrained "
                                           "(features computed once, only the pooling head trains), else trained")
    pooled_features: bool | None = Field(None, description="take the encoder's pooled features (its registered "
                                         "head removed, projected to embed_dim); None: when it has a head")
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict)
    embed_dim: int = Field(128, ge=2, description="cell embedding size")
    pooling: Literal["gated_attention", "attention", "mean", "topk"] = Field(
        "gated_attention", description="gated attention (Ilse et al. 2018); attention (ungated); mean and "
                                       "top-k pooling are the baselines")
    attention_dim: int = Field(64, ge=1)
    top_k: int = Field(5, ge=1, description="cells pooled by --pooling topk")
    dropout: float = Field(0.25, ge=0, lt=1)
    max_cells: int | None = Field(None, ge=1, description="cells drawn per patient per training epoch "
                                  f"(None: all with a frozen encoder, {TRAINABLE_MAX_CELLS} with a trainable one)")
    augment: bool = Field(True, description="random flips/90° turns per cell and a colour jitter per patient "
                          "(a trainable encoder only: frozen features are computed once)")
    val_fraction: float = Field(0.2, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    val_patients: list[str] | None = Field(None, description="these validation patients instead of a drawn "
                                           "split (cross-validation sets them per fold)")
    test_patients: list[str] | None = Field(None, description="these test patients instead of a drawn split")
    target_sensitivity: float = Field(0.95, gt=0, le=1, description="the operating point is chosen on the "
                                      "validation patients for it")
    negative_class: str | None = Field(None, description="the healthy (or comparison) diagnosis; guessed "
                                       "from the names, else the first class")
    n_bootstrap: int = Field(1000, ge=0, description="patient bootstrap resamples for the CIs")
    top_cells_in_report: int = Field(8, ge=0, description="highest-attention cells shown per patient")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(**DEFAULT_TRAIN))

    @property
    def trainable(self) -> bool:
        """Does the encoder train (explicitly, or by default when it starts from random weights)?"""
        return self.encoder_trainable if self.encoder_trainable is not None else not self.pretrained

    @property
    def cells_per_epoch(self) -> int | None:
        """Cells drawn per bag per epoch: ``max_cells``, else all (frozen) or a sample (trainable)."""
        return self.max_cells if self.max_cells is not None else (TRAINABLE_MAX_CELLS if self.trainable else None)

    def uses_pooled_features(self) -> bool:
        if self.pooled_features is not None:
            return self.pooled_features
        from medlens.models import model_info

        return bool(model_info(self.encoder).get("head"))

    def network_kwargs(self, num_classes: int) -> dict[str, Any]:
        """``create_model("mil", …)`` arguments (what the package stores to rebuild it)."""
        return {"num_classes": num_classes, "encoder": self.encoder, "encoder_kwargs": dict(self.encoder_kwargs),
                "embed_dim": self.embed_dim, "pooling": self.pooling, "attention_dim": self.attention_dim,
                "top_k": self.top_k, "dropout": self.dropout, "input_size": self.size,
                "pooled_features": self.uses_pooled_features(), "encoder_trainable": self.trainable}
