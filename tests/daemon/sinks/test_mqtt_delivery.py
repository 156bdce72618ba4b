"""MQTT durable delivery without a broker: spool options, which messages are spooled, ack tracking, persistence."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTErrorCode
from pydantic import ValidationError

from daemon.frames import Message, current_run
from daemon.service.stats import SinkStats
from daemon.sinks.base import SinkContext
from daemon.sinks.mqtt import MqttOptions, MqttSink
from daemon.sinks.mqtt_delivery import AckTracker, Handed, SpoolSender
from daemon.sinks.spool import Spool, SpoolError
from tests.fixtures.mosquitto import free_port


def options(**fields: Any) -> MqttOptions:
    return MqttOptions.model_validate({"id": "mqtt", "type": "mqtt", "host": "127.0.0.1", "port": free_port(),
                                       "close_timeout_s": 0.1, **fields})


def context(state_dir: Path) -> SinkContext:
    return SinkContext(pipeline="plates", source_ids=("cam1", "cam2"), state_dir=str(state_dir))


@pytest.mark.parametrize(
    ("fields", "kind", "durable"),
    [
        ({}, "result", True),
        ({}, "event", True),
        ({}, "status", False),  # retained state: only the latest value matters
        ({}, "stats", False),
        ({"qos": 2}, "result", True),
        ({"qos_by_kind": {"result": 0}}, "result", False),  # QoS 0 promises nothing, so nothing is kept
        ({"qos_by_kind": {"result": 0}}, "event", True),
        ({"retain_results": True}, "result", True),
        ({"spool": {"enabled": False}}, "result", False),
        ({"spool": {"enabled": False}}, "event", False),
    ],
)
def test_which_messages_are_spooled(tmp_path: Path, fields: dict[str, Any], kind: str, durable: bool) -> None:
    out = MqttSink(options(**fields), context(tmp_path)).encode(Message(kind, "cam1", {"seq": 1}))
    assert out.durable is durable
    assert out.source_id == "cam1"


@pytest.mark.parametrize(
    ("spool", "message"),
    [
        ({"max_bytes": 100}, "greater than or equal to 4096"),
        ({"max_age_s": 0}, "greater than 0"),
        ({"synchronous": "OFF"}, "NORMAL"),
        ({"enable": True}, "enable"),
    ],
)
def test_invalid_spool_options_say_what_is_wrong(spool: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        options(spool=spool)


def test_spool_defaults_and_path(tmp_path: Path) -> None:
    opts = options()
    assert (opts.spool.enabled, opts.spool.max_bytes, opts.spool.max_age_s, opts.spool.synchronous) == (
        True, 256 * 1024 * 1024, 86400.0, "NORMAL")
    assert MqttSink(opts, context(tmp_path)).spool_path == tmp_path / "mqtt.spool.db"
    custom = tmp_path / "elsewhere" / "q.db"
    assert MqttSink(options(spool={"path": str(custom)}), context(tmp_path)).spool_path == custom


def test_offline_publish_spools_durably_and_a_restart_finds_it(tmp_path: Path) -> None:
    """No broker: publish() of results and events never raises; after close, the rows are still on disk."""
    stats = SinkStats("mqtt")
    sink = MqttSink(options(), context(tmp_path))
    sink.attach_stats(stats)
    sink.start()
    try:
        for seq in range(5):
            sink.publish(Message("result", f"cam{seq % 2 + 1}", {"seq": seq}))
        sink.publish(Message("event", "cam1", {"event": "enter"}))
        sink.publish(Message("status", "cam1", {"state": "streaming"}))  # retained path, not spooled
        assert sink.connected is False
        assert sink.pending == 6
        assert (stats.spooling, stats.spool_depth) == (True, 6)
        assert stats.spool_bytes > 6 * len("edgewatch/cam1/results")
    finally:
        sink.close()
    assert stats.spooling is False
    spool = Spool(tmp_path / "mqtt.spool.db", max_bytes=1_000_000)
    try:
        rows = spool.peek(10)
    finally:
        spool.close()
    assert [(r.topic, r.payload, r.qos, r.source_id) for r in rows] == [
        *[(f"edgewatch/cam{s % 2 + 1}/results", f'{{"run":"{current_run()}","seq":{s}}}'.encode(), 1, f"cam{s % 2 + 1}")
              for s in range(5)],
        ("edgewatch/cam1/events", f'{{"run":"{current_run()}","event":"enter"}}'.encode(), 1, "cam1"),
    ]


def test_two_sinks_on_one_spool_are_refused(tmp_path: Path) -> None:
    first = MqttSink(options(), context(tmp_path))
    first.start()
    try:
        second = MqttSink(options(), context(tmp_path))
        with pytest.raises(SpoolError, match="in use by another process"):
            second.start()
    finally:
        first.close()


def test_ack_tracker_pairs_acks_with_mids_in_either_order() -> None:
    tracker = AckTracker()
    assert tracker.register(1, Handed(1, 10, generation=1)) is True
    assert tracker.register(2, Handed(1, None)) is True
    assert (tracker.count(spooled=True), tracker.count(spooled=False)) == (1, 1)
    assert tracker.acked(1) == Handed(1, 10, generation=1)
    assert tracker.acked(7) is None  # the ack overtook publish()'s return ...
    assert tracker.register(7, Handed(2, 11)) is False  # ... and is claimed by the registration
    assert tracker.register(7, Handed(2, 12)) is True  # claimed once only: a reused mid waits for its own ack
    assert tracker.is_pending(7) and tracker.is_pending(2) and not tracker.is_pending(1)


def test_ack_tracker_forgets_qos0_on_disconnect_and_knows_older_generations() -> None:
    tracker = AckTracker()
    tracker.register(1, Handed(0, None))
    tracker.register(2, Handed(1, None))
    tracker.register(3, Handed(1, 30, generation=1))
    tracker.register(4, Handed(1, 31, generation=2))
    tracker.forget_qos0()  # paho never acknowledges unsent QoS 0 packets it dropped with the connection
    assert not tracker.is_pending(1) and tracker.is_pending(2)
    assert tracker.spooled_from_before(2) is True  # row 30 was in flight when connection 1 broke
    tracker.acked(3)
    assert tracker.spooled_from_before(2) is False
    assert tracker.spooled_from_before(3) is True


class FakeClient:
    """paho's publish() contract: a fresh mid per call, an MQTTMessageInfo with rc; acks come separately.

    ack_inside=True acknowledges each message before publish() returns, as paho's network thread can.
    """

    def __init__(self, tracker: AckTracker, ack_inside: bool = False) -> None:
        self.tracker = tracker
        self.ack_inside = ack_inside
        self.sent: list[tuple[int, bytes]] = []  # (mid, payload)
        self.sender: SpoolSender | None = None
        self._lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> mqtt.MQTTMessageInfo:
        with self._lock:
            mid = len(self.sent) + 1
            self.sent.append((mid, payload))
        info = mqtt.MQTTMessageInfo(mid)
        info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if self.ack_inside:
            self.ack(mid)
        return info

    def ack(self, mid: int) -> None:
        """What MqttSink._on_publish does."""
        handed = self.tracker.acked(mid)
        if handed is not None and handed.spool_id is not None and self.sender is not None:
            self.sender.on_delivered(handed.spool_id)

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [payload for _mid, payload in self.sent]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def sender_parts(tmp_path: Path) -> Iterator[Callable[..., tuple[Spool, FakeClient, SpoolSender]]]:
    made: list[tuple[Spool, SpoolSender]] = []

    def make(window: int, ack_inside: bool = False) -> tuple[Spool, FakeClient, SpoolSender]:
        spool = Spool(tmp_path / f"s{len(made)}.db", max_bytes=1_000_000)
        tracker = AckTracker()
        client = FakeClient(tracker, ack_inside)
        sender = SpoolSender(spool, cast(mqtt.Client, client), tracker, window, "test")
        client.sender = sender
        made.append((spool, sender))
        sender.start()
        return spool, client, sender

    yield make
    for spool, sender in made:
        sender.stop()
        spool.close()


def append(spool: Spool, sender: SpoolSender, *payloads: bytes) -> None:
    for payload in payloads:
        spool.append("edgewatch/cam1/results", payload, 1, False, "cam1")
        sender.appended()


def test_sender_keeps_a_window_and_waits_for_rows_in_flight_before_a_reconnection(
    sender_parts: Callable[..., tuple[Spool, FakeClient, SpoolSender]],
) -> None:
    spool, client, sender = sender_parts(window=3)
    append(spool, sender, b"1", b"2", b"3", b"4", b"5")
    sender.on_connect()
    wait_until(lambda: client.payloads() == [b"1", b"2", b"3"])  # the window is full
    client.ack(1)
    wait_until(lambda: client.payloads() == [b"1", b"2", b"3", b"4"])
    assert spool.pending_count() == 4 and sender.delivered == 1
    sender.on_disconnect()  # paho keeps 2, 3, 4 and re-sends them itself on reconnection ...
    sender.on_connect()
    append(spool, sender, b"6")
    client.ack(2)
    client.ack(3)
    time.sleep(0.3)
    assert client.payloads()[4:] == []  # ... so 5 must not overtake 4, which is still unacknowledged
    client.ack(4)
    wait_until(lambda: client.payloads()[4:] == [b"5", b"6"])
    client.ack(5)
    client.ack(6)
    wait_until(lambda: spool.pending_count() == 0)
    assert sender.delivered == 6


def test_sender_handles_acks_that_overtake_publish(
    sender_parts: Callable[..., tuple[Spool, FakeClient, SpoolSender]],
) -> None:
    spool, client, sender = sender_parts(window=2, ack_inside=True)
    sender.on_connect()
    append(spool, sender, *[str(i).encode() for i in range(10)])
    wait_until(lambda: spool.pending_count() == 0)
    assert client.payloads() == [str(i).encode() for i in range(10)]
    assert sender.delivered == 10 and sender.tracker.count(spooled=True) == 0
