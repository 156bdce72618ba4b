"""Alerts on a real mosquitto and in JSONL: a deny-listed plate on the rendered plates video alerts at its first
matching read, before its track's vote settles, on <prefix>/<camera>/alerts and <prefix>/alerts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.plates_daemon import plates_config, run_to_end

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STOLEN = {"name": "stolen", "plates": ["XY34ZQW"], "allow": False}  # the third car of tests/fixtures/plates_video.py


def with_known(config: Path, known: list[dict[str, Any]]) -> Path:
    """The plates config with a known list in its consensus, settling only on a text in the UK format (as
    configs/vehicle-plates-tracked.yaml does), and known plates matched within 2 edits: the third car's plate is
    read as 34ZQW for a few frames while the post hides its start, and that read alone already alerts."""
    spec = yaml.safe_load(config.read_text())
    consensus = spec["pipeline"]["tracking"]["schedule"]["consensus"]
    consensus.update(known=known, known_max_distance=2, settle_requires_format=True)
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    return config


def test_alert_arrives_before_the_track_settles(mosquitto: Mosquitto, models_dir: Path, tmp_path: Path) -> None:
    seen = mosquitto.subscribe("edgewatch/#")
    sinks: list[dict[str, Any]] = [
        {"id": "broker", "type": "mqtt", "host": mosquitto.host, "port": mosquitto.port},
        {"id": "lines", "type": "jsonl", "path": str(tmp_path / "out.jsonl"), "kinds": ["alert", "event"]},
    ]
    run_to_end(with_known(plates_config(tmp_path, models_dir, sinks, publish_results=False), [STOLEN]))
    seen.wait_for(lambda m: m.topic == "edgewatch/availability" and m.text == "offline")

    alerts = [m.json() for m in seen.on("edgewatch/street/alerts")]
    raised = [a for a in alerts if a["state"] == "raised"]
    assert len(raised) == 1, alerts  # one per track and entry, however many reads match
    alert = raised[0]
    assert alert["source_id"] == "street" and alert["known"]["name"] == "stolen" and alert["known"]["list"] == "deny"
    assert alert["plate"] and alert["known"]["distance"] <= 2 and 0 < alert["confidence"] <= 1
    assert alert["settled"] is False and alert["snapshot_url"] is None  # no events sink served over http: here
    assert [m.json() for m in seen.on("edgewatch/alerts")] == alerts  # every camera's alerts on one topic too

    # the same track's events: its plate settles on a later frame than the alert fired on
    events = [m.json() for m in seen.on("edgewatch/street/events") if m.json()["event_id"] == alert["event_id"]]
    settled = [e for e in events if e["stages"].get("plate", {}).get("settled")]
    assert settled and settled[0]["known"] == {"name": "stolen", "list": "deny"}
    assert alert["seq"] < settled[0]["seq"], (alert["seq"], [(e["type"], e["seq"]) for e in events])
    assert events[-1]["type"] == "end" and events[-1]["known"] == {"name": "stolen", "list": "deny"}
    assert alerts[-1]["state"] == "ended" and alerts[-1]["alert_id"] == alert["alert_id"]
    # and the subscriber gets it first: one connection keeps the order of what it publishes
    street = [
        (m.topic, m.json())
        for m in seen.messages
        if m.topic.startswith("edgewatch/street/") and m.topic.endswith(("/alerts", "/events"))
    ]
    alert_at = street.index(("edgewatch/street/alerts", alert))
    settled_at = street.index(("edgewatch/street/events", settled[0]))
    assert alert_at < settled_at

    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line for line in lines if line["kind"] == "alert"] == [{"kind": "alert", **a} for a in alerts]
