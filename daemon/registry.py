"""The one explicit map from a YAML `type:` to the plug-in class that implements it (sources, sinks, models).

Plug-ins are imported lazily so that a camera-only box never imports TensorRT, but a broken import fails
loudly with the module's name instead of silently dropping the type.
"""

from __future__ import annotations

import importlib
from typing import Any

from pipelines.models import MODEL_TYPES

SOURCES: dict[str, str] = {
    "file": "daemon.sources.file:FileSource",
    "rtsp": "daemon.sources.rtsp:RtspSource",
    "webcam": "daemon.sources.webcam:WebcamSource",
    "images": "daemon.sources.images:ImagesSource",
    "ffmpeg": "daemon.sources.ffmpeg:FfmpegSource",
}

SINKS: dict[str, str] = {
    "mqtt": "daemon.sinks.mqtt:MqttSink",
    "jsonl": "daemon.sinks.jsonl:JsonlSink",
    "snapshots": "daemon.sinks.snapshots:SnapshotSink",
}

KINDS: dict[str, dict[str, str]] = {"source": SOURCES, "sink": SINKS, "model": MODEL_TYPES}


class RegistryError(LookupError):
    """An unknown type name, or a plug-in module that fails to import."""


def names(kind: str) -> list[str]:
    return sorted(KINDS[kind])


def resolve(kind: str, name: str) -> Any:
    """Return the plug-in class for `name`; it carries its pydantic model as `.Options`."""
    table = KINDS[kind]
    if name not in table:
        raise RegistryError(f"unknown {kind} type {name!r}; expected one of: {', '.join(sorted(table))}")
    module_name, _, attr = table[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"{kind} type {name!r}: cannot import {module_name}: {exc}") from exc
    return getattr(module, attr)
