"""Fan-out: routing by kind, isolation of raising and blocking sinks, drop counting, draining, periodic flush."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from daemon.fanout import Fanout
from daemon.frames import Message
from daemon.service.stats import Stats
from daemon.sinks.base import Sink, SinkContext, SinkOptions

CONTEXT = SinkContext(pipeline="demo", source_ids=("cam1",), state_dir="/tmp")
ALL_KINDS = ("result", "status", "event", "stats")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)


def message(seq: int, kind: str = "result") -> Message:
    return Message(kind, None if kind == "stats" else "cam1", {"seq": seq})


class RecordingSink(Sink):
    """Keeps what it is given; follows the Sink contract (publish/flush/close from one thread)."""

    def __init__(self, sink_id: str, queue_size: int = 100, kinds: tuple[str, ...] = ALL_KINDS) -> None:
        options = SinkOptions.model_validate({"id": sink_id, "type": "fake", "queue_size": queue_size,
                                              "kinds": list(kinds)})
        super().__init__(options, CONTEXT)
        self.received: list[Message] = []
        self.flushes = 0
        self.closed = False
        self.started = False

    def start(self) -> None:
        self.started = True

    def publish(self, msg: Message) -> None:
        self.received.append(msg)

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


class RaisingSink(RecordingSink):
    def publish(self, msg: Message) -> None:
        raise RuntimeError(f"broken on purpose at seq {msg.payload['seq']}")


class BlockingSink(RecordingSink):
    """Its first publish never returns (until the test ends and releases it)."""

    def __init__(self, sink_id: str, queue_size: int) -> None:
        super().__init__(sink_id, queue_size)
        self.entered = threading.Event()
        self.release = threading.Event()

    def publish(self, msg: Message) -> None:
        self.entered.set()
        self.release.wait()
        super().publish(msg)


class FailingStartSink(RecordingSink):
    def start(self) -> None:
        raise OSError("no route to the device")


@pytest.fixture
def blocking() -> Iterator[BlockingSink]:
    sink = BlockingSink("blocked", queue_size=2)
    yield sink
    sink.release.set()  # let its daemon thread end with the test


def test_raising_and_blocking_sinks_do_not_hurt_the_others(blocking: BlockingSink) -> None:
    good, raising, stats = RecordingSink("good"), RaisingSink("raising"), Stats()
    fanout = Fanout([good, raising, blocking], stats)
    assert fanout.start() == []
    fanout.submit(message(0))
    assert blocking.entered.wait(10)  # its thread now holds message 0 and never returns

    def submit_the_rest() -> None:
        for seq in range(1, 50):
            fanout.submit(message(seq))

    submitter = threading.Thread(target=submit_the_rest, daemon=True)
    submitter.start()
    submitter.join(10)
    assert not submitter.is_alive(), "submit() blocked on a stuck sink"

    wait_until(lambda: len(good.received) == 50 and stats.sinks["raising"].failed == 50)
    assert [m.payload["seq"] for m in good.received] == list(range(50))
    assert stats.sinks["good"].published == 50
    assert stats.sinks["raising"].published == 0
    assert "broken on purpose" in stats.sinks["raising"].last_error
    assert stats.sinks["blocked"].dropped == 50 - 1 - 2  # one in its hands, two in its queue

    started = time.monotonic()
    assert fanout.close(timeout=0.5) is False
    assert time.monotonic() - started < 5
    assert fanout.unfinished == ["blocked"]
    assert good.closed and raising.closed and not blocking.closed
    assert good.flushes >= 1


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (ALL_KINDS, ["result", "status", "event", "stats"]),
        (("result",), ["result"]),
        (("status", "stats"), ["status", "stats"]),
        (("event",), ["event"]),
    ],
)
def test_routes_only_the_kinds_a_sink_takes(kinds: tuple[str, ...], expected: list[str]) -> None:
    sink = RecordingSink("s", kinds=kinds)
    fanout = Fanout([sink], Stats())
    fanout.start()
    for seq, kind in enumerate(ALL_KINDS):
        fanout.submit(message(seq, kind))
    assert fanout.close(timeout=10)
    assert [m.kind for m in sink.received] == expected


def test_a_sink_that_fails_to_start_is_isolated() -> None:
    bad, good, stats = FailingStartSink("bad"), RecordingSink("good"), Stats()
    fanout = Fanout([bad, good], stats)
    assert fanout.start() == ["bad"]
    assert fanout.failed_to_start == ["bad"]
    fanout.submit(message(1))
    assert fanout.close(timeout=10)
    assert [m.payload["seq"] for m in good.received] == [1]
    assert bad.received == [] and not bad.closed
    assert stats.sinks["bad"].failed == 1
    assert stats.sinks["bad"].last_error == "start failed: OSError: no route to the device"
    assert stats.sinks["bad"].dropped == 1
    assert stats.sinks["bad"].connected is False


def test_close_drains_everything_queued_then_flushes_and_closes() -> None:
    class SlowSink(RecordingSink):
        def publish(self, msg: Message) -> None:
            time.sleep(0.002)
            super().publish(msg)

    sink, stats = SlowSink("slow", queue_size=200), Stats()
    fanout = Fanout([sink], stats)
    fanout.start()
    for seq in range(100):
        fanout.submit(message(seq))
    assert fanout.close(timeout=30)
    assert [m.payload["seq"] for m in sink.received] == list(range(100))
    assert sink.flushes >= 1 and sink.closed
    assert stats.sinks["slow"].published == 100
    assert stats.sinks["slow"].queue_depth == 0
    assert stats.sinks["slow"].dropped == 0


def test_flushes_periodically_without_waiting_for_close() -> None:
    sink = RecordingSink("file")
    fanout = Fanout([sink], Stats(), flush_every_s=0.05)
    fanout.start()
    fanout.submit(message(1))
    wait_until(lambda: sink.flushes >= 1)
    assert not sink.closed
    assert fanout.close(timeout=10)


def test_an_idle_sink_is_still_flushed_periodically() -> None:
    # flush() also does work due by the clock (a JSONL interval flush, a clip whose camera went quiet): it must
    # come when no message does
    sink = RecordingSink("clips")
    fanout = Fanout([sink], Stats(), flush_every_s=0.05)
    fanout.start()
    fanout.submit(message(1))
    wait_until(lambda: sink.flushes >= 1)
    after_last_message = sink.flushes
    wait_until(lambda: sink.flushes >= after_last_message + 3)
    assert not sink.closed
    assert fanout.close(timeout=10)


def test_messages_after_close_are_dropped_and_counted() -> None:
    sink, stats = RecordingSink("s"), Stats()
    fanout = Fanout([sink], stats)
    fanout.start()
    assert fanout.close(timeout=10)
    fanout.submit(message(1))
    assert sink.received == []
    assert stats.sinks["s"].dropped == 1


def test_failure_and_drop_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture, blocking: BlockingSink) -> None:
    raising, stats = RaisingSink("raising"), Stats()
    fanout = Fanout([raising, blocking], stats, warn_every_s=3600)
    fanout.start()
    fanout.submit(message(0))
    assert blocking.entered.wait(10)
    with caplog.at_level(logging.WARNING, logger="daemon.fanout"):
        for seq in range(1, 30):
            fanout.submit(message(seq))
        wait_until(lambda: stats.sinks["raising"].failed == 30)
    failures = [r for r in caplog.records if "raising: publish failed" in r.getMessage()]
    drops = [r for r in caplog.records if "blocked is too slow" in r.getMessage()]
    assert len(failures) == 1 and len(drops) == 1
    assert stats.sinks["blocked"].dropped == 29 - 2
    fanout.close(timeout=0.2)


def test_stats_mirror_the_sink_connection_state() -> None:
    class OfflineSink(RecordingSink):
        @property
        def connected(self) -> bool:
            return False

    online, offline, stats = RecordingSink("online"), OfflineSink("offline"), Stats()
    fanout = Fanout([online, offline], stats)
    fanout.start()
    assert stats.sinks["online"].connected is True
    assert stats.sinks["offline"].connected is False
    assert fanout.close(timeout=10)
    assert stats.sinks["online"].connected is False  # closed


def test_close_without_start_returns_at_once() -> None:
    sink = RecordingSink("s")
    assert Fanout([sink], Stats()).close(timeout=30)
    assert not sink.closed  # it was never started


def test_sink_ids_must_be_unique() -> None:
    with pytest.raises(ValueError, match="repeated: twin"):
        Fanout([RecordingSink("twin"), RecordingSink("twin")], Stats())
