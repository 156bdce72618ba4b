"""Home Assistant MQTT discovery for the MQTT sink: one HA device per camera and one for the daemon, their entities'
retained discovery configs, and the small retained state topics those entities read.

Discovery topics: <discovery_prefix>/<component>/<node_id>/<camera>_<entity>/config (HA's documented scheme).
Entities, with T = <prefix>/<camera> (<prefix>: the sink's topic_prefix):
  sensor plate          T/plate (JSON: plate, known name and list, agreement, event id, snapshot URL)
  sensor objects_<lbl>  T/objects (JSON: label -> tracks in view)
  binary_sensor alert   T/alert ON while an alert of a track is raised; attributes from T/alerts
  sensor fps, state     <prefix>/stats and T/status (diagnostic)
  image snapshot        T/snapshot (JPEG of the latest event's best crop)
  switch detect         T/detect/set, state T/detect/state (daemon/sinks/control.py), when control is on
Every entity is available while <prefix>/availability says "online" (the sink's Last Will says "offline").
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from daemon.frames import Message

log = logging.getLogger(__name__)

Publish = tuple[str, bytes]  # one retained message: topic, payload
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # HA's node_id and object_id allow these only


class HomeAssistantOptions(BaseModel):
    """MQTT discovery for Home Assistant (README "Integrations")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Publish Home Assistant discovery configs and entity states.")
    discovery_prefix: str = Field(
        "homeassistant", pattern=r"^[^#+/]+(/[^#+/]+)*$", description="HA's discovery prefix (its MQTT setting)."
    )
    node_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Discovery node id and unique_id prefix; unset: the topic prefix with other characters as '_'. "
        "Keep it stable: HA knows the entities by it.",
    )
    object_labels: list[str] = Field(
        default_factory=lambda: ["person", "car", "truck", "bus", "motorcycle", "bicycle"],
        description="Labels that get an 'objects in view' sensor per camera.",
    )
    base_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+[^/\s]$",
        description="edgewatch's web server as HA reaches it, e.g. http://edge.local:9108 (no trailing slash); "
        "set: the last plate's attributes carry the event's snapshot URL.",
    )
    snapshot_quality: int = Field(80, ge=1, le=100, description="JPEG quality of the snapshot image entity.")


@dataclass
class _Camera:
    tracks: dict[int, str] = field(default_factory=dict)  # live track -> label
    raised: set[str] = field(default_factory=set)  # alert ids raised and not retracted or ended
    plate: str | None = None  # the last plate published


def _version() -> str:
    try:
        return version("edgewatch")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"


class HomeAssistant:
    """Discovery configs and entity states; with enabled false every method returns nothing (a null object)."""

    def __init__(self, options: HomeAssistantOptions, prefix: str, cameras: Sequence[str], control: bool) -> None:
        self.options = options
        self.prefix = prefix
        self.node = options.node_id or _UNSAFE.sub("_", prefix)
        self.control = control  # the daemon takes detect/set commands: the switch entity works
        self.cameras: dict[str, _Camera] = {camera: _Camera() for camera in cameras} if options.enabled else {}
        self.availability = [
            {"topic": f"{prefix}/availability", "payload_available": "online", "payload_not_available": "offline"}
        ]

    # -- what the MQTT sink calls --------------------------------------------------------------------
    def start(self) -> list[Publish]:
        """Every discovery config and the initial states (retained: HA gets them whenever it subscribes)."""
        if not self.options.enabled:
            return []
        out = self._daemon_configs()
        for camera in self.cameras:
            out += self._announce(camera)
        return out

    def on_message(self, msg: Message) -> list[Publish]:
        """The entity states one fan-out message changes (and the configs of a camera seen for the first time)."""
        if not self.options.enabled or not msg.source_id:
            return []
        if msg.kind == "control" and msg.payload.get("removed"):
            self.cameras.pop(msg.source_id, None)  # its topics are cleared by the control hook (discovery_removals)
            return []
        out = [] if msg.source_id in self.cameras else self._new_camera(msg.source_id)
        camera = self.cameras[msg.source_id]
        if msg.kind == "event":
            out += self._event(msg, camera)
        elif msg.kind == "alert":
            out += self._alert(msg.source_id, msg.payload, camera)
        return out

    def discovery_removals(self, camera: str) -> list[tuple[str, bytes]]:
        """Empty retained payloads for a removed camera: HA drops its entities; its state topics go too."""
        if not self.options.enabled:
            return []
        topics = [self._config_topic(component, camera, entity) for component, entity, _ in self._entities(camera)]
        topics += [f"{self.prefix}/{camera}/{suffix}" for suffix in ("plate", "objects", "alert", "snapshot")]
        return [(topic, b"") for topic in topics]

    # -- discovery ----------------------------------------------------------------------------------
    def _new_camera(self, camera: str) -> list[Publish]:
        self.cameras[camera] = _Camera()
        log.info("home assistant: announcing camera %s", camera)
        return self._announce(camera)

    def _announce(self, camera: str) -> list[Publish]:
        out = [
            (self._config_topic(component, camera, entity), _json(config))
            for component, entity, config in self._entities(camera)
        ]
        return [*out, self._objects(camera, self.cameras[camera]), (f"{self.prefix}/{camera}/alert", b"OFF")]

    def _config_topic(self, component: str, camera: str, entity: str) -> str:
        return f"{self.options.discovery_prefix}/{component}/{self.node}/{_UNSAFE.sub('_', camera)}_{entity}/config"

    def _entities(self, camera: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(component, entity, config) of each of the camera's entities."""
        t = f"{self.prefix}/{camera}"
        entities: list[tuple[str, str, dict[str, Any]]] = [
            (
                "sensor",
                "plate",
                {
                    "name": "Last plate",
                    "state_topic": f"{t}/plate",
                    "icon": "mdi:card-text-outline",
                    "value_template": "{{ value_json.plate }}",
                    "json_attributes_topic": f"{t}/plate",
                },
            ),
            (
                "binary_sensor",
                "alert",
                {
                    "name": "Alert",
                    "state_topic": f"{t}/alert",
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "device_class": "problem",
                    "json_attributes_topic": f"{t}/alerts",
                },
            ),
            (
                "sensor",
                "fps",
                {
                    "name": "FPS",
                    "state_topic": f"{self.prefix}/stats",
                    "unit_of_measurement": "fps",
                    "value_template": f"{{{{ value_json.sources[{json.dumps(camera)}].fps }}}}",
                    "state_class": "measurement",
                    "entity_category": "diagnostic",
                },
            ),
            (
                "sensor",
                "state",
                {
                    "name": "State",
                    "state_topic": f"{t}/status",
                    "entity_category": "diagnostic",
                    "value_template": "{{ value_json.state }}",
                    "icon": "mdi:video-check",
                },
            ),
            (
                "image",
                "snapshot",
                {"name": "Last snapshot", "image_topic": f"{t}/snapshot", "content_type": "image/jpeg"},
            ),
        ]
        for label in self.options.object_labels:
            entities.append(
                (
                    "sensor",
                    f"objects_{_UNSAFE.sub('_', label)}",
                    {
                        "name": f"{label} in view",
                        "state_topic": f"{t}/objects",
                        "state_class": "measurement",
                        "value_template": f"{{{{ value_json[{json.dumps(label)}] | default(0) }}}}",
                        "icon": "mdi:eye",
                    },
                )
            )
        if self.control:
            entities.append(
                (
                    "switch",
                    "detect",
                    {
                        "name": "Detection",
                        "command_topic": f"{t}/detect/set",
                        "state_topic": f"{t}/detect/state",
                        "payload_on": "ON",
                        "payload_off": "OFF",
                        "state_on": "ON",
                        "state_off": "OFF",
                    },
                )
            )
        device = {
            "identifiers": [f"{self.node}_{camera}"],
            "name": f"{camera}",
            "manufacturer": "edgewatch",
            "model": "camera",
            "via_device": self.node,
        }
        return [
            (component, entity, self._common(config, f"{camera}_{entity}", device))
            for component, entity, config in entities
        ]

    def _daemon_configs(self) -> list[Publish]:
        device = {
            "identifiers": [self.node],
            "name": f"edgewatch {self.node}",
            "manufacturer": "edgewatch",
            "model": "edgewatch daemon",
            "sw_version": _version(),
        }
        # its own connectivity is the availability topic: no availability, or it would be unavailable, not off
        running = {
            "name": "Running",
            "state_topic": f"{self.prefix}/availability",
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "unique_id": f"{self.node}_running",
            "device": device,
            "origin": _origin(),
        }
        uptime = self._common(
            {
                "name": "Uptime",
                "state_topic": f"{self.prefix}/stats",
                "unit_of_measurement": "s",
                "value_template": "{{ value_json.uptime_s }}",
                "device_class": "duration",
                "entity_category": "diagnostic",
            },
            "uptime",
            device,
        )
        base = f"{self.options.discovery_prefix}/{{}}/{self.node}/{{}}/config"
        return [
            (base.format("binary_sensor", "running"), _json(running)),
            (base.format("sensor", "uptime"), _json(uptime)),
        ]

    def _common(self, config: dict[str, Any], object_id: str, device: dict[str, Any]) -> dict[str, Any]:
        return {
            **config,
            "unique_id": f"{self.node}_{_UNSAFE.sub('_', object_id)}",
            "device": device,
            "availability": self.availability,
            "origin": _origin(),
        }

    # -- states ---------------------------------------------------------------------------------------
    def _event(self, msg: Message, camera: _Camera) -> list[Publish]:
        payload, source = msg.payload, str(msg.source_id)
        track, kind = int(str(payload["track_id"])), payload.get("type")
        before = dict(camera.tracks)
        if kind == "end":
            camera.tracks.pop(track, None)
        else:
            camera.tracks[track] = str(payload.get("label") or "object")
        out = [self._objects(source, camera)] if camera.tracks != before else []
        out += self._plate(source, camera, payload)
        crop = msg.result.extra.get("best_crop") if msg.result is not None else None
        if kind in ("new", "end") and isinstance(crop, np.ndarray) and crop.size:
            ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, self.options.snapshot_quality])
            if ok:
                out.append((f"{self.prefix}/{source}/snapshot", jpeg.tobytes()))
        return out

    def _objects(self, source: str, camera: _Camera) -> Publish:
        counts = dict.fromkeys(self.options.object_labels, 0)
        for label in camera.tracks.values():
            counts[label] = counts.get(label, 0) + 1
        return f"{self.prefix}/{source}/objects", _json(counts)

    def _plate(self, source: str, camera: _Camera, payload: Mapping[str, Any]) -> list[Publish]:
        """The last settled plate, when it changed: its text, known entry, agreement, event and snapshot URL."""
        stages = payload.get("stages") or {}
        texts = [s for s in stages.values() if isinstance(s, Mapping) and s.get("settled") and s.get("text")]
        if not texts or texts[0]["text"] == camera.plate:
            return []
        camera.plate = texts[0]["text"]
        known, event_id = payload.get("known") or {}, payload.get("event_id")
        url = f"{self.options.base_url}/api/events/{event_id}/snapshot.jpg" if self.options.base_url else None
        body = {
            "plate": camera.plate,
            "known_name": known.get("name"),
            "known_list": known.get("list"),
            "agreement": texts[0].get("agreement"),
            "event_id": event_id,
            "label": payload.get("label"),
            "timestamp": payload.get("timestamp"),
            "snapshot_url": url,
        }
        return [(f"{self.prefix}/{source}/plate", _json(body))]

    def _alert(self, source: str, payload: Mapping[str, Any], camera: _Camera) -> list[Publish]:
        was_on = bool(camera.raised)
        alert_id = str(payload.get("alert_id"))
        if payload.get("state") == "raised":
            camera.raised.add(alert_id)
        else:
            camera.raised.discard(alert_id)
        if bool(camera.raised) == was_on:
            return []
        return [(f"{self.prefix}/{source}/alert", b"ON" if camera.raised else b"OFF")]


def _origin() -> dict[str, str]:
    return {"name": "edgewatch", "sw_version": _version()}


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
