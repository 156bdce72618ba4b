"""VLM/LLM answers -> Detections: a table of answers per model and task; each parses right or errors, never raises."""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
import pytest

from pipelines.vlm import MAX_CHARS, VlmResult, check_task, default_prompt, parse_vlm_output

W, H = 1000, 500
CLASSES = ["cat", "dog"]


def det(x1: float, y1: float, x2: float, y2: float, name: str = "cat", **extra: Any) -> dict[str, Any]:
    return {"x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2, "class_name": name, **extra}


def fence(payload: Any, tag: str = "json") -> str:
    return f"Here you go:\n```{tag}\n{json.dumps(payload)}\n```\nAnything else?"


def ok(xyxy: list[list[float]], ids: list[int], names: list[str], conf: list[float] | None = None) -> dict[str, Any]:
    return {"xyxy": xyxy, "class_id": ids, "class_name": names, "confidence": conf or [1.0] * len(ids)}


MANY = [det(0.00019 * i, 0.1, 0.00019 * i + 0.01, 0.2, "dog", confidence=0.5) for i in range(5000)]
OD = "object-detection"

# fmt: off
CASES: list[tuple[str, str, str, list[str] | None, Any, dict[str, Any] | None]] = [
    # id, model type, task, classes, answer, expected (None: error_status)
    ("openai-normalised", "openai", OD, CLASSES,
     json.dumps({"detections": [det(0.1, 0.2, 0.5, 0.6, confidence=0.9)]}),
     ok([[100, 100, 500, 300]], [0], ["cat"], [0.9])),
    ("openai-bare-list", "openai", OD, CLASSES, json.dumps([det(0, 0, 1, 1, "dog")]),
     ok([[0, 0, 1000, 500]], [1], ["dog"])),
    ("openai-box2d-pixels-of-upload", "openai", OD, CLASSES,
     json.dumps([{"box_2d": [10, 20, 110, 220], "label": "cat", "confidence": 0.8}]),
     ok([[20, 40, 220, 440]], [0], ["cat"], [0.8])),
    ("gemini-native-box2d", "google-gemini", OD, CLASSES,
     fence([{"box_2d": [200, 100, 600, 500], "label": "dog"}]), ok([[100, 100, 500, 300]], [1], ["dog"])),
    ("gemini-roboflow-format", "google-gemini", OD, CLASSES,
     fence({"detections": [det(0.5, 0.5, 0.6, 0.7, confidence=0.4)]}), ok([[500, 250, 600, 350]], [0], ["cat"], [0.4])),
    ("claude-first-fence-only", "anthropic-claude", OD, CLASSES,
     fence({"detections": [det(0.1, 0.1, 0.2, 0.2, "dog")]}) + "\n```json\n{\"detections\": []}\n```",
     ok([[100, 50, 200, 100]], [1], ["dog"])),
    ("claude-upper-case-fence", "anthropic-claude", OD, CLASSES, fence({"detections": [det(0, 0, 0.5, 0.5)]}, "JSON"),
     ok([[0, 0, 500, 250]], [0], ["cat"])),
    ("unknown-class-gets-minus-one", "openai", OD, CLASSES, json.dumps([det(0, 0, 0.1, 0.1, "zebra")]),
     ok([[0, 0, 100, 50]], [-1], ["zebra"])),
    ("label-keys-and-missing-label", "anthropic-claude", OD, CLASSES,
     json.dumps([{"x_min": 0, "y_min": 0, "x_max": 0.1, "y_max": 0.1, "label": "dog"},
                 {"x_min": 0, "y_min": 0, "x_max": 0.1, "y_max": 0.1, "class": "cat"},
                 {"x_min": 0, "y_min": 0, "x_max": 0.1, "y_max": 0.1}]),
     ok([[0, 0, 100, 50]] * 3, [1, 0, -1], ["dog", "cat", "unknown"])),
    ("confidence-clamped", "openai", OD, CLASSES,
     json.dumps([det(0, 0, 0.1, 0.1, confidence=1.7), det(0, 0, 0.1, 0.1, confidence=-3), det(0, 0, 0.1, 0.1)]),
     ok([[0, 0, 100, 50]] * 3, [0, 0, 0], ["cat"] * 3, [1.0, 0.0, 1.0])),
    ("out-of-range-clipped-and-dropped", "google-gemini", OD, CLASSES,
     json.dumps({"detections": [det(-0.2, 0.5, 1.4, 1.2), det(1.5, 0.1, 2.0, 0.2), det(0.6, 0.6, 0.2, 0.2)]}),
     ok([[0, 250, 1000, 500], [200, 100, 600, 300]], [0, 0], ["cat", "cat"])),
    ("gemini-box2d-beyond-1000", "google-gemini", OD, CLASSES,
     json.dumps([{"box_2d": [900, 900, 1200, 1300], "label": "cat"}]), ok([[900, 450, 1000, 500]], [0], ["cat"])),
    ("empty-detections", "openai", OD, CLASSES, '{"detections": []}', ok([], [], [])),
    ("empty-list-in-fence", "google-gemini", OD, CLASSES, "```json\n[]\n```", ok([], [], [])),
    ("many-detections", "openai", OD, CLASSES, json.dumps({"detections": MANY}),
     {"count": 5000, "class_id": 1, "confidence": 0.5}),
    ("malformed-json", "openai", OD, CLASSES, '{"detections": [{"x_min": 0.1,}]', None),
    ("truncated-answer", "google-gemini", OD, CLASSES, '```json\n[{"box_2d": [1, 2, 3', None),
    ("missing-coordinate", "anthropic-claude", OD, CLASSES,
     json.dumps([{"x_min": 0.1, "y_min": 0.1, "x_max": 0.2, "class_name": "cat"}]), None),
    ("string-coordinate", "openai", OD, CLASSES, json.dumps([det("0.1", 0, 0.2, 0.2)]), None),
    ("bool-coordinate", "openai", OD, CLASSES, json.dumps([det(True, 0, 0.2, 0.2)]), None),
    ("nan-coordinate", "openai", OD, CLASSES, '[{"x_min": NaN, "y_min": 0, "x_max": 1, "y_max": 1}]', None),
    ("infinite-coordinate", "openai", OD, CLASSES, '[{"x_min": 0, "y_min": 0, "x_max": Infinity, "y_max": 1}]',
     None),
    ("huge-number", "openai", OD, CLASSES, '[{"x_min": 0, "y_min": 0, "x_max": 1e999, "y_max": 1}]', None),
    ("text-confidence", "openai", OD, CLASSES, json.dumps([det(0, 0, 1, 1, confidence="high")]), None),
    ("detections-not-a-list", "anthropic-claude", OD, CLASSES, '{"detections": "none found"}', None),
    ("object-without-detections", "openai", OD, CLASSES, '{"boxes": []}', None),
    ("entry-not-an-object", "openai", OD, CLASSES, "[[0.1, 0.2, 0.3, 0.4]]", None),
    ("box2d-of-three", "google-gemini", OD, CLASSES, '[{"box_2d": [1, 2, 3], "label": "cat"}]', None),
    ("gemini-mixed-formats", "google-gemini", OD, CLASSES,
     json.dumps([{"box_2d": [1, 2, 3, 4], "label": "cat"}, det(0, 0, 1, 1)]), None),
    ("prose-only", "anthropic-claude", OD, CLASSES, "I could not find any cats in this picture.", None),
    ("empty-string", "openai", OD, CLASSES, "", None),
    ("deeply-nested", "openai", OD, CLASSES, "[" * 100_000 + "]" * 100_000, None),
    ("over-the-size-limit", "openai", OD, CLASSES, " " * (MAX_CHARS + 1) + "[]", None),
    ("not-text", "openai", OD, CLASSES, None, None),
    ("bytes", "openai", OD, CLASSES, b"[]", None),
    # Florence-2: payloads as its processor's post_process_generation returns them (pixels)
    ("florence-od-bare", "florence-2", OD, None,
     json.dumps({"bboxes": [[10, 20, 30, 40], [50, 60, 70, 80]], "labels": ["car", "car"]}),
     {"count": 2, "same_ids": True, "class_name": ["car", "car"]}),
    ("florence-od-under-token-with-classes", "florence-2", OD, ["person", "car"],
     json.dumps({"<OD>": {"bboxes": [[10, 20, 30, 40], [0, 0, 5, 5]], "labels": ["car", "tree"]}}),
     ok([[10, 20, 30, 40], [0, 0, 5, 5]], [1, -1], ["car", "tree"])),
    ("florence-wrong-task-token", "florence-2", OD, None,
     json.dumps({"<CAPTION>": "a car on a road"}), None),
    ("florence-region-proposal", "florence-2", "region-proposal", None,
     json.dumps({"bboxes": [[1, 2, 3, 4]], "labels": [""]}), ok([[1, 2, 3, 4]], [0], ["roi"])),
    ("florence-ocr-quads", "florence-2", "ocr-with-text-detection", None,
     json.dumps({"quad_boxes": [[10, 10, 50, 12, 49, 30, 9, 28]], "labels": ["AD799 KB"]}),
     ok([[9, 10, 50, 30]], [0], ["AD799 KB"])),
    ("florence-open-vocabulary", "florence-2", "open-vocabulary-object-detection", CLASSES,
     json.dumps({"bboxes": [[0, 0, 10, 10], [5, 5, 20, 20]], "bboxes_labels": ["dog", "bird"], "polygons": [],
                 "polygons_labels": []}), ok([[0, 0, 10, 10], [5, 5, 20, 20]], [1, -1], ["dog", "bird"])),
    ("florence-dense-caption", "florence-2", "object-detection-and-caption", None,
     json.dumps({"bboxes": [[100, 100, 900, 400]], "labels": ["a red double-decker bus"]}),
     ok([[100, 100, 900, 400]], [0], ["a red double-decker bus"])),
    ("florence-phrase-grounding-clipped", "florence-2", "phrase-grounded-object-detection", ["a bus"],
     json.dumps({"bboxes": [[-5, 10, 1200, 600]], "labels": ["a bus"]}), ok([[0, 10, 1000, 500]], [0], ["a bus"])),
    ("florence-missing-labels", "florence-2", OD, None, json.dumps({"bboxes": [[1, 2, 3, 4]]}), None),
    ("florence-ragged-boxes", "florence-2", OD, None, json.dumps({"bboxes": [[1, 2, 3], [1]], "labels": ["a", "b"]}),
     None),
    ("florence-list-answer", "florence-2", OD, None, json.dumps([[1, 2, 3, 4]]), None),
    ("florence-empty", "florence-2", OD, None, json.dumps({"bboxes": [], "labels": []}), ok([], [], [])),
]
# fmt: on


@pytest.mark.parametrize(
    ("model_type", "task_type", "classes", "answer", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_answers(
    model_type: Any, task_type: Any, classes: list[str] | None, answer: Any, expected: dict[str, Any] | None
) -> None:
    result = parse_vlm_output(
        answer,
        model_type=model_type,
        task_type=task_type,
        classes=classes,
        resolution_wh=(W, H),
        input_wh=(W // 2, H // 2) if model_type == "openai" else None,
    )
    assert isinstance(result, VlmResult)
    assert uuid.UUID(result.inference_id)
    if expected is None:
        assert result.error_status is True and result.predictions is None and result.error
        return
    assert result.error_status is False, result.error
    dets = result.predictions
    assert dets is not None and dets.metadata["inference_id"] == result.inference_id
    if "count" in expected:
        assert len(dets) == expected["count"]
        if "class_id" in expected:
            assert set(dets.class_id.tolist()) == {expected["class_id"]}
            assert set(dets.confidence.tolist()) == {expected["confidence"]}
        if expected.get("same_ids"):
            assert len(set(dets.class_id.tolist())) == 1 and 0 <= dets.class_id[0] < 10000
            assert dets.data["class_name"].tolist() == expected["class_name"]
        return
    np.testing.assert_allclose(dets.xyxy.reshape(-1, 4), np.array(expected["xyxy"], dtype=float).reshape(-1, 4))
    assert dets.class_id.tolist() == expected["class_id"]
    assert dets.data["class_name"].tolist() == expected["class_name"]
    np.testing.assert_allclose(dets.confidence, expected["confidence"])


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 20
    assert sum(1 for c in CASES if c[-1] is None) >= 10


@pytest.mark.parametrize("index", [i for i, c in enumerate(CASES) if c[-1] is not None and len(str(c[4])) < 5000])
def test_every_truncation_parses_or_errors(index: int) -> None:
    """A reply cut off anywhere (streaming, token limits) never raises."""
    _, model_type, task_type, classes, answer, _ = CASES[index]
    for end in range(0, len(answer), 3):
        result = parse_vlm_output(
            answer[:end],
            model_type=model_type,
            task_type=task_type,  # type: ignore[arg-type]
            classes=classes,
            resolution_wh=(W, H),
        )
        assert result.error_status or result.predictions is not None


def test_gemini_native_mask_is_kept() -> None:
    import base64
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(np.full((10, 10), 255, dtype=np.uint8)).save(png, format="PNG")
    mask = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    answer = json.dumps([{"box_2d": [0, 0, 500, 500], "label": "cat", "mask": mask}])
    result = parse_vlm_output(
        answer, model_type="google-gemini", task_type="object-detection", classes=CLASSES, resolution_wh=(W, H)
    )
    assert result.predictions is not None and result.predictions.mask is not None
    assert result.predictions.mask.shape == (1, H, W) and result.predictions.mask[0, :250, :500].all()


def test_each_call_has_its_own_inference_id() -> None:
    ids = {
        parse_vlm_output(
            "[]", model_type="openai", task_type="object-detection", classes=[], resolution_wh=(W, H)
        ).inference_id
        for _ in range(5)
    }
    assert len(ids) == 5


@pytest.mark.parametrize(
    ("model_type", "task_type", "classes", "message"),
    [
        ("gpt", "object-detection", CLASSES, "unknown VLM model type"),
        ("openai", "region-proposal", CLASSES, "cannot do task"),
        ("anthropic-claude", "object-detection", None, "needs the list of classes"),
        ("florence-2", "caption", None, "cannot do task"),
    ],
)
def test_bad_calls_raise(model_type: str, task_type: str, classes: list[str] | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_task(model_type, task_type, classes)
    with pytest.raises(ValueError, match=message):
        parse_vlm_output(
            "[]",
            model_type=model_type,
            task_type=task_type,
            classes=classes,  # type: ignore[arg-type]
            resolution_wh=(W, H),
        )


@pytest.mark.parametrize("size", [(0, 10), (10,), (10.5, 3), (-1, 4)])
def test_bad_resolution_raises(size: Any) -> None:
    with pytest.raises(ValueError, match="resolution_wh"):
        parse_vlm_output("[]", model_type="openai", task_type="object-detection", classes=[], resolution_wh=size)


def test_default_prompt_names_the_classes_and_the_format() -> None:
    prompt = default_prompt(["car", "bus"])
    assert "car, bus" in prompt and '"detections"' in prompt and "x_min" in prompt
