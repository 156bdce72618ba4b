"""`edgewatch models list|check`: the real example config's models, and a broken file named while the rest run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from daemon.__main__ import main
from tests.conftest import ROOT

CONFIG = ROOT / "configs" / "vehicle-plate-ocr.yaml"
MODELS = (ROOT / ".." / "shared" / "models").resolve()


def _broken_config(tmp_path: Path) -> Path:
    """The example config with its plate detector replaced by a file that is not an ONNX model."""
    (tmp_path / "plate_det_y5fu_320.onnx").write_bytes(b"not an onnx model")
    for name in ("yolox_nano.onnx",):
        (tmp_path / name).symlink_to(MODELS / name)
    text = CONFIG.read_text().replace("${EDGEWATCH_MODELS:-../../shared/models}", str(tmp_path))
    text = text.replace("../../shared/media", str(ROOT / ".." / "shared" / "media"))
    config = tmp_path / "broken.yaml"
    config.write_text(text)
    return config


def test_list_shows_file_hash_size_input_and_provider(capsys: pytest.CaptureFixture[str]) -> None:
    if not (MODELS / "yolox_nano.onnx").is_file():
        pytest.skip(f"the example models are not in {MODELS}")
    assert main(["models", "list", str(CONFIG), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"vehicles", "plates", "reader"}
    vehicles = rows["vehicles"]
    data = (MODELS / "yolox_nano.onnx").read_bytes()
    assert vehicles["sha256"] == hashlib.sha256(data).hexdigest()[:12] and vehicles["size_bytes"] == len(data)
    assert vehicles["input_shape"] == "images [1, 3, 416, 416]" and vehicles["provider"] == "cpu"
    assert rows["plates"]["input_shape"] == "input [1, 3, 320, 320]"
    assert rows["reader"]["file"].endswith("rec_infer.onnx") and not any(r["error"] for r in rows.values())


def test_check_loads_and_times_each_model(capsys: pytest.CaptureFixture[str]) -> None:
    if not (MODELS / "yolox_nano.onnx").is_file():
        pytest.skip(f"the example models are not in {MODELS}")
    assert main(["models", "check", str(CONFIG)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "type", "file", "provider", "load+warm-up"]
    assert [line.split()[0] for line in out[1:]] == ["vehicles", "plates", "reader"]
    assert all(line.split()[-1] == "ms" and line.split()[-3] == "cpu" for line in out[1:])


@pytest.mark.parametrize("command", ["list", "check"])
def test_a_broken_model_is_named_and_the_others_still_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    if not (MODELS / "yolox_nano.onnx").is_file():
        pytest.skip(f"the example models are not in {MODELS}")
    assert main(["models", command, str(_broken_config(tmp_path)), "--json"]) == 1
    captured = capsys.readouterr()
    rows = {r["name"]: r for r in json.loads(captured.out)}
    assert rows["plates"]["error"] and "plate_det_y5fu_320.onnx" in rows["plates"]["error"]
    assert not rows["vehicles"]["error"] and not rows["reader"]["error"]
    assert rows["vehicles"]["provider"] == "cpu"
    errors = [line for line in captured.err.splitlines() if line.startswith("model ")]
    assert len(errors) == 1 and errors[0].startswith("model plates: ")
