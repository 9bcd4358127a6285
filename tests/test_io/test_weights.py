"""Weights-only loading: a planted pickle never runs, and the user gets one clean error.

Each malicious file carries a ``__reduce__`` that would create a marker file when
unpickled by an ordinary loader; the tests assert the marker never appears.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from medlens.errors import BadInputError
from medlens.io.weights import load_weights_file


class Payload:
    """Unpickling this writes ``marker``: the code a crafted checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def plant(path: Path, marker: Path, *, raw: bool = False, wrap: str | None = "model") -> Path:
    """Write a malicious weights file: torch's zip format (default) or a bare pickle."""
    obj = {wrap: Payload(marker)} if wrap else Payload(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw:
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path)
    return path


def test_payload_really_runs_under_an_unsafe_load(tmp_path):
    """Guard for the other tests: the planted file does run code when loaded the unsafe way."""
    marker = tmp_path / "marker"
    torch.load(plant(tmp_path / "x.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("raw", [False, True], ids=["torch-zip", "bare-pickle"])
def test_code_in_a_weights_file_is_refused_and_never_runs(tmp_path, raw):
    marker = tmp_path / "marker"
    f = plant(tmp_path / "evil.pt", marker, raw=raw)
    with pytest.raises(BadInputError, match="refusing to load .*evil.pt: it contains code/objects, not only weights"):
        load_weights_file(f)
    assert not marker.exists()


def test_damaged_or_missing_files_are_bad_input(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    assert torch.equal(load_weights_file(good)["w"], torch.ones(3))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:100])
    text = tmp_path / "text.pt"
    text.write_text("not weights")
    for f in (cut, text, tmp_path / "absent.pt"):
        with pytest.raises(BadInputError, match=f.name):
            load_weights_file(f)


def test_pretrained_file_with_code_is_refused(tmp_path):
    from medlens.models import create_model

    marker = tmp_path / "marker"
    f = plant(tmp_path / "resnet.pth", marker, wrap="state_dict")
    with pytest.raises(BadInputError, match="refusing to load"):
        create_model("test_cnn", num_classes=2, in_channels=3, pretrained=str(f))
    assert not marker.exists()


def _tiny_fit(run_dir: Path, *, epochs: int, resume: bool = False):
    from medlens.train.classify import ClassificationTask
    from medlens.train.config import TrainConfig
    from medlens.train.engine import fit
    from medlens.train.loader import BatchLoader

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (32, 1, 8, 8), generator=g, dtype=torch.uint8).numpy()
    y = (x[:, 0, 2:6, 2:6].mean((1, 2)) > 127).astype(int)
    task = ClassificationTask(num_classes=2, mean=[0.5], std=[0.25])
    loader = BatchLoader({"image": x, "label": y}, batch_size=16, shuffle=True, seed=0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    cfg = TrainConfig(epochs=epochs, progress=False, device="cpu")
    return fit(net, task, loader, loader, cfg, run_dir, resume=resume)


def test_checkpoints_are_weights_only_and_a_planted_one_is_refused(tmp_path):
    run = tmp_path / "run"
    _tiny_fit(run, epochs=1)
    for name in ("last.pt", "best.pt"):  # what the engine writes loads without pickled objects
        assert isinstance(torch.load(run / "checkpoints" / name, weights_only=True), dict)

    marker = tmp_path / "marker"
    plant(run / "checkpoints" / "best.pt", marker)  # resume with all epochs done: only best.pt is read
    with pytest.raises(BadInputError, match="refusing to load .*best.pt"):
        _tiny_fit(run, epochs=1, resume=True)
    assert not marker.exists()

    plant(run / "checkpoints" / "last.pt", marker)
    with pytest.raises(BadInputError, match="refusing to load .*last.pt"):
        _tiny_fit(run, epochs=2, resume=True)
    assert not marker.exists()


def test_foreign_but_safe_checkpoint_is_bad_input_not_a_crash(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"weights": torch.ones(2)}, run / "checkpoints" / "last.pt")
    with pytest.raises(BadInputError, match="not a medlens training checkpoint"):
        _tiny_fit(run, epochs=2, resume=True)


def test_package_weights_with_code_are_refused(tmp_path):
    from medlens.models import create_model
    from medlens.package import load_model, save_model_package

    model = create_model("test_cnn", num_classes=2, in_channels=3)
    pkg = save_model_package(tmp_path / "run" / "model", model, model_name="test_cnn",
                             model_kwargs={"num_classes": 2, "in_channels": 3}, metadata={"classes": ["a", "b"]})
    marker = tmp_path / "marker"
    (pkg / "weights.pt").unlink()
    plant(pkg / "weights.pt", marker, wrap=None)
    with pytest.raises(BadInputError, match="refusing to load .*weights.pt"):
        load_model(tmp_path / "run")
    assert not marker.exists()
