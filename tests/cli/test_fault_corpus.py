"""The bad-input and fault corpus, run through the CLI's entry point (``run``, what the
installed ``medlens`` console script calls) and, for one case of each kind, through the
console script itself.

Each case asserts what a shell script sees: the exit code (1 the job failed, 2 a usage
error), one ``error:`` line on stderr naming the file or flag, no traceback and no
"internal error", and an input tree that is byte-for-byte unchanged. Every case fails
before any training starts, so the corpus stays cheap.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cli.conftest import Result, tree_hash

IMG = "{in}/folder/benign/1_0.png"
PKG = "{in}/package"
# id, arguments ({in} = the inputs folder), exit code, words the error line must hold
CASES: list[tuple[str, list[str], int, list[str]]] = [
    # --- usage errors: exit 2 -----------------------------------------------------------
    ("no-data-argument", ["train"], 2, ["Missing argument", "DATA"]),
    ("unknown-flag", ["inspect", "{in}/folder", "--bogus"], 2, ["--bogus"]),
    ("flag-missing-value", ["train", "{in}/folder", "--epochs"], 2, ["--epochs"]),
    ("flag-not-a-number", ["train", "{in}/folder", "--epochs", "many"], 2, ["--epochs"]),
    ("unknown-model", ["train", "{in}/folder", "--model", "cancernt", "--no-audit"], 2,
     ["cancernt", "cancernet"]),
    ("unknown-layout", ["inspect", "{in}/folder", "--layout", "imagefolders"], 2, ["imagefolders"]),
    ("unknown-task", ["train", "{in}/folder", "--task", "detect"], 2, ["--task", "detect"]),
    ("train-size-0", ["train", "{in}/folder", "--size", "0"], 2, ["--size"]),
    ("train-lr-nan", ["train", "{in}/folder", "--lr", "nan"], 2, ["--lr"]),
    ("train-lr-inf", ["train", "{in}/folder", "--lr", "inf"], 2, ["--lr"]),
    ("train-val-fraction-1.5", ["train", "{in}/folder", "--val-fraction", "1.5"], 2, ["--val-fraction"]),
    ("train-epochs-0", ["train", "{in}/folder", "--epochs", "0"], 2, ["--epochs"]),
    ("train-batch-size-neg", ["train", "{in}/folder", "--batch-size", "-1"], 2, ["--batch-size"]),
    ("train-channels-5", ["train", "{in}/folder", "--channels", "5"], 2, ["--channels"]),
    ("train-bad-scheduler", ["train", "{in}/folder", "--scheduler", "step"], 2, ["--scheduler"]),
    ("train-bad-equalize", ["train", "{in}/folder", "--equalize", "gamma"], 2, ["--equalize"]),
    ("train-bad-balance", ["train", "{in}/folder", "--balance", "oversample"], 2, ["--balance"]),
    ("train-two-bad-values", ["train", "{in}/folder", "--size", "0", "--epochs", "0"], 2,
     ["--size", "--epochs"]),
    ("cv-size-0", ["cv", "{in}/folder", "--size", "0"], 2, ["--size"]),
    ("cv-lr-nan", ["cv", "{in}/folder", "--lr", "nan"], 2, ["--lr"]),
    ("cv-val-fraction-1.5", ["cv", "{in}/folder", "--val-fraction", "1.5"], 2, ["--val-fraction"]),
    ("cv-epochs-0", ["cv", "{in}/folder", "--epochs", "0"], 2, ["--epochs"]),
    ("cv-folds-1", ["cv", "{in}/folder", "--folds", "1"], 2, ["--folds"]),
    ("segment-train-lr-nan", ["train", "{in}/seg", "--task", "segment", "--lr", "nan"], 2, ["--lr"]),
    ("segment-train-val-fraction", ["train", "{in}/seg", "--task", "segment", "--val-fraction", "1.5"], 2,
     ["--val-fraction"]),
    ("segment-train-epochs-0", ["train", "{in}/seg", "--task", "segment", "--epochs", "0"], 2, ["--epochs"]),
    ("segment-cv-size-0", ["segment-cv", "{in}/seg", "--size", "0"], 2, ["--size"]),
    ("segment-cv-lr-nan", ["segment-cv", "{in}/seg", "--lr", "nan"], 2, ["--lr"]),
    ("segment-cv-epochs-0", ["segment-cv", "{in}/seg", "--epochs", "0"], 2, ["--epochs"]),
    ("segment-cv-folds-1", ["segment-cv", "{in}/seg", "--folds", "1"], 2, ["--folds"]),
    ("config-bad-yaml", ["train", "{in}/folder", "--config", "{in}/configs/bad.yaml"], 2, ["bad.yaml"]),
    ("config-unknown-key", ["train", "{in}/folder", "--config", "{in}/configs/unknown_key.yaml"], 2,
     ["train.lrr"]),
    ("config-not-a-mapping", ["train", "{in}/folder", "--config", "{in}/configs/a_list.yaml"], 2,
     ["a_list.yaml"]),
    ("config-bad-value", ["cv", "{in}/folder", "--config", "{in}/configs/bad_value.json"], 2,
     ["train.epochs"]),
    ("config-missing", ["train", "{in}/folder", "--config", "{in}/configs/nope.yaml"], 2, ["nope.yaml"]),
    ("existing-run-without-resume", ["train", "{in}/folder", "--out", "{in}/earlier_run"], 2,
     ["earlier_run", "--resume"]),
    ("resume-without-out", ["train", "{in}/folder", "--resume"], 2, ["--resume"]),
    ("audit-bad-threshold", ["audit", "{in}/folder", "--near-threshold", "99"], 2, ["--near-threshold"]),
    ("explain-unknown-method", ["explain", PKG, IMG, "--method", "gradcamm"], 2, ["gradcamm"]),
    ("ct-calibrate-scans-0", ["ct", "calibrate", PKG, "{in}/folder", "--calibration-scans", "0"], 2,
     ["--calibration-scans"]),
    # --- the job failed: exit 1 ---------------------------------------------------------
    ("inspect-missing-path", ["inspect", "{in}/nope"], 1, ["nope", "no such file"]),
    ("audit-missing-path", ["audit", "{in}/nope"], 1, ["nope"]),
    ("train-missing-path", ["train", "{in}/nope"], 1, ["nope"]),
    ("cv-missing-path", ["cv", "{in}/nope"], 1, ["nope"]),
    ("segment-cv-missing-path", ["segment-cv", "{in}/nope"], 1, ["nope"]),
    ("inspect-corrupt-images-only", ["inspect", "{in}/junk"], 1, ["junk", "nothing usable"]),
    ("train-corrupt-images-only", ["train", "{in}/junk", "--ignore-audit"], 1, ["junk"]),
    ("inspect-truncated-dicom-only", ["inspect", "{in}/dicom_truncated"], 1, ["dicom_truncated"]),
    ("inspect-empty-folder", ["inspect", "{in}/empty"], 1, ["empty"]),
    ("train-empty-folder", ["train", "{in}/empty"], 1, ["empty"]),
    ("csv-missing-columns", ["inspect", "{in}/missing_columns/manifest.csv", "--layout", "csv"], 1,
     ["manifest.csv"]),
    ("audit-blocking-finding", ["audit", "{in}/blocking"], 1, ["blocking"]),
    ("train-blocking-finding", ["train", "{in}/blocking", "--model", "test_cnn"], 1, ["blocking"]),
    ("exclude-list-missing", ["train", "{in}/folder", "--exclude", "{in}/nope.txt"], 1, ["nope.txt"]),
    ("pretrained-missing", ["train", "{in}/folder", "--model", "test_cnn", "--pretrained", "{in}/nope.pt",
                            "--no-audit"], 1, ["nope.pt"]),
    ("train-out-is-a-file", ["train", "{in}/folder", "--out", "{in}/a_file.txt"], 1, ["a_file.txt"]),
    ("cv-out-is-a-file", ["cv", "{in}/folder", "--out", "{in}/a_file.txt"], 1, ["a_file.txt"]),
    ("segment-cv-out-is-a-file", ["segment-cv", "{in}/seg", "--out", "{in}/a_file.txt"], 1, ["a_file.txt"]),
    ("audit-out-is-a-file", ["audit", "{in}/folder", "--out", "{in}/a_file.txt"], 1, ["a_file.txt"]),
    ("audit-out-under-a-file", ["audit", "{in}/folder", "--out", "{in}/a_file.txt/audit"], 1,
     ["a_file.txt"]),
    ("explain-out-is-a-file", ["explain", PKG, IMG, "--out", "{in}/a_file.txt"], 1, ["a_file.txt"]),
    ("predict-out-under-a-file", ["predict", PKG, IMG, "--out", "{in}/a_file.txt/preds.csv"], 1,
     ["a_file.txt"]),
    ("evaluate-out-is-a-file", ["evaluate", PKG, "{in}/idc", "--out", "{in}/a_file.txt"], 1, ["a_file.txt"]),
    ("predict-non-image-files", ["predict", PKG, "{in}/notes/readme.txt", "{in}/notes/table.csv"], 1,
     ["could be read"]),
    ("predict-not-a-package", ["predict", "{in}/not_a_package", IMG], 1, ["not_a_package", "package"]),
    ("evaluate-not-a-package", ["evaluate", "{in}/not_a_package", "{in}/idc"], 1, ["not_a_package"]),
    ("explain-not-a-package", ["explain", "{in}/not_a_package", IMG], 1, ["not_a_package"]),
    ("predict-garbage-metadata", ["predict", "{in}/pkg_garbage_metadata", IMG], 1, ["metadata.json"]),
    ("predict-metadata-not-a-mapping", ["predict", "{in}/pkg_list_metadata", IMG], 1, ["metadata.json"]),
    ("predict-metadata-without-model", ["predict", "{in}/pkg_no_model_entry", IMG], 1, ["metadata.json"]),
    ("predict-truncated-weights", ["predict", "{in}/pkg_truncated_weights", IMG], 1, ["weights.pt"]),
    ("predict-garbage-weights", ["predict", "{in}/pkg_garbage_weights", IMG], 1, ["weights.pt"]),
    ("evaluate-truncated-weights", ["evaluate", "{in}/pkg_truncated_weights", "{in}/idc"], 1, ["weights.pt"]),
    ("explain-garbage-metadata", ["explain", "{in}/pkg_garbage_metadata", IMG], 1, ["metadata.json"]),
    ("ct-calibrate-not-a-ct-package", ["ct", "calibrate", PKG, "{in}/folder", "--out", "{in}/../ct_cal"], 1,
     ["not a lung-CT package"]),
]


# run through the installed console script as well: one case per kind of failure (usage
# error from click, from a config/validation error, a missing path, an unwritable output, a
# corrupt package), so the in-process runs below are shown to match what a shell sees
SCRIPT_CASES = ["no-data-argument", "train-lr-nan", "config-unknown-key", "inspect-missing-path",
                "train-out-is-a-file", "predict-truncated-weights", "audit-blocking-finding"]


def _in_process(args: list[str], cwd: Path) -> Result:
    """``medlens ARGS…`` through :func:`medlens.cli.main.run` (what the console script calls),
    in ``cwd``, with stdout/stderr captured: the same code path without a fresh Python start
    (most of a subprocess case's time is importing torch)."""
    import contextlib
    import io

    import torch

    from medlens.cli.main import run

    out, err, here, threads = io.StringIO(), io.StringIO(), Path.cwd(), torch.get_num_threads()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = run(args)
            except BaseException as e:  # noqa: BLE001 - a leak past the boundary is the failure
                import traceback

                err.write("Traceback (escaped the error boundary)\n" + traceback.format_exc())
                rc = getattr(e, "code", 99) if isinstance(e, SystemExit) else 99
    finally:
        os.chdir(here)
        torch.set_num_threads(threads)
    return Result(rc, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def outcomes(medlens, inputs: Path, tmp_path_factory, monkeypatch_module) -> dict[str, tuple[Result, bool]]:
    """Every case run once in-process (id → (result, inputs unchanged)); the SCRIPT_CASES also
    through the installed console script, two at a time, stored under "script:<id>"."""
    monkeypatch_module.delenv("MEDLENS_DEBUG", raising=False)
    monkeypatch_module.setenv("COLUMNS", "200")
    monkeypatch_module.setenv("NO_COLOR", "1")
    before = tree_hash(inputs)
    args = {c[0]: [a.replace("{in}", str(inputs)) for a in c[1]] for c in CASES}
    results = {k: _in_process(a, tmp_path_factory.mktemp(k)) for k, a in args.items()}

    def one(case: str) -> tuple[str, Result]:
        return f"script:{case}", medlens(args[case], cwd=tmp_path_factory.mktemp(f"script-{case}"))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results.update(pool.map(one, SCRIPT_CASES))
    # "nothing modified" is checked over the whole corpus run, and reported per case below
    unchanged = tree_hash(inputs) == before
    return {k: (r, unchanged) for k, r in results.items()}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.parametrize(("case", "code", "words"), [pytest.param(i, c, w, id=i) for i, _, c, w in CASES])
def test_fault_case(outcomes, case: str, code: int, words: list[str]):
    res, unchanged = outcomes[case]
    both = res.stdout + res.stderr
    assert "Traceback" not in both and "internal error" not in both, both
    assert res.rc == code, f"exit {res.rc}, expected {code}\n{both}"
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, f"expected one 'error:' line on stderr\n{res.stderr}"
    for w in words:
        assert w.lower() in errors[0].lower(), f"{w!r} not named in: {errors[0]}"
    assert unchanged, "an input file was modified during the corpus run"


@pytest.mark.parametrize("case", SCRIPT_CASES)
def test_console_script_matches_the_in_process_run(outcomes, case: str):
    script, unchanged = outcomes[f"script:{case}"]
    direct, _ = outcomes[case]
    both = script.stdout + script.stderr
    assert "Traceback" not in both and "internal error" not in both, both
    assert script.rc == direct.rc, f"script exit {script.rc}, in-process {direct.rc}\n{both}"
    script_err = [ln for ln in script.stderr.splitlines() if ln.startswith("error: ")]
    direct_err = [ln for ln in direct.stderr.splitlines() if ln.startswith("error: ")]
    assert script_err == direct_err
    assert unchanged


def test_corpus_size():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    assert set(SCRIPT_CASES) <= {c[0] for c in CASES}
