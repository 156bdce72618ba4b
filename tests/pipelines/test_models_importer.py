"""The one "module:attr" importer behind every type table (models here, sources and sinks in daemon/registry.py)."""

from __future__ import annotations

import pytest

from pipelines.models import MODEL_TYPES, UnknownTypeError, import_entry, import_string
from pipelines.ocr import CtcOcr


def test_import_string_returns_the_named_attribute() -> None:
    assert import_string("pipelines.ocr:CtcOcr") is CtcOcr
    assert import_entry(MODEL_TYPES, "model", "ocr") is CtcOcr


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("pipelines.ocr", "import string 'pipelines.ocr' must be in the form 'module:attribute'"),
        (":CtcOcr", "must be in the form 'module:attribute'"),
        ("pipelines.ocr:", "must be in the form 'module:attribute'"),
        ("pipelines.no_such_module:X", "cannot import pipelines.no_such_module: No module named"),
        ("pipelines.ocr:NoSuchModel", "module pipelines.ocr has no attribute 'NoSuchModel'"),
    ],
)
def test_import_string_errors_name_the_module_and_attribute(target: str, words: str) -> None:
    with pytest.raises(UnknownTypeError) as info:
        import_string(target)
    assert words in str(info.value)


def test_import_entry_names_the_kind_and_type() -> None:
    with pytest.raises(UnknownTypeError, match=r"unknown model type 'yolo99'; expected one of: classify, clip"):
        import_entry(MODEL_TYPES, "model", "yolo99")
    with pytest.raises(UnknownTypeError, match=r"^model type 'x': cannot import pipelines\.nowhere"):
        import_entry({"x": "pipelines.nowhere:X"}, "model", "x")
