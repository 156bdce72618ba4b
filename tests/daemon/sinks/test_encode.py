"""The text sinks' JSON: compact UTF-8, numpy values through the one converter, strict about the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.sinks.encode import to_json


def test_compact_utf8_with_numpy_values() -> None:
    payload = {"text": "Straße", "n": np.int64(3), "score": np.float32(0.5), "box": np.array([[1, 2], [3, 4]])}
    assert to_json(payload) == '{"text":"Straße","n":3,"score":0.5,"box":[[1,2],[3,4]]}'


@pytest.mark.parametrize(
    ("payload", "error", "words"),
    [
        ({"confidence": float("nan")}, ValueError, "Out of range float values are not JSON compliant"),
        ({"confidence": np.float64("inf")}, ValueError, "Out of range float values are not JSON compliant"),
        ({"path": Path("/tmp/x")}, TypeError, "payload value of type PosixPath is not JSON serialisable"),
        ({"ids": {1, 2}}, TypeError, "payload value of type set is not JSON serialisable"),
    ],
)
def test_values_json_cannot_hold_are_errors(payload: dict[str, object], error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        to_json(payload)
