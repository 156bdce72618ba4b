"""The published JSON: field names, nesting of second stages, timestamps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import supervision as sv

from daemon.frames import Frame, Result, iso_utc
from daemon.payload import detection_records, result_payload


def plates() -> sv.Detections:
    child = sv.Detections(xyxy=np.array([[12.0, 20.0, 40.0, 30.0]]), confidence=np.array([0.8]),
                          class_id=np.array([0]), data={"class_name": np.array(["plate"])})
    child.data["reader"] = np.array([{"text": "AB12CDE", "confidence": 0.91, "char_confidences": [0.9] * 7}],
                                    dtype=object)
    child.metadata["stages"] = {"reader": "ocr"}
    return child


def vehicles() -> sv.Detections:
    det = sv.Detections(xyxy=np.array([[10.0, 10.0, 50.0, 40.0], [60.0, 5.0, 90.0, 30.0]]),
                        confidence=np.array([0.95, 0.5]), class_id=np.array([2, 0]),
                        tracker_id=np.array([7, 8]),
                        data={"class_name": np.array(["car", "person"])})
    det.data["plates"] = np.array([plates(), None], dtype=object)
    det.data["colour"] = np.array([{"class": "red", "class_id": 1, "confidence": 0.7, "top": []}, None],
                                  dtype=object)
    det.metadata["stages"] = {"plates": "detect", "colour": "classify"}
    return det


def test_result_payload_fields() -> None:
    frame = Frame("cam1", 42, np.zeros((480, 640, 3), np.uint8), 1700000000.5, 0.0, pts=1.25)
    payload = result_payload(Result(frame, "vehicles", vehicles(), {"infer": 12.345}))
    assert payload["source_id"] == "cam1" and payload["seq"] == 42 and payload["pipeline"] == "vehicles"
    assert payload["timestamp"] == "2023-11-14T22:13:20.500Z"
    assert (payload["width"], payload["height"], payload["pts"]) == (640, 480, 1.25)
    assert payload["latency_ms"] == {"infer": 12.35}
    json.dumps(payload)  # plain JSON, no numpy types


def test_nested_second_stages() -> None:
    car, person = detection_records(vehicles())
    assert car["bbox"] == [10.0, 10.0, 50.0, 40.0] and car["class"] == "car" and car["class_id"] == 2
    assert car["confidence"] == 0.95 and car["tracker_id"] == 7
    assert car["classification"]["class"] == "red"
    plate = car["stages"]["plates"][0]
    assert plate["class"] == "plate" and plate["text"] == "AB12CDE" and plate["text_confidence"] == 0.91
    assert "stages" not in person and "classification" not in person  # stages that did not run are absent


def test_empty_detections() -> None:
    assert detection_records(sv.Detections.empty()) == []


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"


def people(publish_embedding: bool, with_match: bool) -> sv.Detections:
    det = sv.Detections(xyxy=np.array([[0.0, 0.0, 10.0, 20.0]] * 3), confidence=np.array([0.9, 0.8, 0.7]),
                        class_id=np.array([0, 0, 2]), data={"class_name": np.array(["person", "person", "car"])})
    det.data["reid"] = np.array([np.ones(4, np.float32) * 0.5, np.zeros(4, np.float32), None], dtype=object)
    det.metadata["stages"] = {"reid": "embed"}
    det.metadata["embed"] = {"reid": {"publish_embedding": publish_embedding,
                                      "match": "reid.match" if with_match else None}}
    if with_match:
        det.data["reid.match"] = np.array(
            [{"name": "alice", "image": "/refs/alice.jpg", "similarity": 0.934567}, None, None], dtype=object)
    return det


@pytest.mark.parametrize(("publish", "with_match"), [(False, True), (True, True), (False, False), (True, False)])
def test_embed_stage_publishes_its_match_and_the_vector_only_when_asked(publish: bool, with_match: bool) -> None:
    alice, other, car = detection_records(people(publish, with_match))
    assert ("embedding" in alice["stages"]["reid"]) == publish
    if publish:
        assert alice["stages"]["reid"]["embedding"] == [0.5, 0.5, 0.5, 0.5]
    if with_match:
        expected = {"name": "alice", "image": "/refs/alice.jpg", "similarity": 0.9346}
        assert alice["match"] == alice["stages"]["reid"]["match"] == expected
        assert other["match"] is None and other["stages"]["reid"]["match"] is None  # compared, no match
    else:
        assert "match" not in alice and "match" not in alice["stages"]["reid"]
    assert "stages" not in car and "match" not in car  # the stage did not run on it
    json.dumps([alice, other, car])


def test_embed_vector_stays_out_without_the_pipeline_metadata() -> None:
    det = people(True, False)
    del det.metadata["embed"]
    assert detection_records(det)[0]["stages"] == {"reid": {}}
