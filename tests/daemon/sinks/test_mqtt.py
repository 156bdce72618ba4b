"""MQTT sink without a broker: options checks, topics, encoding, and behaviour while the broker is unreachable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.frames import Message, current_run
from daemon.sinks.base import SinkContext
from daemon.sinks.mqtt import MqttNotConnected, MqttOptions, MqttQueueFull, MqttSink
from tests.fixtures.mosquitto import free_port

CONTEXT = SinkContext(pipeline="plates", source_ids=("cam1",), state_dir="/tmp")
SECRET = "pa55-not-for-logs"


def options(**fields: Any) -> MqttOptions:
    return MqttOptions.model_validate({"id": "mqtt", "type": "mqtt", **fields})


@pytest.mark.parametrize(
    ("prefix", "kind", "source_id", "topic"),
    [
        ("edgewatch", "status", "cam1", "edgewatch/cam1/status"),
        ("edgewatch", "result", "cam1", "edgewatch/cam1/results"),
        ("edgewatch", "event", "cam1", "edgewatch/cam1/events"),
        ("edgewatch", "stats", None, "edgewatch/stats"),
        ("site/gate-2", "result", "lane.1", "site/gate-2/lane.1/results"),
    ],
)
def test_topics(prefix: str, kind: str, source_id: str | None, topic: str) -> None:
    sink = MqttSink(options(topic_prefix=prefix), CONTEXT)
    assert sink.topic_for(Message(kind, source_id, {})) == topic
    assert sink.availability_topic == f"{prefix}/availability"


@pytest.mark.parametrize(
    ("fields", "kind", "qos", "retain"),
    [
        ({}, "result", 1, False),
        ({}, "status", 1, True),
        ({}, "event", 1, False),
        ({}, "stats", 1, True),
        ({"retain_results": True}, "result", 1, True),
        ({"qos": 2, "qos_by_kind": {"result": 0}}, "result", 0, False),
        ({"qos": 2, "qos_by_kind": {"result": 0}}, "event", 2, False),
    ],
)
def test_encoding_qos_and_retain(fields: dict[str, Any], kind: str, qos: int, retain: bool) -> None:
    out = MqttSink(options(**fields), CONTEXT).encode(Message(kind, "cam1", {"seq": 3, "text": "Ö1"}))
    assert (out.qos, out.retain) == (qos, retain)
    assert out.payload == f'{{"run":"{current_run()}","seq":3,"text":"Ö1"}}'.encode()  # run: daemon/frames.py
    assert json.loads(out.payload) == {"run": current_run(), "seq": 3, "text": "Ö1"}


@pytest.mark.parametrize("kind", ["result", "status", "event"])
def test_per_source_kinds_need_a_source(kind: str) -> None:
    with pytest.raises(ValueError, match="without a source_id"):
        MqttSink(options(), CONTEXT).encode(Message(kind, None, {}))


def test_defaults() -> None:
    sink = MqttSink(options(), CONTEXT)
    assert sink.broker == "localhost:1883"
    assert sink.client_id.startswith("edgewatch-") and sink.client_id.endswith("-plates")
    assert MqttSink(options(tls={}), CONTEXT).port == 8883


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tls": {"ca_file": "/nonexistent/ca.crt"}}, "tls.ca_file: expected an existing file, got '/nonexistent/ca"),
        ({"tls": {"cert_file": "/nonexistent/c.crt", "key_file": "/nonexistent/c.key"}}, "tls.cert_file"),
        ({"password": "x"}, "username is not"),
        ({"topic_prefix": "edge/#"}, "topic_prefix"),
        ({"topic_prefix": "edge/"}, "topic_prefix"),
        ({"qos": 3}, "qos"),
        ({"qos_by_kind": {"results": 0}}, "qos_by_kind"),
        ({"reconnect_min_s": 10, "reconnect_max_s": 5}, "must not exceed"),
        ({"hots": "typo"}, "hots"),
    ],
)
def test_invalid_options_say_what_is_wrong(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        options(**fields)


def test_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.crt"
    cert.write_text("not checked here")
    with pytest.raises(ValidationError, match="go together"):
        options(tls={"cert_file": str(cert)})


def test_password_stays_out_of_reprs_and_dumps() -> None:
    opts = options(username="edge", password=SECRET)
    for text in (repr(opts), str(opts), opts.model_dump_json(), str(opts.model_dump())):
        assert SECRET not in text


def test_offline_broker_never_raises_at_start_and_failures_are_specific() -> None:
    """Nothing listens on the port: start() returns, QoS 0 fails, QoS 1 waits in memory up to the bound."""
    sink = MqttSink(options(host="127.0.0.1", port=free_port(), max_queued_messages=2, close_timeout_s=0.1,
                            qos_by_kind={"result": 0}, spool={"enabled": False}), CONTEXT)
    sink.start()
    try:
        assert sink.connected is False
        with pytest.raises(MqttNotConnected, match=r"127\.0\.0\.1:\d+ not connected; QoS 0 message"):
            sink.publish(Message("result", "cam1", {"seq": 1}))
        sink.publish(Message("event", "cam1", {"n": 1}))
        sink.publish(Message("event", "cam1", {"n": 2}))
        assert sink.pending == 2
        with pytest.raises(MqttQueueFull, match="max_queued_messages"):
            sink.publish(Message("event", "cam1", {"n": 3}))
        for state in ("connecting", "failed", "streaming"):  # retained: kept for the connection, never refused
            sink.publish(Message("status", "cam1", {"state": state}))
        sink.publish(Message("stats", None, {"fps": 0.0}))
    finally:
        sink.close()
    assert sink.connected is False
