"""A hostile file given to SIGHUP (issue 16 item 1): prepare() refuses it with one ERROR line, never raises."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from daemon import reload
from daemon.reload import fingerprints, prepare
from tests.daemon.test_reload import config_text, write_config
from tests.daemon.test_yamlsrc import BILLION_LAUGHS

HOSTILE = {
    "latin1": (b"# Kamera Stra\xdfe\n", "not valid UTF-8 at byte offset 13"),
    "recursive alias": (b"pipeline: &s {name: x, detector: det, stages: [{model: det, stages: *s}]}\n",
                        "recursive alias"),
    "billion laughs": (BILLION_LAUGHS.encode(), "values, aliases expanded"),
    "deep": (b"x: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested deeper than 48 levels"),
    "fifo secret": (b"", "must be a regular file, not a FIFO"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_reload_is_one_error_line(tmp_path: Path, models_dir: Path, media_dir: Path, case: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    text = config_text(tmp_path, media_dir)
    running = write_config(tmp_path, models_dir, "old.yaml", text)
    prefix, words = HOSTILE[case]
    path = tmp_path / "new.yaml"
    if case == "fifo secret":
        os.mkfifo(tmp_path / "pw")
        text = text.replace("type: jsonl,", "type: jsonl, rotate_bytes: '${file:pw}',")
    path.write_bytes(prefix + text.encode() if case in ("latin1", "fifo secret") else prefix)
    before = reload.rejected_total
    with caplog.at_level(logging.INFO):
        assert prepare(path, running, fingerprints(running.models), {}) is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage() and words in errors[0].getMessage()
    assert str(path) in errors[0].getMessage() and reload.rejected_total == before + 1


def test_a_folder_instead_of_the_config_file_is_refused(tmp_path: Path, models_dir: Path, media_dir: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    running = write_config(tmp_path, models_dir, "old.yaml", config_text(tmp_path, media_dir))
    (tmp_path / "dir.yaml").mkdir()
    assert prepare(tmp_path / "dir.yaml", running, fingerprints(running.models), {}) is None
    assert "reload rejected, keeping the running config and pipeline" in caplog.text
    assert "the config file must be a regular file, not a directory" in caplog.text
