"""The MQTT control hooks: switch payloads, state echoes, a removed camera's clears, refused commands."""

from __future__ import annotations

import json
from collections.abc import Mapping

import paho.mqtt.client as mqtt
import pytest

from daemon.sinks.base import SinkContext
from daemon.sinks.control import MqttControl, control_message, parse_switch
from daemon.sinks.mqtt import MqttOptions, MqttSink

Sent = list[tuple[str, bytes, bool]]


class Cameras:
    """A CommandHandler over a fixed set of cameras that records the commands it accepted."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, str, str]] = []

    def command(self, camera: str, switch: str, payload: str) -> str | None:
        if camera != "cam1":
            return f"unknown camera {camera!r}"
        self.accepted.append((camera, switch, payload))
        return None

    def switch_states(self) -> Mapping[str, Mapping[str, bool]]:
        return {"cam1": {"detect": False, "enabled": True}}


def control(sent: Sent, extra: list[str] | None = None) -> MqttControl:
    return MqttControl("site/a", Cameras(), lambda t, p, r: sent.append((t, p, r)),
                       (lambda camera: [f"homeassistant/switch/x/{camera}_detect/config"]) if extra else None)


@pytest.mark.parametrize(("payload", "value"), [("ON", True), (" off\n", False), ("On", True), ("1", None),
                                                ("", None), ("ONN", None)])
def test_parse_switch(payload: str, value: bool | None) -> None:
    assert parse_switch(payload) is value


def test_states_at_start_and_echoes() -> None:
    sent: Sent = []
    hooks = control(sent)
    hooks.publish_states()
    hooks.publish(control_message("cam1", {"detect": True, "enabled": False}, "t"))
    assert sent == [
        ("site/a/cam1/detect/state", b"OFF", True), ("site/a/cam1/enabled/state", b"ON", True),
        ("site/a/cam1/detect/state", b"ON", True), ("site/a/cam1/enabled/state", b"OFF", True),
    ]


def test_removed_camera_clears_its_retained_topics() -> None:
    sent: Sent = []
    control(sent, extra=["yes"]).publish(control_message("cam1", None, "t"))
    assert sent == [(topic, b"", True) for topic in (
        "site/a/cam1/status", "site/a/cam1/detect/state", "site/a/cam1/enabled/state",
        "homeassistant/switch/x/cam1_detect/config")]


def message(topic: str, payload: bytes) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=topic.encode())
    msg.payload = payload
    return msg


def test_commands_and_refusals() -> None:
    sent: Sent = []
    hooks = control(sent)
    handler = hooks.handler
    assert isinstance(handler, Cameras)
    hooks._on_message(None, None, message("site/a/cam1/detect/set", b"OFF"))  # type: ignore[arg-type]
    assert handler.accepted == [("cam1", "detect", "OFF")] and sent == []
    hooks._on_message(None, None, message("site/a/cam7/enabled/set", b"ON"))  # type: ignore[arg-type]
    hooks._on_message(None, None, message("site/a/cam1/detect/set", b"\xff\xfe"))  # type: ignore[arg-type]
    assert [(t, r) for t, _p, r in sent] == [("site/a/status", False), ("site/a/status", False)]
    unknown, binary = (json.loads(p) for _t, p, _r in sent)
    assert unknown == {"error": "unknown camera 'cam7'", "topic": "site/a/cam7/enabled/set", "payload": "ON",
                       "camera": "cam7"}
    assert "not UTF-8" in binary["error"] and binary["camera"] == "cam1"


@pytest.mark.parametrize("enabled", [True, False])
def test_mqtt_sink_option_control(enabled: bool) -> None:
    handler = Cameras()
    options = MqttOptions.model_validate({"id": "m", "type": "mqtt", "control": enabled})
    sink = MqttSink(options, SinkContext("p", ("cam1",), "/tmp", control=handler))
    assert (sink.control.handler is handler) is enabled
    assert sink.homeassistant.control is enabled
