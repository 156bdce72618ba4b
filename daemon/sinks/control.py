"""Runtime control over MQTT: the command topics the MQTT sink subscribes to and the retained state it echoes.

Topics, with prefix = the MQTT sink's topic_prefix:
  {prefix}/{camera}/detect/set     ON | OFF   (subscribed) inference on or off; capture and status go on
  {prefix}/{camera}/enabled/set    ON | OFF   (subscribed) capture on or off (status "disabled")
  {prefix}/{camera}/detect/state   ON | OFF   retained echo of the switch
  {prefix}/{camera}/enabled/state  ON | OFF   retained echo of the switch
  {prefix}/status                  JSON       a refused command: {"error", "topic", "payload", "camera"}
The daemon side (daemon/control/state.py) implements CommandHandler; changes, whoever made them (MQTT,
HTTP), come back as "control" messages through the fan-out, so they are ordered after the camera's status.
A removed camera's control message clears its retained topics (empty retained payload).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

import paho.mqtt.client as mqtt

from daemon.frames import Message

log = logging.getLogger(__name__)

SWITCHES = ("detect", "enabled")
Send = Callable[[str, bytes, bool], None]  # (topic, payload, retain)
# A removed camera's retained topics besides the switch states (others, e.g. discovery, via extra_clears)
_CLEARED_SUFFIXES = ("status", *(f"{s}/state" for s in SWITCHES))


class CommandHandler(Protocol):
    """What the daemon offers the MQTT sink: switch commands in, the current switch states out."""

    def command(self, camera: str, switch: str, payload: str) -> str | None:
        """Accept a command (applied in the background) or return why it is refused."""

    def switch_states(self) -> Mapping[str, Mapping[str, bool]]:
        """camera -> {"detect": on, "enabled": on}, for every known camera."""


def parse_switch(payload: str) -> bool | None:
    """ON/OFF (any case, surrounding blanks ignored) -> True/False; anything else -> None."""
    text = payload.strip().upper()
    return {"ON": True, "OFF": False}.get(text)


def control_message(camera: str, states: Mapping[str, bool] | None, timestamp: str) -> Message:
    """The fan-out message for a changed (states) or removed (None) camera."""
    if states is None:
        return Message("control", camera, {"camera": camera, "removed": True, "timestamp": timestamp})
    body: dict[str, object] = {"camera": camera, "timestamp": timestamp}
    body.update({switch: "ON" if states[switch] else "OFF" for switch in SWITCHES})
    return Message("control", camera, body)


class MqttControl:
    """The MQTT sink's control hooks: subscribe on connect, route commands, publish state echoes and clears."""

    def __init__(self, prefix: str, handler: CommandHandler | None, send: Send,
                 extra_clears: Callable[[str], list[str]] | None = None) -> None:
        self.prefix = prefix
        self.handler = handler
        self.send = send
        self.extra_clears = extra_clears
        self.status_topic = f"{prefix}/status"

    def subscribe(self, client: mqtt.Client) -> None:
        """On every (re)connection: a clean session forgets subscriptions."""
        if self.handler is None:
            return
        for switch in SWITCHES:
            pattern = f"{self.prefix}/+/{switch}/set"
            client.message_callback_add(pattern, self._on_message)
            client.subscribe(pattern, qos=1)

    def publish_states(self) -> None:
        """The retained state of every camera (at start; the sink re-sends retained values on reconnect)."""
        if self.handler is None:
            return
        for camera, states in self.handler.switch_states().items():
            self._send_states(camera, {s: "ON" if on else "OFF" for s, on in states.items()})

    def publish(self, msg: Message) -> None:
        """One "control" message from the fan-out: the new states, or clears for a removed camera."""
        camera = str(msg.payload.get("camera") or msg.source_id or "")
        if not camera:
            raise ValueError("control message without a camera")
        if msg.payload.get("removed"):
            topics = [f"{self.prefix}/{camera}/{suffix}" for suffix in _CLEARED_SUFFIXES]
            topics += self.extra_clears(camera) if self.extra_clears is not None else []
            for topic in topics:
                self.send(topic, b"", True)
            return
        self._send_states(camera, {s: str(msg.payload[s]) for s in SWITCHES if s in msg.payload})

    def _send_states(self, camera: str, states: Mapping[str, str]) -> None:
        for switch, value in states.items():
            self.send(f"{self.prefix}/{camera}/{switch}/state", value.encode(), True)

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        # paho's network thread: the handler only checks and queues, so acknowledgements keep flowing
        assert self.handler is not None
        parts = message.topic[len(self.prefix) + 1:].split("/")
        camera, switch = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
        error: str | None
        try:
            payload = message.payload.decode("utf-8")
        except UnicodeDecodeError:
            payload, error = repr(message.payload[:40]), "payload is not UTF-8 text; expected ON or OFF"
        else:
            error = self.handler.command(camera, switch, payload)
        if error is not None:
            log.warning("control: %s %r refused: %s", message.topic, payload[:40], error)
            body = {"error": error, "topic": message.topic, "payload": payload[:100], "camera": camera}
            self.send(self.status_topic, json.dumps(body).encode(), False)
