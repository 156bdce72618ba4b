"""validate checks what run checks before the first frame (issue 16 item 9): each case used to be "valid" and then
fail at run; now validate and run both refuse it with the YAML path and line."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.__main__ import main
from tests.conftest import MEDIA, MODELS

BASE = """\
models:
  det: {{type: yolox, path: {det}, runtime: {{intra_op_threads: 1}}}}
pipeline:
  name: p
  detector: det
  stages: []
sources:
  - {{id: cam1, type: file, path: {media}/london_street_TestV4.mp4}}
sinks:
  - {{id: out, type: jsonl, path: {out}/results.jsonl}}
# the line numbers below are asserted
http: {{enabled: {http}, host: {http_host}, port: {http_port}}}
api: {{enabled: {api}, host: 127.0.0.1, port: {api_port}}}
"""


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def config(tmp_path: Path, **changes: object) -> Path:
    values: dict[str, object] = {
        "det": f"{MODELS}/yolox_nano.onnx", "media": MEDIA, "out": tmp_path,
        "http": "false", "http_host": "127.0.0.1", "http_port": 0, "api": "false", "api_port": 0, **changes}
    path = tmp_path / "pipeline.yaml"
    path.write_text(BASE.format(**values))
    return path


def with_stage(path: Path, model: str, stage: str = "classify", labels: str | None = None) -> None:
    """Add a second stage running `model` (a file in MODELS) as the given type; its model entry is line 2."""
    entry = f"  second: {{type: {stage}, path: {MODELS}/{model}" + (f", labels_file: {labels}" if labels else "")
    text = path.read_text().replace("  det: {", entry + "}\n  det: {")
    path.write_text(text.replace("stages: []", "stages: [{name: second, model: second}]"))


def garbage(tmp_path: Path) -> str:
    (tmp_path / "garbage.onnx").write_bytes(b"this is not an ONNX model " * 100)
    return str(tmp_path / "garbage.onnx")


CASES = {  # case -> (changes, where, words)
    "garbage onnx": (lambda tmp: {"det": garbage(tmp)}, "models.det (line 2)", "not a valid ONNX model"),
    "classifier as detector": (lambda tmp: {"det": f"{MODELS}/squeezenet1.1_fp16.onnx"}, "models.det (line 2)",
                               "the yolox stage needs"),
    "missing labels_file": (lambda tmp: {}, "models.second (line 2)", "no-labels.txt"),
}


@pytest.mark.parametrize("case", ["garbage onnx", "classifier as detector", "missing labels_file"])
def test_validate_and_run_refuse_a_model_that_does_not_load(tmp_path: Path, case: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    make, where, words = CASES[case]
    path = config(tmp_path, **make(tmp_path))
    if case == "missing labels_file":
        with_stage(path, "squeezenet1.1_fp16.onnx", labels=f"{tmp_path}/no-labels.txt")
    for command in ("validate", "run"):
        assert main([command, str(path)]) == 1, command
        err = capsys.readouterr().err
        assert where in err and words in err and str(path) in err and "Traceback" not in err, (command, err)
    assert main(["validate", "--no-load", str(path)]) == 0  # the file is there: only loading finds it broken


@pytest.mark.parametrize(("stage", "words"), [("classify", "classifier output 'output' has shape"),
                                             ("ocr", "recogniser input 'images'")])
def test_a_detector_as_a_classify_or_ocr_stage(tmp_path: Path, stage: str, words: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path)
    with_stage(path, "yolox_nano.onnx", stage)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "models.second (line 2)" in err and words in err, err


def test_a_negative_input_size_is_refused_even_without_loading(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path)
    path.write_text(path.read_text().replace("runtime: {", "input_size: [-640, 0], runtime: {"))
    assert main(["validate", "--no-load", str(path)]) == 1
    assert re.search(r"models\.det\.input_size \(line 2\): expected a positive \[width, height\], got \[-640, 0\]",
                     capsys.readouterr().err)


@pytest.mark.parametrize("which", ["http", "api"])
def test_a_busy_port_is_refused_by_validate_and_run(tmp_path: Path, busy_port: int, which: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, **{which: "true", f"{which}_port": busy_port})
    for command in ("validate", "run"):
        assert main([command, str(path)]) == 1, command
        err = capsys.readouterr().err
        assert f"{which}.port (line {12 if which == 'http' else 13})" in err and "Address already in use" in err, err
    assert main(["validate", "--no-ports", str(path)]) == 0


def test_http_and_api_on_one_port_of_overlapping_addresses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port free now, for both to ask for
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = config(tmp_path, http="true", http_host="0.0.0.0", http_port=port, api="true", api_port=port)
    assert main(["validate", str(path)]) == 1
    assert "http.port (line 12)" in capsys.readouterr().err
    shared = config(tmp_path, http="true", http_port=port, api="true", api_port=port)  # one address: shared
    assert main(["validate", str(shared)]) == 0


def test_a_model_with_an_unresolved_setting_is_not_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, det="'${EW_TEST_UNSET_MODELS}/yolox_nano.onnx'")
    assert main(["validate", "--allow-missing-secrets", str(path)]) == 0, capsys.readouterr().err
    assert "EW_TEST_UNSET_MODELS" in capsys.readouterr().err  # a note, and no load error
