"""The import contracts (.importlinter) hold on the tree, and each one fails when a bad import is added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="lint-imports is not installed in this venv")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the packages under `root` (PYTHONPATH first, so the copy wins over the installed tree)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def copy_tree(tmp_path: Path) -> Path:
    for name in ("daemon", "pipelines"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def add_import(module: Path, line: str) -> None:
    """Append an import inside a function: local imports count as much as top-level ones."""
    module.write_text(module.read_text() + f"\n\ndef _injected() -> None:\n    {line}  # noqa\n")


def test_contracts_hold_on_the_tree() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# (module to change, import added, contract named in the failure)
BREAKS = [
    ("pipelines/crops.py", "import daemon.frames", "pipelines is pure compute"),
    ("daemon/frames.py", "from daemon import app", "no import cycles"),
    ("pipelines/preprocess.py", "from pipelines import stages", "no import cycles"),
    ("daemon/capture.py", "from daemon import worker", "daemon layers"),
    ("daemon/sinks/base.py", "from daemon.web import app", "daemon layers"),
    ("pipelines/runtime/base.py", "from pipelines import crops", "pipelines layers"),
    ("daemon/worker.py", "from daemon.bench import main", "daemon layers"),
]


@pytest.mark.parametrize(("module", "line", "contract"), BREAKS, ids=[b[0] for b in BREAKS])
def test_a_bad_import_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    root = copy_tree(tmp_path)
    add_import(root / module, line)
    result = lint(root)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
