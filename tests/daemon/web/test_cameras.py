"""The camera routes' request parsing and error shape (the routes run in tests/integration/test_control.py)."""

from __future__ import annotations

import pytest

from daemon.control.errors import ControlError, FieldError
from daemon.web.cameras import CameraApiError, switch_value
from daemon.web.models import ApiError


@pytest.mark.parametrize(("body", "on"), [({"on": True}, True), ({"on": False}, False), ({"on": "ON"}, True),
                                          ({"on": " off "}, False)])
def test_switch_value(body: dict[str, object], on: bool) -> None:
    assert switch_value(body) is on


@pytest.mark.parametrize("body", [{}, {"on": 1}, {"on": "yes"}, {"state": "ON"}])
def test_switch_value_refused(body: dict[str, object]) -> None:
    with pytest.raises(ApiError, match="field 'on': expected true, false") as caught:
        switch_value(body)
    assert caught.value.status == 400


def test_field_errors_in_the_body() -> None:
    error = CameraApiError(ControlError(422, "invalid source", [FieldError("fps", "must be > 0")]))
    assert error.status == 422
    assert error.body() == {"message": "invalid source", "status": 422,
                            "errors": [{"field": "fps", "message": "must be > 0"}]}
    assert CameraApiError(ControlError(404, "unknown camera 'x'")).body() == {"message": "unknown camera 'x'",
                                                                              "status": 404}
