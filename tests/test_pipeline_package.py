"""A package holding several named networks ("stages"): saved in one atomic write, each
stage rebuilt from the registry with weights-only loading, malformed or incomplete
packages refused with an error naming metadata.json and the stage, and the single-model
format left exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medlens.errors import BadInputError, ConfigError
from medlens.package import (
    ModelPackage,
    Stage,
    find_package,
    load_model,
    load_package,
    save_model_package,
    save_pipeline_package,
)
from medlens.package_spec import PackageSpec, StageSpec
from tests.test_io.test_weights import plant

UNET = {"num_classes": 1, "in_channels": 1, "spatial_dims": 3}
CNN = {"num_classes": 2, "in_channels": 1}


def _nets(seed: int = 0) -> dict[str, torch.nn.Module]:
    from medlens.models import create_model

    torch.manual_seed(seed)
    return {"candidates": create_model("test_unet", **UNET).eval(), "nodule": create_model("test_cnn", **CNN).eval()}


def _stages(nets: dict[str, torch.nn.Module]) -> dict[str, Stage | tuple]:
    return {
        "candidates": Stage(nets["candidates"], "test_unet", UNET,
                            {"role": "candidate segmentation", "threshold": 0.4,
                             "input": {"channels": 1, "spatial_dims": 3, "patch": [16, 16, 16]}}),
        "nodule": (nets["nodule"], "test_cnn", CNN,  # the plain tuple form
                   {"role": "nodule classifier", "classes": ["other", "nodule"], "threshold": 0.7,
                    "input": {"size": 32, "channels": 1}}),
    }


def _pipeline(path: Path, seed: int = 0) -> tuple[Path, dict[str, torch.nn.Module]]:
    nets = _nets(seed)
    out = save_pipeline_package(path, _stages(nets), metadata={"task": "lung-ct", "description": "two stages"},
                                model_card="# two-stage test pipeline\n")
    return out, nets


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"candidates": torch.randn(2, 1, 16, 16, 16, generator=g), "nodule": torch.randn(3, 1, 32, 32, generator=g)}


def _edit_meta(pkg: Path, change) -> None:
    meta = json.loads((pkg / "metadata.json").read_text())
    change(meta)
    (pkg / "metadata.json").write_text(json.dumps(meta))


def test_two_stage_round_trip(tmp_path):
    pkg, nets = _pipeline(tmp_path / "run" / "model")
    assert sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file()) == [
        "metadata.json", "model_card.md", "stages/candidates.pt", "stages/nodule.pt"]
    meta = json.loads((pkg / "metadata.json").read_text())
    assert "model" not in meta
    assert meta["stages"]["nodule"] == {
        "role": "nodule classifier", "classes": ["other", "nodule"], "threshold": 0.7,
        "input": {"size": 32, "channels": 1},
        "model": {"name": "test_cnn", "kwargs": CNN}, "weights": "stages/nodule.pt"}

    loaded = load_model(tmp_path / "run")  # the run folder finds model/ as for a single model
    assert isinstance(loaded, ModelPackage) and loaded.model is None
    assert loaded.stage_names == ["candidates", "nodule"]
    assert loaded.stage_spec("candidates").input.spatial_dims == 3
    assert loaded.stage_spec("nodule").threshold == 0.7
    assert isinstance(loaded.package_spec.stages["candidates"], StageSpec)
    with torch.no_grad():
        for name, x in _inputs().items():
            net = loaded.stage(name)
            assert not net.training
            assert torch.equal(net(x), nets[name](x)), name
    assert loaded.stage("nodule") is loaded.stage("nodule")  # built once
    with pytest.raises(ConfigError, match="no stage 'malignancy'.*stages: candidates, nodule"):
        loaded.stage("malignancy")
    with pytest.raises(BadInputError, match="pipeline package with no single model"):
        load_package(pkg)
    with pytest.raises(BadInputError, match="no single model to predict with"):
        loaded.predict_proba([])


def test_a_primary_model_with_stages(tmp_path):
    from medlens.models import create_model

    nets = _nets()
    torch.manual_seed(5)
    primary = create_model("test_cnn", num_classes=3, in_channels=1).eval()
    pkg = save_model_package(tmp_path / "model", primary, model_name="test_cnn",
                             model_kwargs={"num_classes": 3, "in_channels": 1},
                             metadata={"classes": ["a", "b", "c"]}, stages=_stages(nets))
    model, meta = load_package(pkg)  # the primary model loads as it always did
    x = _inputs()["nodule"]
    with torch.no_grad():
        assert torch.equal(model(x), primary(x))
        loaded = load_model(pkg)
        assert torch.equal(loaded.model(x), primary(x))
        assert torch.equal(loaded.stage("nodule")(x), nets["nodule"](x))
    assert meta["model"]["name"] == "test_cnn" and list(meta["stages"]) == ["candidates", "nodule"]


def test_single_model_format_is_unchanged(tmp_path):
    from medlens.models import create_model

    pkg = save_model_package(tmp_path / "model", create_model("test_cnn", **CNN), model_name="test_cnn",
                             model_kwargs=CNN, metadata={"task": "classify", "classes": ["a", "b"]})
    assert sorted(p.name for p in pkg.iterdir()) == ["metadata.json", "weights.pt"]
    meta = json.loads((pkg / "metadata.json").read_text())
    assert sorted(meta) == ["classes", "created", "format", "format_version", "model", "task", "versions"]
    assert meta["model"] == {"name": "test_cnn", "kwargs": CNN}
    loaded = load_model(pkg)
    assert loaded.stage_names == [] and loaded.package_spec.stages is None
    with pytest.raises(ConfigError, match="no stage 'x'.*single-model"):
        loaded.stage("x")


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: m["stages"]["nodule"].pop("model"), r"stage 'nodule': 'model' field required"),
    (lambda m: m["stages"]["nodule"]["model"].pop("name"), r"stage 'nodule': 'model.name' field required"),
    (lambda m: m["stages"].__setitem__("nodule", "test_cnn"), r"stage 'nodule': 'entry' input should be"),
    (lambda m: m["stages"]["nodule"].__setitem__("threshold", "high"), r"stage 'nodule': 'threshold'"),
    (lambda m: m["stages"]["nodule"].__setitem__("weights", "../../evil.pt"),
     r"stage 'nodule': 'weights' must be a file in the package's stages/ folder"),
    (lambda m: m["stages"]["nodule"].__setitem__("weights", "stages/candidates.pt"),
     r"stages 'candidates' and 'nodule' share the weights file"),
    (lambda m: m["stages"].__setitem__("../nodule", m["stages"].pop("nodule")), r"stage name\(s\) '../nodule'"),
    (lambda m: m.__setitem__("stages", {}), r"'stages' must name at least one stage"),
    (lambda m: m.pop("stages"), r"needs a 'model' entry \(or, for a pipeline package, 'stages'\)"),
], ids=["no-model", "no-model-name", "not-an-object", "bad-threshold", "weights-outside", "shared-weights",
        "bad-name", "empty", "no-network"])
def test_malformed_stage_entry_is_bad_input_naming_the_stage(tmp_path, change, expected):
    pkg, _ = _pipeline(tmp_path / "model")
    _edit_meta(pkg, change)
    with pytest.raises(BadInputError, match=r"metadata\.json: malformed model metadata \(.*" + expected):
        load_model(pkg)


def test_missing_stage_weights_file_is_bad_input_naming_the_stage(tmp_path):
    pkg, _ = _pipeline(tmp_path / "model")
    (pkg / "stages" / "nodule.pt").unlink()
    with pytest.raises(BadInputError, match=r"metadata\.json: stage 'nodule': its weights file stages/nodule\.pt "
                                            r"is missing"):
        load_model(pkg)


def test_stage_weights_that_do_not_fit_are_bad_input(tmp_path):
    pkg, _ = _pipeline(tmp_path / "model")
    _edit_meta(pkg, lambda m: m["stages"]["nodule"]["model"]["kwargs"].__setitem__("num_classes", 5))
    with pytest.raises(BadInputError, match=r"nodule\.pt: stage 'nodule': weights do not load into test_cnn"):
        load_model(pkg).stage("nodule")


@pytest.mark.parametrize("raw", [False, True], ids=["torch-zip", "bare-pickle"])
def test_code_in_a_stage_weights_file_is_refused_and_never_runs(tmp_path, raw):
    pkg, nets = _pipeline(tmp_path / "model")
    marker = tmp_path / "marker"
    (pkg / "stages" / "nodule.pt").unlink()
    plant(pkg / "stages" / "nodule.pt", marker, raw=raw, wrap=None)
    loaded = load_model(pkg)
    with pytest.raises(BadInputError, match=r"refusing to load .*stages/nodule\.pt: it contains code/objects"):
        loaded.stage("nodule")
    assert not marker.exists()
    x = _inputs()["candidates"]
    with torch.no_grad():  # the untouched stage still loads
        assert torch.equal(loaded.stage("candidates")(x), nets["candidates"](x))


def _outputs(pkg: Path) -> dict[str, torch.Tensor]:
    loaded = load_model(pkg)
    with torch.no_grad():
        return {name: loaded.stage(name)(x) for name, x in _inputs().items()}


def test_a_failure_while_filling_leaves_the_old_package(tmp_path, monkeypatch):
    import medlens.package_io as package

    pkg, _ = _pipeline(tmp_path / "model", seed=0)
    before_meta, before = (pkg / "metadata.json").read_text(), _outputs(pkg)

    def broken(path, obj):  # the stage weights are written, then the metadata write fails
        assert (Path(path).parent / "stages" / "nodule.pt").is_file()
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(package, "atomic_write_json", broken)
    with pytest.raises(OSError, match="No space left"):
        _pipeline(tmp_path / "model", seed=1)
    monkeypatch.undo()

    assert find_package(tmp_path / "model") == pkg
    assert (pkg / "metadata.json").read_text() == before_meta
    after = _outputs(pkg)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "no temporary folder is left"

    _pipeline(tmp_path / "model", seed=1)  # a later save replaces it
    assert not torch.equal(_outputs(pkg)["nodule"], before["nodule"])


@pytest.mark.parametrize(("stages", "error"), [
    (lambda n: {"a/b": (n["nodule"], "test_cnn", CNN)}, "stage name 'a/b'"),
    (lambda n: {"nodule": (n["nodule"], "test_cnn", CNN, {"weights": "x.pt"})}, "may not set weights"),
    (lambda n: {"nodule": (n["nodule"], "test_cnn", CNN, {"threshold": "high"})},
     "stage 'nodule': malformed stage metadata"),
    (lambda n: {"Nodule": (n["nodule"], "test_cnn", CNN), "nodule": (n["nodule"], "test_cnn", CNN)},
     "already uses the file stages/nodule.pt"),
], ids=["bad-name", "reserved-key", "bad-threshold", "case-clash"])
def test_bad_stages_are_refused_before_anything_is_written(tmp_path, stages, error):
    pkg, _ = _pipeline(tmp_path / "model")
    before = (pkg / "metadata.json").read_text()
    with pytest.raises(ValueError, match=error):
        save_pipeline_package(pkg, stages(_nets()), metadata={})
    assert (pkg / "metadata.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_package_spec_types_stages():
    spec = PackageSpec.model_validate({"format": "medlens-model", "stages": {"seg": {
        "model": {"name": "test_unet"}, "weights": "stages/seg.pt", "input": {"spatial_dims": 3}, "extra": 1}}})
    assert spec.model is None and spec.stages["seg"].input.spatial_dims == 3
    assert spec.stages["seg"].model_extra == {"extra": 1}  # unknown per-stage fields are kept
