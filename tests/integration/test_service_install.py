"""systemd/README.md's install commands, run as written (all but systemctl) under a temporary root."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = ROOT / "systemd" / "README.md"
# The absolute places the commands write to, moved under the temporary root.
ROOTED = ("/opt/edgewatch", "/etc/edgewatch", "/etc/systemd")


def documented_commands() -> str:
    text = README.read_text()
    block = re.search(r"<!-- install-commands:begin -->\n```sh\n(.*?)```\n<!-- install-commands:end -->", text, re.S)
    assert block, "systemd/README.md lost its install-commands block"
    return block.group(1)


def rooted(commands: str, root: Path, models: Path) -> str:
    """The block as a script for `root`: sudo dropped (we own the root), systemctl left out, paths moved,
    and MODELS_FROM set to the models this test has (the one line a user fills in with their own folder)."""
    lines = []
    for line in commands.replace("\\\n", "").splitlines():
        if "systemctl" in line:
            continue
        if line.startswith("MODELS_FROM="):
            line = f"MODELS_FROM={models}"
        line = re.sub(r"(^|\s|\|\s)sudo ", r"\1", line)
        for place in ROOTED:
            line = line.replace(place, f"{root}{place}")
        lines.append(line)
    return "set -euo pipefail\n" + "\n".join(lines) + "\n"


def test_the_rooting_leaves_only_systemctl_out(tmp_path: Path) -> None:
    script = rooted(documented_commands(), tmp_path, Path("/m"))
    assert "systemctl" not in script and "sudo" not in script
    assert f"{tmp_path}/opt/edgewatch/venv/bin/pip install -c .ci/constraints.txt ." in script
    assert f"CREDENTIALS_DIRECTORY={tmp_path}/etc/edgewatch/credentials" in script
    assert "edgewatch doctor" in script and "edgewatch validate" in script


@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("python3") is None, reason="python3 is not on PATH")
def test_documented_install_works_verbatim(tmp_path: Path, models_dir: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)  # there on every systemd box
    script = rooted(documented_commands(), root, models_dir)
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=850, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{root}/etc/edgewatch/pipeline.yaml: valid (2 sources, 1 models, 2 sinks)" in proc.stdout
    assert "0 failed" in proc.stdout and "[  ok] model objects: yolox_nano.onnx (yolox) loads on cpu" in proc.stdout
    assert (root / "etc/systemd/system/edgewatch.service").is_file()
    assert (root / "etc/edgewatch/credentials/mqtt_password").stat().st_mode & 0o777 == 0o600
