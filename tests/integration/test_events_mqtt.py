"""Track events on a real mosquitto broker: per track new -> update* -> end, QoS 1, per-frame results off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.plates_daemon import plates_config, run_to_end
from tests.fixtures.plates_video import CARS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_events_arrive_in_order_per_track_and_results_stay_off(
    mosquitto: Mosquitto, models_dir: Path, tmp_path: Path
) -> None:
    seen = mosquitto.subscribe("edgewatch/#")
    sink = {"id": "broker", "type": "mqtt", "host": mosquitto.host, "port": mosquitto.port}
    # frames 0-59: the first two cars cross the picture, the third only begins to enter it
    run_to_end(plates_config(tmp_path, models_dir, [sink], stop_frame=60, publish_results=False))
    state = seen.wait_for(lambda m: m.topic == "edgewatch/street/status" and m.json()["state"] == "ended")
    assert state.retain
    # the sink says "offline" last, after every event was acknowledged; the broker keeps the order
    seen.wait_for(lambda m: m.topic == "edgewatch/availability" and m.text == "offline")
    messages = seen.on("edgewatch/street/events")
    by_track: dict[int, list[str]] = {}
    for message in messages:
        assert message.qos == 1 and not message.retain
        event = message.json()
        assert event["source_id"] == "street" and event["pipeline"] == "plates-tracked"
        by_track.setdefault(event["track_id"], []).append(event["type"])
    ends = [m.json() for m in messages if m.json()["type"] == "end"]
    assert len(ends) == len(by_track) >= 2
    assert all(types[0] == "new" and types[-1] == "end" and set(types[1:-1]) <= {"update"}
               for types in by_track.values()), by_track
    assert {car.text for car in CARS[:2]} <= {e["stages"]["plate"]["text"] for e in ends}
    assert not seen.on("edgewatch/street/results")  # publish_results: false
    assert all(json.loads(m.payload)["type"] in ("new", "update", "end") for m in messages)
