"""Home Assistant discovery: configs that follow HA's schema, stable unique ids, entity states from messages,
new and removed cameras."""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv
from pydantic import ValidationError

from daemon.frames import Frame, Message, Result
from daemon.sinks.homeassistant import HomeAssistant, HomeAssistantOptions
from tests.fixtures.ha_schema import check_config

ON = HomeAssistantOptions(enabled=True, object_labels=["car", "person"])


def configs(published: list[tuple[str, bytes]]) -> dict[str, dict[str, Any]]:
    return {topic: json.loads(payload) for topic, payload in published if topic.endswith("/config")}


def event(kind: str, track: int, label: str = "car", text: str | None = None, crop: bool = False) -> Message:
    payload: dict[str, Any] = {
        "type": kind,
        "track_id": track,
        "label": label,
        "event_id": f"gate-{track}-1",
        "timestamp": "2026-12-04T15:00:00.000Z",
        "known": None,
        "stages": {},
    }
    if text is not None:
        payload["stages"] = {"plate": {"text": text, "settled": True, "agreement": 0.9}}
        payload["known"] = {"name": "stolen", "list": "deny"}
    result = None
    if crop:
        frame = Frame("gate", 1, np.zeros((4, 4, 3), np.uint8), 0.0, 0.0)
        image = np.full((40, 60, 3), 200, np.uint8)
        result = Result(frame, "p", sv.Detections.empty(), extra={"best_crop": image})
    return Message("event", "gate", payload, result)


def alert(state: str, alert_id: str = "gate-1-1/plate/deny/stolen") -> Message:
    return Message("alert", "gate", {"alert_id": alert_id, "state": state, "source_id": "gate"})


def test_disabled_publishes_nothing() -> None:
    ha = HomeAssistant(HomeAssistantOptions(), "edgewatch", ["gate"], control=True)
    assert ha.start() == [] and ha.on_message(event("new", 1)) == [] and ha.discovery_removals("gate") == []


def test_configs_follow_the_schema_with_stable_unique_ids() -> None:
    published = HomeAssistant(ON, "site/edge", ["gate", "yard.2"], control=True).start()
    found = configs(published)
    components = sorted(check_config(topic, config) for topic, config in found.items())
    # per camera: plate, fps, state, 2 label sensors; alert; snapshot; detection switch; + the daemon's two
    assert components == sorted(["binary_sensor"] * 3 + ["image"] * 2 + ["sensor"] * 11 + ["switch"] * 2)
    ids = [c["unique_id"] for c in found.values()]
    assert len(set(ids)) == len(ids)
    again = configs(HomeAssistant(ON, "site/edge", ["yard.2", "gate"], control=True).start())
    assert {t: c["unique_id"] for t, c in again.items()} == {t: c["unique_id"] for t, c in found.items()}
    assert all(
        c["availability"]
        == [{"topic": "site/edge/availability", "payload_available": "online", "payload_not_available": "offline"}]
        for t, c in found.items()
        if not t.endswith("/running/config")
    )
    assert "homeassistant/sensor/site_edge/yard_2_plate/config" in found  # node and object ids: [A-Za-z0-9_-]


def test_switch_points_at_the_control_topics_and_only_with_control() -> None:
    found = configs(HomeAssistant(ON, "edgewatch", ["gate"], control=True).start())
    switch = found["homeassistant/switch/edgewatch/gate_detect/config"]
    assert {k: switch[k] for k in ("command_topic", "state_topic", "payload_on", "payload_off")} == {
        "command_topic": "edgewatch/gate/detect/set",
        "state_topic": "edgewatch/gate/detect/state",
        "payload_on": "ON",
        "payload_off": "OFF",
    }
    without = configs(HomeAssistant(ON, "edgewatch", ["gate"], control=False).start())
    assert not [t for t in without if "/switch/" in t]


def test_cameras_are_devices_of_the_daemon() -> None:
    found = configs(HomeAssistant(ON, "edgewatch", ["gate"], control=False).start())
    plate = found["homeassistant/sensor/edgewatch/gate_plate/config"]
    running = found["homeassistant/binary_sensor/edgewatch/running/config"]
    assert plate["device"]["via_device"] == running["device"]["identifiers"][0] == "edgewatch"
    assert plate["device"]["identifiers"] == ["edgewatch_gate"]
    assert running["state_topic"] == "edgewatch/availability" and "availability" not in running


def test_initial_states() -> None:
    published = dict(HomeAssistant(ON, "edgewatch", ["gate"], control=False).start())
    assert json.loads(published["edgewatch/gate/objects"]) == {"car": 0, "person": 0}
    assert published["edgewatch/gate/alert"] == b"OFF"


def test_objects_plate_and_snapshot_follow_the_events() -> None:
    ha = HomeAssistant(
        HomeAssistantOptions(enabled=True, object_labels=["car"], base_url="http://edge:9108"),
        "edgewatch",
        ["gate"],
        control=False,
    )
    ha.start()
    first = dict(ha.on_message(event("new", 1, crop=True)))
    assert json.loads(first["edgewatch/gate/objects"]) == {"car": 1}
    jpeg = cv2.imdecode(np.frombuffer(first["edgewatch/gate/snapshot"], np.uint8), cv2.IMREAD_COLOR)
    assert jpeg is not None and jpeg.shape == (40, 60, 3)
    assert json.loads(dict(ha.on_message(event("new", 2, label="bus")))["edgewatch/gate/objects"]) == {
        "car": 1,
        "bus": 1,
    }
    update = dict(ha.on_message(event("update", 1, text="XY34ZQW")))
    assert set(update) == {"edgewatch/gate/plate"}  # nothing else changed
    assert json.loads(update["edgewatch/gate/plate"]) == {
        "plate": "XY34ZQW",
        "known_name": "stolen",
        "known_list": "deny",
        "agreement": 0.9,
        "event_id": "gate-1-1",
        "label": "car",
        "timestamp": "2026-12-04T15:00:00.000Z",
        "snapshot_url": "http://edge:9108/api/events/gate-1-1/snapshot.jpg",
    }
    assert ha.on_message(event("update", 1, text="XY34ZQW")) == []  # the same plate again: nothing
    ended = dict(ha.on_message(event("end", 1, text="XY34ZQW")))
    assert json.loads(ended["edgewatch/gate/objects"]) == {"car": 0, "bus": 1}


def test_alert_sensor_is_on_while_an_alert_is_raised() -> None:
    ha = HomeAssistant(ON, "edgewatch", ["gate"], control=False)
    ha.start()
    assert ha.on_message(alert("raised")) == [("edgewatch/gate/alert", b"ON")]
    assert ha.on_message(alert("raised", "gate-2-1/plate/deny/stolen")) == []  # already on
    assert ha.on_message(alert("ended")) == []  # the other one is still raised
    assert ha.on_message(alert("retracted", "gate-2-1/plate/deny/stolen")) == [("edgewatch/gate/alert", b"OFF")]


def test_new_camera_is_announced_and_removed_one_cleared() -> None:
    ha = HomeAssistant(ON, "edgewatch", ["gate"], control=True)
    start = configs(ha.start())
    control = Message("control", "yard", {"camera": "yard", "detect": "ON", "enabled": "ON"})
    announced = configs(ha.on_message(control))
    assert announced and all("/yard_" in t for t in announced)
    removals = ha.discovery_removals("yard")
    assert {t for t, _ in removals} >= set(announced) and all(p == b"" for _, p in removals)
    assert {"edgewatch/yard/plate", "edgewatch/yard/alert", "edgewatch/yard/objects"} <= {t for t, _ in removals}
    assert not {t for t, _ in removals} & set(start)  # the other camera and the daemon keep theirs
    assert ha.on_message(Message("control", "yard", {"camera": "yard", "removed": True})) == []
    assert "yard" not in ha.cameras


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base_url": "http://edge:9108/"}, "base_url"),
        ({"node_id": "my node"}, "node_id"),
        ({"discovery_prefix": "ha/#"}, "discovery_prefix"),
        ({"enable": True}, "enable"),
    ],
)
def test_options_name_the_bad_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HomeAssistantOptions.model_validate(fields)
