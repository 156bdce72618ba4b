"""The one explicit map from a YAML `type:` to the plug-in class that implements it (sources, sinks, models).

Plug-ins are imported lazily, through the one "module:Class" importer in pipelines/models.py, so that a
camera-only box never imports TensorRT, but a broken import fails loudly with the module's name instead of
silently dropping the type.
"""

from __future__ import annotations

from typing import Literal, TypeVar, overload

from daemon.sinks.base import Sink
from daemon.sources.base import Source
from pipelines.models import MODEL_TYPES, Model, UnknownTypeError, import_entry

Kind = Literal["source", "sink", "model"]
_T = TypeVar("_T")

SOURCES: dict[str, str] = {
    "file": "daemon.sources.file:FileSource",
    "rtsp": "daemon.sources.rtsp:RtspSource",
    "webcam": "daemon.sources.webcam:WebcamSource",
    "images": "daemon.sources.images:ImagesSource",
    "ffmpeg": "daemon.sources.ffmpeg:FfmpegSource",
    "gstreamer": "daemon.sources.gstreamer:GstSource",
}

SINKS: dict[str, str] = {
    "mqtt": "daemon.sinks.mqtt:MqttSink",
    "jsonl": "daemon.sinks.jsonl:JsonlSink",
    "snapshots": "daemon.sinks.snapshots:SnapshotSink",
    "events": "daemon.sinks.events:EventsSink",
    "webhook": "daemon.sinks.webhook:WebhookSink",
}

KINDS: dict[Kind, dict[str, str]] = {"source": SOURCES, "sink": SINKS, "model": MODEL_TYPES}


def names(kind: Kind) -> list[str]:
    return sorted(KINDS[kind])


@overload
def resolve(kind: Literal["source"], name: str) -> type[Source]: ...
@overload
def resolve(kind: Literal["sink"], name: str) -> type[Sink]: ...
@overload
def resolve(kind: Literal["model"], name: str) -> type[Model]: ...
@overload
def resolve(kind: Kind, name: str) -> type[Source] | type[Sink] | type[Model]: ...


def resolve(kind: Kind, name: str) -> type[Source] | type[Sink] | type[Model]:
    """Return the plug-in class for `name`; it carries its pydantic model as `.Options`.

    Raises UnknownTypeError for a name the table lacks, a module that fails to import, or an entry that
    names something other than a plug-in of this kind.
    """
    found = import_entry(KINDS[kind], kind, name)
    where = f"{kind} type {name!r} ({KINDS[kind][name]})"
    if kind == "source":
        return _subclass(found, Source, where)
    if kind == "sink":
        return _subclass(found, Sink, where)
    return _subclass(found, Model, where)


def _subclass(found: object, base: type[_T], where: str) -> type[_T]:
    if isinstance(found, type) and issubclass(found, base):
        return found
    raise UnknownTypeError(f"{where} is not a {base.__name__} class")
