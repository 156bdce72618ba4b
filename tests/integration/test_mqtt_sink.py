"""MQTT sink against real mosquitto: documented topics, availability, Last Will, late broker, restart, auth, TLS."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.frames import Message, current_run
from daemon.sinks.base import SinkContext
from daemon.sinks.mqtt import MqttOptions, MqttSink
from tests.fixtures.mosquitto import Mosquitto, Received, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = SinkContext(pipeline="plates", source_ids=("cam1",), state_dir="/tmp")
PASSWORD = "s3cret-never-logged"
AVAILABILITY = "edgewatch/availability"


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


def body(message: Received) -> Any:
    """The JSON payload without the run id, which daemon/frames.py adds to every message (checked here)."""
    data = message.json()
    assert data.pop("run") == current_run()
    return data


def is_(topic: str, text: str | None = None) -> Callable[[Received], bool]:
    return lambda m: m.topic == topic and (text is None or m.text == text)


@pytest.fixture
def brokers() -> Iterator[Callable[..., Mosquitto]]:
    """Like tests.fixtures.mosquitto.mosquitto_factory (kept local: importing a fixture trips ruff F811)."""
    made: list[Mosquitto] = []

    def make(**options: Any) -> Mosquitto:
        broker = Mosquitto(**options)
        made.append(broker)
        return broker.start()

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[Callable[..., MqttSink]]:
    made: list[MqttSink] = []

    def make(broker: Mosquitto | None = None, **fields: Any) -> MqttSink:
        where = {"host": "127.0.0.1", "port": broker.port} if broker else {}
        context = SinkContext(CONTEXT.pipeline, CONTEXT.source_ids, str(tmp_path / f"state{len(made)}"))  # own spool
        sink = MqttSink(MqttOptions.model_validate({"id": "mqtt", "type": "mqtt", "reconnect_min_s": 1,
                                                    "reconnect_max_s": 2, **where, **fields}), context)
        made.append(sink)
        sink.start()
        return sink

    yield make
    for sink in made:
        sink.close()


@pytest.mark.parametrize(
    ("kind", "source_id", "topic", "retained"),
    [
        ("status", "cam1", "edgewatch/cam1/status", True),
        ("result", "cam1", "edgewatch/cam1/results", False),
        ("event", "cam1", "edgewatch/cam1/events", False),
        ("stats", None, "edgewatch/stats", True),
    ],
)
def test_messages_land_on_the_documented_topics(
    brokers: Callable[..., Mosquitto], sinks: Callable[..., MqttSink], kind: str, source_id: str | None,
    topic: str, retained: bool,
) -> None:
    broker = brokers()
    seen = broker.subscribe("edgewatch/#")
    sink = sinks(broker)
    wait_until(lambda: sink.connected)
    payload = {"source_id": source_id, "seq": 5, "text": "AB·123"}
    sink.publish(Message(kind, source_id, payload))
    got = seen.wait_for(is_(topic))
    assert body(got) == payload and got.retain is retained and got.qos == 1
    sink.close()
    availability = seen.wait_for_count(AVAILABILITY, 2)
    assert [(m.text, m.retain) for m in availability] == [("online", True), ("offline", True)]


def test_retain_results_prefix_and_per_kind_qos(
    brokers: Callable[..., Mosquitto], sinks: Callable[..., MqttSink]
) -> None:
    broker = brokers()
    sink = sinks(broker, topic_prefix="site/gate", retain_results=True, qos_by_kind={"result": 0})
    wait_until(lambda: sink.connected)
    sink.publish(Message("result", "cam1", {"seq": 1}))
    wait_until(lambda: sink.pending == 0)
    late = broker.subscribe("site/#")  # subscribes after the fact: only retained messages arrive
    got = late.wait_for(is_("site/gate/cam1/results"))
    assert (body(got), got.retain, got.qos) == ({"seq": 1}, True, 0)
    assert late.wait_for(is_("site/gate/availability")).text == "online"


def test_last_will_says_offline_when_the_process_dies(brokers: Callable[..., Mosquitto], tmp_path: Path) -> None:
    broker = brokers()
    seen = broker.subscribe(AVAILABILITY)
    script = (
        "import sys, time\n"
        "from daemon.sinks.base import SinkContext\n"
        "from daemon.sinks.mqtt import MqttOptions, MqttSink\n"
        "sink = MqttSink(MqttOptions(id='m', type='mqtt', host='127.0.0.1', port=int(sys.argv[1])),"
        " SinkContext('plates', (), sys.argv[2]))\n"
        "sink.start()\n"
        "while not sink.connected: time.sleep(0.02)\n"
        "print('connected', flush=True)\n"
        "time.sleep(600)\n"
    )
    command = [sys.executable, "-c", script, str(broker.port), str(tmp_path)]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == b"connected\n"
            seen.wait_for(is_(AVAILABILITY, "online"))
        finally:
            child.send_signal(signal.SIGKILL)  # no DISCONNECT packet: only the broker's Last Will can tell
            child.wait(10)
    offline = seen.wait_for(is_(AVAILABILITY, "offline"))
    assert offline.retain
    assert broker.subscribe(AVAILABILITY).wait_for(is_(AVAILABILITY)).text == "offline"  # retained for newcomers


def test_broker_started_after_the_sink(brokers: Callable[..., Mosquitto], sinks: Callable[..., MqttSink]) -> None:
    port = free_port()
    sink = sinks(None, host="127.0.0.1", port=port)  # nothing listens yet: start() must neither raise nor block
    assert not sink.connected
    sink.publish(Message("status", "cam1", {"state": "connecting"}))
    sink.publish(Message("status", "cam1", {"state": "streaming"}))
    sink.publish(Message("event", "cam1", {"n": 1}))  # QoS 1: held in memory until the broker is there
    assert sink.pending == 1
    broker = brokers(port=port)
    wait_until(lambda: sink.connected)
    wait_until(lambda: sink.pending == 0)  # the broker acknowledged the held event
    late = broker.subscribe("edgewatch/#")
    assert body(late.wait_for(is_("edgewatch/cam1/status"))) == {"state": "streaming"}
    assert late.wait_for(is_(AVAILABILITY)).text == "online"


def test_retained_state_is_published_again_after_a_broker_restart(
    brokers: Callable[..., Mosquitto], sinks: Callable[..., MqttSink]
) -> None:
    broker = brokers()
    sink = sinks(broker)
    wait_until(lambda: sink.connected)
    sink.publish(Message("status", "cam1", {"state": "streaming"}))
    sink.publish(Message("stats", None, {"fps": 12.5}))
    wait_until(lambda: sink.pending == 0)
    broker.restart()  # persistence is off: the broker forgets every retained message
    late = broker.subscribe("edgewatch/#")
    assert body(late.wait_for(is_("edgewatch/cam1/status"))) == {"state": "streaming"}
    assert body(late.wait_for(is_("edgewatch/stats"))) == {"fps": 12.5}
    assert late.wait_for(is_(AVAILABILITY)).text == "online"
    assert sink.connected


def test_retained_state_keeps_its_order_across_a_broker_crash(
    brokers: Callable[..., Mosquitto], sinks: Callable[..., MqttSink]
) -> None:
    """A status sent but never acknowledged, then a newer one while offline: the newer one must win."""
    broker = brokers()
    sink = sinks(broker)
    wait_until(lambda: sink.connected and sink.pending == 0)
    broker.pause()
    sink.publish(Message("status", "cam1", {"state": "connecting"}))  # written to the socket, never acknowledged
    broker.kill()
    wait_until(lambda: not sink.connected)
    assert sink.pending == 1
    sink.publish(Message("status", "cam1", {"state": "streaming"}))
    broker.start()
    wait_until(lambda: sink.connected and sink.pending == 0)
    late = broker.subscribe("edgewatch/cam1/status")
    assert body(late.wait_for(is_("edgewatch/cam1/status"))) == {"state": "streaming"}


def test_username_and_password(
    brokers: Callable[..., Mosquitto], sinks: Callable[..., MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # paho's own debug lines included
    broker = brokers(users={"edge": PASSWORD})
    seen = broker.subscribe("edgewatch/#")
    wrong = sinks(broker, username="edge", password="wrong-" + PASSWORD, client_id="wrong")
    right = sinks(broker, username="edge", password=PASSWORD, client_id="right")
    wait_until(lambda: right.connected)
    right.publish(Message("status", "cam1", {"state": "streaming"}))
    assert body(seen.wait_for(is_("edgewatch/cam1/status"))) == {"state": "streaming"}
    wait_until(lambda: "refused the login of user edge" in caplog.text)
    assert not wrong.connected
    assert wrong.login.stats.auth_failed_since is not None and right.login.stats.auth_failed_since is None
    right.close()
    wrong.close()
    assert "127.0.0.1:" in caplog.text and "Sending CONNECT" in caplog.text  # paho's debug lines were captured
    assert PASSWORD not in caplog.text
    assert PASSWORD not in broker.log_text()


@pytest.mark.parametrize("client_certs", [False, True], ids=["server-cert", "mutual-tls"])
def test_tls(brokers: Callable[..., Mosquitto], sinks: Callable[..., MqttSink], client_certs: bool) -> None:
    broker = brokers(tls=True, client_certs=client_certs)
    seen = broker.subscribe("edgewatch/#")
    tls: dict[str, Any] = {"ca_file": broker.ca_file}
    if client_certs:
        tls |= {"cert_file": broker.client_cert_file, "key_file": broker.client_key_file}
    sink = sinks(broker, tls=tls)
    wait_until(lambda: sink.connected)
    sink.publish(Message("result", "cam1", {"seq": 9}))
    assert body(seen.wait_for(is_("edgewatch/cam1/results"))) == {"seq": 9}
    assert "New client connected" in broker.log_text()
