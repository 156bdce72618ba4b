"""Home Assistant discovery on a real mosquitto with the daemon on the rendered plates video: retained configs that
follow HA's schema, every topic an entity reads really gets a message; a removed camera's configs are cleared."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import yaml

from daemon.sinks.base import SinkContext
from daemon.sinks.control import control_message
from daemon.sinks.mqtt import MqttOptions, MqttSink
from tests.fixtures.ha_schema import check_config, state_topics
from tests.fixtures.mosquitto import Mosquitto, Received
from tests.fixtures.plates_daemon import plates_config, run_to_end

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def retained(topic: str, empty: bool = False) -> Callable[[Received], bool]:
    """Matches a retained message on the topic, with an empty payload (a clear) or not."""
    return lambda m: m.topic == topic and m.retain and (not m.payload) == empty


STOLEN = {"name": "stolen", "plates": ["XY34ZQW"], "allow": False}  # the third car of tests/fixtures/plates_video.py


def test_discovery_and_entity_states(mosquitto: Mosquitto, models_dir: Path, tmp_path: Path) -> None:
    seen = mosquitto.subscribe("#")
    ha = {"enabled": True, "object_labels": ["single"], "base_url": "http://edge.local:9108"}
    sink = {"id": "broker", "type": "mqtt", "host": mosquitto.host, "port": mosquitto.port, "homeassistant": ha}
    config = plates_config(tmp_path, models_dir, [sink], publish_results=False)
    spec = yaml.safe_load(config.read_text())
    spec["pipeline"]["tracking"]["schedule"]["consensus"]["known"] = [STOLEN]
    spec["stats_interval_s"] = 0.5  # the fps and uptime sensors read the stats topic
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    run_to_end(config)
    seen.wait_for(lambda m: m.topic == "edgewatch/availability" and m.text == "offline")

    configs = {m.topic: m.json() for m in seen.messages if m.topic.startswith("homeassistant/")}
    assert all(m.retain for m in seen.messages if m.topic.startswith("homeassistant/"))
    components = sorted(check_config(topic, body) for topic, body in configs.items())
    assert components == sorted(["binary_sensor"] * 2 + ["image", "switch"] + ["sensor"] * 5), configs
    received = {m.topic for m in seen.messages if m.payload}
    for topic, body in configs.items():
        assert state_topics(body) <= received, (topic, state_topics(body) - received)

    street = "homeassistant/{}/edgewatch/street_{}/config"
    assert configs[street.format("switch", "detect")]["command_topic"] == "edgewatch/street/detect/set"
    plates = [m.json() for m in seen.on("edgewatch/street/plate")]
    assert {"AB12CDE", "KT07LMN", "XY34ZQW"} <= {p["plate"] for p in plates}
    stolen = next(p for p in plates if p["plate"] == "XY34ZQW")
    assert (stolen["known_name"], stolen["known_list"]) == ("stolen", "deny")
    assert stolen["snapshot_url"] == f"http://edge.local:9108/api/events/{stolen['event_id']}/snapshot.jpg"
    assert [m.text for m in seen.on("edgewatch/street/alert")] == ["OFF", "ON", "OFF"]
    assert max(m.json()["single"] for m in seen.on("edgewatch/street/objects")) >= 2  # cars side by side
    assert seen.on("edgewatch/street/objects")[-1].json() == {"single": 0}
    assert all(m.payload[:2] == b"\xff\xd8" for m in seen.on("edgewatch/street/snapshot"))  # JPEG

    # a subscriber that comes later (HA restarting) gets every config and the entities' last states, retained
    later = mosquitto.subscribe("#")
    for topic in [*configs, "edgewatch/street/plate", "edgewatch/street/snapshot", "edgewatch/street/objects"]:
        later.wait_for(retained(topic))
    assert later.wait_for(lambda m: m.topic == "edgewatch/street/alert").text == "OFF"


class Switches:
    """The daemon's side of camera control, for a sink without a daemon: every command accepted."""

    def command(self, camera: str, switch: str, payload: str) -> str | None:
        return None

    def switch_states(self) -> Mapping[str, Mapping[str, bool]]:
        return {"gate": {"detect": True, "enabled": True}}


def test_removed_camera_clears_its_discovery(mosquitto: Mosquitto, tmp_path: Path) -> None:
    options = MqttOptions.model_validate(
        {
            "id": "broker",
            "type": "mqtt",
            "host": mosquitto.host,
            "port": mosquitto.port,
            "homeassistant": {"enabled": True},
        }
    )
    sink = MqttSink(options, SinkContext("p", ("gate", "yard"), str(tmp_path), control=Switches()))
    seen = mosquitto.subscribe("#")
    sink.start()
    try:
        gate = sink.homeassistant.discovery_removals("gate")
        for topic, _ in gate:
            if topic.endswith("/config"):
                seen.wait_for(retained(topic))
        sink.publish(control_message("gate", None, "2026-12-04T15:00:00.000Z"))
        for topic, _ in gate:
            seen.wait_for(retained(topic, empty=True))
    finally:
        sink.close()
    later = mosquitto.subscribe("#")
    later.wait_for(lambda m: m.topic == "homeassistant/sensor/edgewatch/yard_plate/config")
    later.wait_for(lambda m: m.topic == "edgewatch/availability")
    assert not [m.topic for m in later.messages if "gate" in m.topic]  # nothing of it is left on the broker
