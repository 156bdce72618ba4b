"""The inference HTTP API over real HTTP: Roboflow shapes, overrides, batching, errors, API key, logs, stop."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv

from pipelines.models import load_model
from pipelines.oneshot import infer
from tests.fixtures.api_server import Running, call, image_ref, serve

KEY = "k3y-for-tests-0123"


@pytest.fixture(scope="module")
def api(models_dir: Path) -> Iterator[Running]:
    running = serve(models_dir, model_dirs=[str(models_dir)])
    yield running
    running.stop()


def boxes(predictions: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[p["x"] - p["width"] / 2, p["y"] - p["height"] / 2, p["x"] + p["width"] / 2,
                      p["y"] + p["height"] / 2] for p in predictions]).reshape(-1, 4)


def assert_same(predictions: list[dict[str, Any]], expected: sv.Detections) -> None:
    """Roboflow predictions (rounded to 0.01 px) equal the project's own detections, in order."""
    assert len(predictions) == len(expected)
    np.testing.assert_allclose(boxes(predictions), expected.xyxy, atol=0.011)
    np.testing.assert_allclose([p["confidence"] for p in predictions], expected.confidence, atol=1e-5)
    assert [p["class"] for p in predictions] == list(expected.data["class_name"])
    assert [p["class_id"] for p in predictions] == list(expected.class_id)


def test_info_and_model_registry(api: Running) -> None:
    status, info = call(api.port, "GET", "/info")
    assert status == 200 and info["name"] == "edgewatch" and info["version"] and info["uuid"]
    assert api.post("/model/add", {"model_id": "det/1"})[0] == 200
    status, listed = call(api.port, "GET", "/model/registry")
    assert status == 200
    assert {"model_id": "det/1", "task_type": "object-detection", "batch_size": 4, "input_height": 416,
            "input_width": 416} in listed["models"]
    assert api.post("/model/add", {"model_id": "yolox_nano.onnx", "model_type": "yolox"})[0] == 200
    status, after = api.post("/model/remove", {"model_id": "yolox_nano.onnx"})
    assert status == 200 and "yolox_nano.onnx" not in [m["model_id"] for m in after["models"]]
    status, response = api.post("/model/add", {"model_id": "vehicles/7"})
    assert status == 404 and "'vehicles/7' is neither configured" in response["message"]
    assert "det/1, reader/1" in response["message"]


@pytest.mark.parametrize("name", ["three_buses.jpg", "crosswalk_people.jpg"])
def test_detections_match_the_projects_own_infer(api: Running, media_dir: Path, models_dir: Path, name: str) -> None:
    status, response = api.post("/infer/object_detection", {"model_id": "det/1", "image": image_ref(media_dir / name)})
    assert status == 200
    assert response["image"] == {"width": cv2.imread(str(media_dir / name)).shape[1],
                                 "height": cv2.imread(str(media_dir / name)).shape[0]}
    assert response["time"] > 0 and response["visualization"] is None
    first = response["predictions"][0]
    assert set(first) >= {"x", "y", "width", "height", "confidence", "class", "class_id", "detection_id"}
    expected = infer(load_model(api.models["det"]), media_dir / name)[0]
    assert_same(response["predictions"], expected)


@pytest.mark.parametrize(
    ("params", "overrides"),
    [
        ({"confidence": 0.8}, {"confidence_threshold": 0.8}),
        ({"confidence": "default"}, {}),
        ({"class_filter": ["bus"]}, {"class_filter": ["bus"]}),
        ({"max_detections": 1, "iou_threshold": 0.2}, {"max_detections": 1, "iou_threshold": 0.2}),
        ({"class_agnostic_nms": True, "max_candidates": 5}, {"class_agnostic_nms": True, "max_candidates": 5}),
    ],
)
def test_inference_configuration_parameters(
    api: Running, media_dir: Path, params: dict[str, Any], overrides: dict[str, Any]
) -> None:
    path = media_dir / "three_buses.jpg"
    status, response = api.post("/infer/object_detection", {"model_id": "det/1", "image": image_ref(path), **params})
    assert status == 200
    assert_same(response["predictions"], infer(load_model(api.models["det"]), path, **overrides)[0])


def test_a_list_of_images_gives_a_list(api: Running, media_dir: Path) -> None:
    names = ["three_buses.jpg", "rf_car.jpg", "crosswalk_people.jpg"]
    status, response = api.post("/infer/object_detection",
                                {"model_id": "det/1", "image": [image_ref(media_dir / n) for n in names]})
    assert status == 200 and isinstance(response, list) and len(response) == 3
    model = load_model(api.models["det"])
    for name, single in zip(names, response, strict=True):
        assert_same(single["predictions"], infer(model, media_dir / name)[0])


def test_visualization_is_the_picture_with_its_boxes(api: Running, media_dir: Path) -> None:
    path = media_dir / "three_buses.jpg"
    body = {"model_id": "det/1", "image": image_ref(path), "visualize_predictions": True}
    status, response = api.post("/infer/object_detection", body)
    assert status == 200 and response["predictions"]
    drawn = cv2.imdecode(np.frombuffer(base64.b64decode(response["visualization"]), np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imread(str(path))
    assert drawn.shape == original.shape
    assert np.abs(drawn.astype(int) - original.astype(int)).mean() > 1  # boxes drawn, not just re-encoded
    status, response = api.post("/infer/object_detection", {**body, "visualization_stroke_width": 0})
    assert status == 422 and "visualization_stroke_width" in response["message"]


def test_classification_shape(api: Running, media_dir: Path, models_dir: Path) -> None:
    car = media_dir / "rf_car.jpg"
    status, response = api.post("/infer/classification", {"model_id": "cls/1", "image": image_ref(car)})
    assert status == 200
    expected = load_model(api.models["cls"]).classify([cv2.imread(str(car))])[0]
    assert response["top"] == expected["class"]
    assert response["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)
    assert [p["class_id"] for p in response["predictions"]] == [t["class_id"] for t in expected["top"]]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/infer/object_detection", {"model_id": "det/1"}, 400, "no image"),
        ("/infer/object_detection", {"model_id": "det/1", "image": {"type": "base64", "value": "aGVsbG8="}}, 400,
         "data starting with b'hello' is not an accepted image format"),
        ("/infer/object_detection", {"image": "x"}, 400, "model_id is missing"),
        ("/infer/object_detection", {"model_id": "nope/1", "image": "x"}, 404, "unknown model_id 'nope/1'"),
        ("/infer/object_detection", {"model_id": "cls/1", "image": "x"}, 400, "cls/1 has task classification"),
        ("/infer/classification", {"model_id": "det/1", "image": "x"}, 400, "needs task classification"),
        ("/infer/object_detection", {"model_id": "det/1", "image": "x", "confidence": 7}, 422, "confidence must be"),
        ("/infer/object_detection", {"model_id": "det/1", "image": "x", "class_filter": ["unicorn"]}, 422,
         "unknown classes"),
        ("/infer/object_detection", {"model_id": "det/1", "image": "x", "max_detections": "many"}, 422,
         "max_detections"),
        ("/infer/object_detection", {"model_id": "det/1", "image": ["x"] * 40}, 413, "api.max_batch=32"),
        ("/clip/embed_text", {"text": "a bus"}, 404, "needs a clip model"),
        ("/model/remove", {}, 400, "model_id is missing"),
        ("/no/such/route", {}, 404, "this server serves"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(
    api: Running, media_dir: Path, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    got, response = api.post(path, body)
    assert (got, response["status"]) == (status, status)
    assert message in response["message"]
    assert api.worker.alive
    good = {"model_id": "det/1", "image": image_ref(media_dir / "rf_car.jpg")}
    assert api.post("/infer/object_detection", good)[0] == 200


@pytest.mark.parametrize(("raw", "message"), [(b"{not json", "not valid JSON"), (b"[1, 2]", "must be a JSON object")])
def test_malformed_bodies(api: Running, raw: bytes, message: str) -> None:
    status, response = api.post("/infer/object_detection", raw=raw)
    assert status == 400 and message in response["message"]


def test_huge_image_is_refused(models_dir: Path, media_dir: Path) -> None:
    small = serve(models_dir, max_image_bytes=50_000, max_image_pixels=100_000)
    try:
        big = image_ref(media_dir / "times_square_cars_people.jpg")
        status, response = small.post("/infer/object_detection", {"model_id": "det/1", "image": big})
        assert status == 413 and "max_image_bytes=50000" in response["message"]
        flat = base64.b64encode(cv2.imencode(".png", np.zeros((800, 1000, 3), np.uint8))[1].tobytes()).decode()
        status, response = small.post("/infer/object_detection", {"model_id": "det/1", "image": flat})
        assert status == 413 and "1000x800 = 800000 pixels" in response["message"]
    finally:
        small.stop()


def test_concurrent_requests_are_batched_into_one_worker_job(api: Running, media_dir: Path) -> None:
    names = ["three_buses.jpg", "rf_car.jpg", "crosswalk_people.jpg", "rf_crowd.jpg"]
    api.post("/model/add", {"model_id": "det/1"})
    release, busy = threading.Event(), threading.Event()
    api.worker.submit(lambda: (busy.set(), release.wait(10)))
    assert busy.wait(5)
    results: dict[str, Any] = {}

    def request(name: str) -> None:
        results[name] = api.post("/infer/object_detection", {"model_id": "det/1", "image": image_ref(media_dir / name)})

    threads = [threading.Thread(target=request, args=(n,)) for n in names]
    for t in threads:
        t.start()
    coalescer = api.server.inference.registry.loaded("det/1").extras["detect"]  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while coalescer.pending() < len(names) and time.monotonic() < deadline:
        time.sleep(0.01)
    jobs_before = coalescer.stats.jobs
    release.set()
    for t in threads:
        t.join(30)
    assert coalescer.stats.jobs == jobs_before + 1 and coalescer.stats.largest_job == 4  # batch max_size
    model = load_model(api.models["det"])
    for name in names:
        status, response = results[name]
        assert status == 200
        assert_same(response["predictions"], infer(model, media_dir / name)[0])


@pytest.mark.parametrize(
    ("where", "status"),
    [("none", 401), ("body_wrong", 403), ("body", 200), ("query", 200), ("bearer", 200), ("query_wrong", 403),
     ("body_last", 401)],
)
def test_api_key(models_dir: Path, media_dir: Path, where: str, status: int) -> None:
    keyed = serve(models_dir, api_key=KEY)
    try:
        body: dict[str, Any] = {"model_id": "det/1", "image": image_ref(media_dir / "rf_car.jpg")}
        headers, query = {}, ""
        if where == "body_last":  # a body over 64 KiB whose key comes after the image: refused before reading on
            body["api_key"] = KEY
        elif where.startswith("body"):  # first, as inference_sdk sends it
            body = {"api_key": KEY if where == "body" else "wrong", **body}
        elif where.startswith("query"):
            query = f"?api_key={KEY if where == 'query' else 'wrong'}"
        elif where == "bearer":
            headers["Authorization"] = f"Bearer {KEY}"
        got, response = keyed.post("/infer/object_detection" + query, body, headers=headers)
        assert got == status, response
        assert call(keyed.port, "GET", "/info")[0] == 200  # the client sends no key for /info
        assert call(keyed.port, "GET", "/model/registry")[0] == 401
    finally:
        keyed.stop()


def test_the_api_key_never_reaches_the_logs(
    models_dir: Path, media_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keyed = serve(models_dir, api_key=KEY)
    try:
        body = {"model_id": "det/1", "image": image_ref(media_dir / "rf_car.jpg"), "api_key": KEY}
        assert keyed.post(f"/infer/object_detection?api_key={KEY}", body)[0] == 200
        wrong = {"model_id": "det/1", "image": "x"}
        assert keyed.post("/infer/object_detection?api_key=wrong-key-1234", wrong)[0] == 403
        assert call(keyed.port, "GET", f"/model/registry?api_key={KEY}")[0] == 200
    finally:
        keyed.stop()
    assert "/infer/object_detection" in caplog.text  # requests are logged, by path only
    assert KEY not in caplog.text and "wrong-key-1234" not in caplog.text


def test_stop_answers_requests_the_worker_never_reaches(models_dir: Path, media_dir: Path) -> None:
    running = serve(models_dir)
    running.post("/model/add", {"model_id": "det/1"})
    release = threading.Event()
    running.worker.submit(lambda: release.wait(20))
    result: list[tuple[int, Any]] = []
    thread = threading.Thread(target=lambda: result.append(running.post(
        "/infer/object_detection", {"model_id": "det/1", "image": image_ref(media_dir / "rf_car.jpg")})))
    thread.start()
    time.sleep(0.5)
    assert running.server.stop(2)
    thread.join(5)
    release.set()
    running.worker.stop(timeout=5)
    assert result and result[0][0] == 503 and "stopping" in result[0][1]["message"]


def test_a_stopped_worker_is_a_503_not_a_hang(models_dir: Path, media_dir: Path) -> None:
    running = serve(models_dir)
    try:
        assert running.worker.stop(timeout=5)
        status, response = running.post("/infer/object_detection",
                                        {"model_id": "det/1", "image": image_ref(media_dir / "rf_car.jpg")})
        assert status == 503 and "worker is not running" in response["message"]
    finally:
        assert running.server.stop(5)
