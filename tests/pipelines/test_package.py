"""The one-shot helpers are importable from the package itself, as the README shows."""

from __future__ import annotations

import pytest

import pipelines


@pytest.mark.parametrize("name", pipelines.__all__)
def test_exports_resolve(name: str) -> None:
    assert callable(getattr(pipelines, name))


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pipelines.nope  # noqa: B018
