"""The one numpy -> JSON converter shared by result payloads, track events and the text sinks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.jsonable import to_jsonable


@pytest.mark.parametrize(
    ("value", "ndigits", "expected"),
    [
        (np.int32(7), None, 7),
        (np.bool_(True), None, True),
        (np.float32(0.25), None, 0.25),
        (np.array([[1, 2], [3, 4]], np.uint8), None, [[1, 2], [3, 4]]),
        ((1, np.int64(2)), None, [1, 2]),
        ({1: {"top": [np.float64(0.5)]}}, None, {"1": {"top": [0.5]}}),
        (0.123456789, None, 0.123456789),
        (0.123456789, 4, 0.1235),
        ({"text": "AB12CDE", "confidence": 0.987654}, 4, {"text": "AB12CDE", "confidence": 0.9877}),
        ("text", 4, "text"),
        (None, None, None),
    ],
)
def test_to_jsonable(value: object, ndigits: int | None, expected: object) -> None:
    converted = to_jsonable(value, ndigits)
    assert converted == expected
    assert json.loads(json.dumps(converted)) == expected  # plain JSON, no numpy type left inside


def test_other_values_pass_through_for_the_encoder_to_judge() -> None:
    marker = object()
    assert to_jsonable({"x": marker})["x"] is marker  # type: ignore[index]
