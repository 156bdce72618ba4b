"""No run output in git: none is committed, and .gitignore keeps it out wherever a config makes it land."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (or no git binary): nothing is committed to check")
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60, check=False)


def test_no_committed_file_is_run_output() -> None:
    tracked = _git("ls-files", "--cached", "--ignored", "--exclude-standard")
    assert tracked.returncode == 0, tracked.stderr
    assert tracked.stdout.split() == [], "committed files that .gitignore calls run output; git rm them"


RUN_OUTPUT = [
    "out/demo-results.jsonl",
    "configs/out/london-tracked.jsonl",
    "configs/out/lobby.3.jsonl",
    "elsewhere/results.jsonl",
    "var/broker.spool.db",
    "configs/var/broker.spool.db-wal",
    "site/state/broker.spool.db.lock",
    "configs/var/snapshots/london_20261122T063701.998Z_0_new.jpg",
    "shots/gate_20260101T000000.000Z_17_end.jpg",
]
SOURCES = [
    "daemon/sinks/snapshots.py",
    "daemon/sinks/spool.py",
    "configs/vehicle-plates-tracked.yaml",
    "tests/fixtures/recorded/messages.jsonl",
    "docs/street_photo.jpg",
]


@pytest.mark.parametrize(("path", "ignored"), [(p, True) for p in RUN_OUTPUT] + [(p, False) for p in SOURCES])
def test_gitignore_covers_run_output_and_only_that(path: str, ignored: bool) -> None:
    check = _git("check-ignore", "--no-index", "--quiet", path)
    assert check.returncode in (0, 1), check.stderr
    assert (check.returncode == 0) is ignored, f"{path} should {'' if ignored else 'not '}be ignored"
