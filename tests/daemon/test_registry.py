"""The plug-in tables: each name resolves to its class, and every way an entry can be wrong is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from daemon import registry
from daemon.sinks.base import Sink
from daemon.sources.base import Source
from pipelines.models import Model, UnknownTypeError


@pytest.mark.parametrize(("kind", "base"), [("source", Source), ("sink", Sink), ("model", Model)])
def test_every_table_entry_imports_as_its_kind(kind: registry.Kind, base: type) -> None:
    for name in registry.names(kind):
        cls = registry.resolve(kind, name)
        assert issubclass(cls, base) and issubclass(cls.Options, BaseModel), (kind, name)


@pytest.fixture
def broken_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A plug-in module on sys.path whose own import fails (a missing dependency)."""
    (tmp_path / "ew_broken_plugin.py").write_text("import ew_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "ew_broken_plugin"


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (None, "unknown sink type 'kafka'; expected one of: events, jsonl, mqtt, snapshots"),
        ("daemon.sinks.jsonl:NoSuchSink", "sink type 'kafka': module daemon.sinks.jsonl has no attribute 'NoSuchSink'"),
        ("daemon.sinks.jsonl", "must be in the form 'module:attribute'"),
        ("daemon.sinks.jsonl:JsonlOptions", "sink type 'kafka' (daemon.sinks.jsonl:JsonlOptions) is not a Sink class"),
        ("daemon.sources.file:FileSource", "is not a Sink class"),
        ("BROKEN:Sink", "sink type 'kafka': cannot import ew_broken_plugin: No module named 'ew_no_such_dependency'"),
    ],
)
def test_a_bad_entry_fails_loudly_with_what_is_wrong(
    entry: str | None, words: str, broken_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if entry is not None:
        monkeypatch.setitem(registry.SINKS, "kafka", entry.replace("BROKEN", broken_module))
    with pytest.raises(UnknownTypeError) as info:
        registry.resolve("sink", "kafka")
    assert words in str(info.value)


def test_a_broken_plugin_keeps_its_import_error_as_the_cause(broken_module: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.SOURCES, "broken", f"{broken_module}:Source")
    with pytest.raises(UnknownTypeError) as info:
        registry.resolve("source", "broken")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert info.value.__cause__.name == "ew_no_such_dependency"
