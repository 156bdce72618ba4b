"""Durable MQTT delivery against real mosquitto: outages, broker crashes, a SIGKILLed publisher, spool limits."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.fanout import Fanout
from daemon.frames import Message
from daemon.service.health import sink_check
from daemon.service.stats import Stats
from daemon.sinks.base import SinkContext
from daemon.sinks.encode import to_json
from daemon.sinks.mqtt import MqttOptions, MqttSink
from daemon.sinks.mqtt_delivery import ENFORCE_EVERY_S
from tests.fixtures.durable_mqtt import PersistentMosquitto, durable_subscribe
from tests.fixtures.mosquitto import Collector, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("cam1", "cam2")


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


def result(seq: int) -> Message:
    source = SOURCES[seq % len(SOURCES)]
    return Message("result", source, {"source_id": source, "seq": seq, "pad": "x" * 40})


def seqs_by_source(seen: Collector) -> dict[str, list[int]]:
    """Sequence numbers per source in arrival order, duplicates (at-least-once re-sends) included."""
    out: dict[str, list[int]] = {s: [] for s in SOURCES}
    for message in list(seen.messages):
        if message.topic.endswith("/results"):
            body = message.json()
            out[body["source_id"]].append(body["seq"])
    return out


def assert_all_in_order(seen: Collector, total: int) -> None:
    """Every seq arrived, and per source the first arrivals are in publishing order (re-sends may repeat)."""
    for source, seqs in seqs_by_source(seen).items():
        expected = [s for s in range(total) if SOURCES[s % len(SOURCES)] == source]
        first_seen = list(dict.fromkeys(seqs))
        assert first_seen == expected, f"{source}: got {first_seen[:20]}..., expected {expected[:20]}..."


def wait_for_all(seen: Collector, total: int, timeout: float = 30.0) -> None:
    wait_until(lambda: sum(len(set(v)) for v in seqs_by_source(seen).values()) >= total, timeout,
               f"{total} distinct results at the subscriber")


@pytest.fixture
def brokers() -> Iterator[Callable[..., PersistentMosquitto]]:
    made: list[PersistentMosquitto] = []

    def make(port: int | None = None, start: bool = True) -> PersistentMosquitto:
        broker = PersistentMosquitto(port=port)
        made.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[Callable[..., MqttSink]]:
    made: list[MqttSink] = []

    def make(port: int, state: str = "state", **fields: Any) -> MqttSink:
        opts = MqttOptions.model_validate({"id": "mqtt", "type": "mqtt", "host": "127.0.0.1", "port": port,
                                           "reconnect_min_s": 1, "reconnect_max_s": 1, **fields})
        sink = MqttSink(opts, SinkContext("plates", SOURCES, str(tmp_path / state)))
        made.append(sink)
        sink.start()
        return sink

    yield make
    for sink in made:
        sink.close()


@pytest.mark.parametrize(("outage", "qos", "max_inflight"), [
    ("late_broker", 1, 20),
    ("stopped", 1, 20),
    ("stopped", 2, 3),
    ("crashed_in_flight", 1, 20),
    ("crashed_in_flight", 2, 5),
])
def test_every_result_arrives_in_order_across_an_outage(
    brokers: Callable[..., PersistentMosquitto], sinks: Callable[..., MqttSink], outage: str, qos: int,
    max_inflight: int,
) -> None:
    """Results before, during and after the outage all reach the subscriber, in order per source.

    late_broker: the sink starts while the broker is down. stopped: a clean broker stop. crashed_in_flight:
    the broker hangs (SIGSTOP) with results written to it but unacknowledged, then dies (SIGKILL).
    """
    port = free_port()
    broker = brokers(port)
    seen = durable_subscribe(broker, "edgewatch/#")  # its session (and queue) survives broker restarts
    if outage == "late_broker":
        broker.stop()
    sink = sinks(port, qos=qos, max_inflight=max_inflight)
    numbers = list(range(60, 150))
    if outage != "late_broker":
        wait_until(lambda: sink.connected)
        for seq in range(40):
            sink.publish(result(seq))
        wait_for_all(seen, 40)  # in the subscriber's hands, so a broker crash cannot take them
        numbers = list(range(40)) + numbers
        if outage == "stopped":
            broker.stop()
        else:
            broker.save()
            broker.pause()  # PUBLISHes are written but no PUBACK comes back ...
            for seq in range(40, 60):
                sink.publish(result(seq))
            numbers = list(range(60)) + numbers[40:]
            time.sleep(0.5)
            broker.kill()  # ... and the broker dies with them unacknowledged
        wait_until(lambda: not sink.connected)
    for seq in range(60, 120):  # broker down: publish() must neither raise nor block
        sink.publish(result(seq))
    assert sink.spool is not None and sink.spool.pending_count() >= 60
    broker.start()
    wait_until(lambda: sink.connected)
    for seq in range(120, 150):
        sink.publish(result(seq))
    wait_for_all(seen, len(numbers))
    wait_until(lambda: sink.pending == 0, what="an empty spool")
    for source, got in seqs_by_source(seen).items():
        assert list(dict.fromkeys(got)) == [s for s in numbers if SOURCES[s % 2] == source], source


_PUBLISHER = """
import sys, time
from daemon.frames import Message
from daemon.sinks.base import SinkContext
from daemon.sinks.mqtt import MqttOptions, MqttSink
port, state_dir, count, connect = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "connect"
sink = MqttSink(MqttOptions(id="mqtt", type="mqtt", host="127.0.0.1", port=port, max_inflight=10),
                SinkContext("plates", ("cam1", "cam2"), state_dir))
sink.start()
if connect:
    while not sink.connected:
        time.sleep(0.01)
    print("connected", flush=True)
    sys.stdin.readline()
for seq in range(count):
    source = ("cam1", "cam2")[seq % 2]
    sink.publish(Message("result", source, {"source_id": source, "seq": seq}))
while connect and sink.sender.sent < 10:  # the window is on the wire, unacknowledged
    time.sleep(0.01)
print("spooled", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("when", ["broker_down", "in_flight"])
def test_spooled_results_survive_sigkill_of_the_publisher(
    brokers: Callable[..., PersistentMosquitto], sinks: Callable[..., MqttSink], tmp_path: Path, when: str
) -> None:
    """The publisher is SIGKILLed while the broker is down (broker_down), or while its window is written to a
    hung broker that then dies (in_flight): the next process on the same state_dir delivers every result."""
    port = free_port()
    broker = brokers(port)
    seen = durable_subscribe(broker, "edgewatch/#")
    if when == "broker_down":
        broker.stop()
    connect = "connect" if when == "in_flight" else "no"
    command = [sys.executable, "-c", _PUBLISHER, str(port), str(tmp_path / "state"), "200", connect]
    with subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            if when == "in_flight":
                assert child.stdout.readline() == b"connected\n"
                broker.save()
                broker.pause()
                child.stdin.write(b"go\n")
                child.stdin.flush()
            assert child.stdout.readline() == b"spooled\n"
        finally:
            child.send_signal(signal.SIGKILL)  # no close(), no checkpoint: only the WAL holds the rows
            child.wait(10)
    if when == "in_flight":
        broker.kill()  # what the hung broker had read of the window dies with it
    assert seqs_by_source(seen) == {"cam1": [], "cam2": []}
    broker.start()
    sink = sinks(port)
    wait_for_all(seen, 200)
    assert_all_in_order(seen, 200)
    wait_until(lambda: sink.pending == 0, what="an empty spool")


def spooling_fanout(port: int, state_dir: Path, spool: dict[str, Any]) -> tuple[Fanout, Stats]:
    opts = MqttOptions.model_validate({"id": "mqtt", "type": "mqtt", "host": "127.0.0.1", "port": port,
                                       "reconnect_min_s": 1, "reconnect_max_s": 1, "spool": spool})
    stats = Stats()
    fanout = Fanout([MqttSink(opts, SinkContext("plates", SOURCES, str(state_dir)))], stats, warn_every_s=0.1)
    fanout.start()
    return fanout, stats


def test_size_limit_drops_the_oldest_counts_and_logs_it(
    brokers: Callable[..., PersistentMosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A long outage: the spool keeps the newest messages within max_bytes; the rest is counted and logged."""
    port = free_port()
    broker = brokers(port)
    seen = durable_subscribe(broker, "edgewatch/#")
    broker.stop()
    row = len("edgewatch/cam1/results") + len(to_json(result(50).payload))
    fanout, stats = spooling_fanout(port, tmp_path, {"max_bytes": 50 * row})
    try:
        for seq in range(150):
            fanout.submit(result(seq))
        sink_stats = stats.sinks["mqtt"]
        wait_until(lambda: sink_stats.spool_depth + sink_stats.spool_dropped == 150, what="150 into the spool")
        assert sink_stats.published == 0  # published counts what the broker acknowledged: nothing yet
        assert sink_stats.failed == 0 and 0 < sink_stats.spool_bytes <= 50 * row
        assert sink_stats.spool_depth + sink_stats.spool_dropped == 150 and sink_stats.spool_dropped >= 100
        check = sink_check(sink_stats)
        assert check.healthy and f"spooling {sink_stats.spool_depth} message(s)" in check.reason
        assert "(max_bytes limit" in caplog.text and "dropped the" in caplog.text
        kept = sink_stats.spool_depth
        broker.start()
        wait_until(lambda: sink_stats.spool_depth == 0, what="an empty spool")
        assert sink_stats.published == kept  # every acknowledged row, once
        wait_for_all(seen, kept)
        got = sorted(s for v in seqs_by_source(seen).values() for s in set(v))
        assert got == list(range(150 - kept, 150))  # exactly the newest survived
    finally:
        fanout.close()


def test_age_limit_drops_stale_messages_during_a_quiet_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing is appended after the burst: the sender's periodic check still ages the messages out."""
    fanout, stats = spooling_fanout(free_port(), tmp_path, {"max_age_s": 1.0})
    try:
        for seq in range(50):
            fanout.submit(result(seq))
        sink_stats = stats.sinks["mqtt"]
        wait_until(lambda: sink_stats.spool_depth + sink_stats.spool_dropped == 50, what="50 into the spool")
        wait_until(lambda: sink_stats.spool_dropped == 50, timeout=ENFORCE_EVERY_S + 5, what="50 aged out")
        assert sink_stats.published == 0
        assert sink_stats.spool_depth == 0 and sink_stats.spool_bytes == 0
        assert "(max_age limit 1.0 s)" in caplog.text
    finally:
        fanout.close()


def test_without_the_spool_an_offline_sink_is_unhealthy(tmp_path: Path) -> None:
    opts = MqttOptions.model_validate({"id": "mqtt", "type": "mqtt", "host": "127.0.0.1", "port": free_port(),
                                       "spool": {"enabled": False}})
    stats = Stats()
    sink = MqttSink(opts, SinkContext("plates", SOURCES, str(tmp_path)))
    fanout = Fanout([sink], stats)
    fanout.start()
    try:
        fanout.submit(result(1))
        wait_until(lambda: sink.pending == 1)  # held by paho in memory, unacknowledged
        assert stats.sinks["mqtt"].published == 0 and stats.sinks["mqtt"].failed == 0
        assert not sink_check(stats.sinks["mqtt"]).healthy
        assert not list(tmp_path.iterdir())  # nothing written to disk
    finally:
        fanout.close(timeout=3)
