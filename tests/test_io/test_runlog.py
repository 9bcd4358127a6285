"""``run.log``: what a run folder's log records, when it is written, and that it is detached."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medlens.errors import RunLockedError
from medlens.io.runlog import RUN_LOG, RunLogHandler, logged_run, run_log

log = logging.getLogger("medlens.tests.runlog")


def _handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger("medlens").handlers if isinstance(h, RunLogHandler)]


@logged_run("out")
def _job(data: str, out: Path, *, epochs: int = 3, fail: bool = False) -> str:
    log.info("before the folder exists")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text("{}")
    log.info("working on %s", data)
    if fail:
        raise ValueError("the data ran out")
    return "done"


def test_run_log_records_command_versions_settings_lines_and_end(tmp_path):
    out = tmp_path / "run"
    assert _job("some/data", out, epochs=7) == "done"
    text = (out / RUN_LOG).read_text(encoding="utf-8")
    assert "_job started:" in text  # the command line follows
    assert "versions: medlens " in text and "torch " in text and "monai " in text
    assert '"epochs": 7' in text and '"data": "some/data"' in text  # the settings
    # a line logged before the folder existed waited in memory, in order
    assert text.index("before the folder exists") < text.index("working on some/data")
    assert "finished in" in text
    assert _handlers() == []  # detached
    log.info("after the run")
    assert "after the run" not in (out / RUN_LOG).read_text(encoding="utf-8")


def test_failed_run_logs_the_error_and_is_detached(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError):
        _job("d", out, fail=True)
    text = (out / RUN_LOG).read_text(encoding="utf-8")
    assert "failed after" in text and "ValueError: the data ran out" in text
    assert _handlers() == []


def test_nothing_written_when_the_run_wrote_nothing(tmp_path):
    """A run that fails before its first output (a wrong data path) leaves nothing behind."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".medlens.lock").write_text("")  # a lock alone does not make it a run's folder
    with pytest.raises(KeyError), run_log(out, what="job"):
        log.info("reading")
        raise KeyError("no data")
    assert not (out / RUN_LOG).exists()
    with pytest.raises(KeyError), run_log(tmp_path / "never_made", what="job"):
        raise KeyError("no data")
    assert not (tmp_path / "never_made").exists()


def test_refused_job_never_writes_into_the_holders_log(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # another job's run
    with pytest.raises(RunLockedError), run_log(out, what="second job"):
        raise RunLockedError(f"{out} is held by another job")
    assert not (out / RUN_LOG).exists()


def test_resumed_run_appends(tmp_path):
    out = tmp_path / "run"
    _job("d", out)
    _job("d", out)
    assert (out / RUN_LOG).read_text(encoding="utf-8").count("finished in") == 2


def test_folder_named_by_the_result(tmp_path):
    out = tmp_path / "chosen"

    @logged_run(lambda result: result)
    def pick() -> Path:
        out.mkdir()
        (out / "metrics.json").write_text("{}")
        log.info("picked %s", out.name)
        return out

    pick()
    assert "picked chosen" in (out / RUN_LOG).read_text(encoding="utf-8")


def test_info_lines_recorded_even_when_the_console_is_quiet(tmp_path):
    """`medlens -q` raises the console's level, not the log's."""
    from medlens.cli.app import setup_logging

    logger = logging.getLogger("medlens")
    before = logger.level
    try:
        setup_logging(logging.WARNING)
        _job("quiet-data", tmp_path / "run")
    finally:
        logger.setLevel(before)
        for h in list(logging.getLogger().handlers):
            if getattr(h, "_medlens", False):
                logging.getLogger().removeHandler(h)
    assert "working on quiet-data" in (tmp_path / "run" / RUN_LOG).read_text(encoding="utf-8")


def test_unwritable_log_does_not_fail_the_run(tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    (out / RUN_LOG).mkdir()  # run.log cannot be opened as a file
    with caplog.at_level(logging.WARNING, logger="medlens"), run_log(out, what="job"):
        log.info("still running")
    assert "run.log not written" in caplog.text
