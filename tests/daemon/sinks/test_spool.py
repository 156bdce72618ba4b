"""The durable MQTT spool: order, acks, crash survival, size/age limits and two-thread use."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from daemon.service.stats import SinkStats
from daemon.sinks.spool import Spool, SpoolError

ROOT = Path(__file__).resolve().parents[3]


def fill(spool: Spool, n: int, size: int = 90, source: str = "cam") -> list[int]:
    """Append n messages whose topic+payload is `size` bytes (topic 't/cam' is 5 of them)."""
    return [spool.append("t/cam", bytes([i % 256]) * (size - 5), 1, False, source) for i in range(n)]


def test_append_peek_ack_keeps_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=1_000_000)
    ids = [
        spool.append("edgewatch/a/result", b"a1", 1, False, "a"),
        spool.append("edgewatch/b/result", b"b1", 1, False, "b"),
        spool.append("edgewatch/a/status", b"a2", 1, True, "a"),
    ]
    assert ids == sorted(ids)
    rows = spool.peek(10)
    assert [(r.id, r.topic, r.payload, r.qos, r.retain, r.source_id) for r in rows] == [
        (ids[0], "edgewatch/a/result", b"a1", 1, False, "a"),
        (ids[1], "edgewatch/b/result", b"b1", 1, False, "b"),
        (ids[2], "edgewatch/a/status", b"a2", 1, True, "a"),
    ]
    assert [r.id for r in spool.peek(1, after_id=ids[0])] == [ids[1]]  # page past in-flight messages
    assert spool.ack(ids[1]) is True
    assert spool.ack(ids[1]) is False  # a duplicate PUBACK changes nothing
    assert [r.id for r in spool.peek(10)] == [ids[0], ids[2]]
    assert spool.pending_count() == 2
    assert spool.bytes == len("edgewatch/a/result") + 2 + len("edgewatch/a/status") + 2
    spool.close()


def test_ids_are_never_reused_after_the_newest_is_acked(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=10_000)
    first = spool.append("t", b"x", 1, False, None)
    spool.ack(first)
    spool.close()
    spool = Spool(tmp_path / "s.db", max_bytes=10_000)
    assert spool.append("t", b"y", 1, False, None) > first
    spool.close()


def test_pending_messages_survive_close_and_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=100_000)
    ids = fill(spool, 5)
    spool.ack(ids[0])
    spool.close()
    spool = Spool(tmp_path / "s.db", max_bytes=100_000)
    assert [r.id for r in spool.peek(10)] == ids[1:]
    assert (spool.pending_count(), spool.bytes) == (4, 4 * 90)
    spool.close()


WRITER = textwrap.dedent(
    """
    import sys
    from daemon.sinks.spool import Spool
    spool = Spool(sys.argv[1], max_bytes=10_000_000)
    i = 0
    while True:
        message_id = spool.append("edgewatch/cam/result", b'{"seq": %d}' % i, 1, False, "cam")
        if i % 3 == 0:
            spool.ack(message_id)  # some were delivered before the crash
        print(message_id, i % 3 == 0, flush=True)  # printed only after the commit returned
        i += 1
    """
)


def test_everything_committed_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    head = [child.stdout.readline() for _ in range(200)]  # let it commit a while, then kill it mid-stream
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    tail = child.stdout.read()  # what it printed before dying is still in the pipe
    child.stdout.close()
    reported: list[tuple[int, bool]] = []
    for line in ("".join(head) + tail).splitlines(keepends=True):
        if line.endswith("\n"):  # a line cut by the kill reports nothing
            message_id, acked = line.split()
            reported.append((int(message_id), acked == "True"))
    assert child.returncode == -signal.SIGKILL

    spool = Spool(path, max_bytes=10_000_000)  # the lock died with the process
    pending = [r.id for r in spool.peek(100_000)]
    expected = [message_id for message_id, acked in reported if not acked]
    assert pending[: len(expected)] == expected  # every reported append is there, in order
    assert len(pending) - len(expected) <= 1  # plus at most the one committed but not yet printed
    assert all(m not in pending for m, acked in reported if acked)
    spool.close()


def test_size_limit_drops_oldest_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stats = SinkStats("mqtt")
    spool = Spool(tmp_path / "s.db", max_bytes=1000, stats=stats)
    with caplog.at_level(logging.WARNING, logger="daemon.sinks.spool"):
        ids = fill(spool, 15, size=100)
    assert [r.id for r in spool.peek(100)] == ids[5:]
    assert spool.bytes == 1000
    assert spool.dropped == {"max_bytes": 5}
    assert spool.drops == 5
    assert (stats.spool_depth, stats.spool_bytes, stats.spool_dropped, stats.spooling) == (10, 1000, 5, True)
    assert "dropped the 1 oldest undelivered message(s) (max_bytes limit 1000 bytes)" in caplog.text
    spool.close()
    assert stats.spooling is False


def test_age_limit_drops_only_messages_older_than_max_age(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=100_000, max_age_s=60)
    old = spool.append("t", b"old", 1, False, "cam")
    created_old = spool.peek(1)[0].created
    while time.time() <= created_old:  # make the two creation times distinct
        time.sleep(0.001)
    young = spool.append("t", b"young", 1, False, "cam")
    created_young = spool.peek(1, after_id=old)[0].created
    cutoff = (created_old + created_young) / 2
    assert spool.enforce_limits(now=cutoff + 60) == 1
    assert [r.id for r in spool.peek(10)] == [young]
    assert spool.dropped == {"max_age": 1}
    assert spool.enforce_limits(now=created_young + 61) == 1
    assert spool.pending_count() == 0 and spool.bytes == 0
    spool.close()


def test_lower_limit_applies_when_reopened(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=100_000)
    ids = fill(spool, 10, size=100)
    spool.close()
    spool = Spool(tmp_path / "s.db", max_bytes=300)
    assert [r.id for r in spool.peek(100)] == ids[7:]
    assert spool.drops == 7
    spool.close()


def test_ack_of_a_dropped_message_is_harmless(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=200)
    ids = fill(spool, 3, size=100)  # the first is dropped while "in flight"
    assert spool.ack(ids[0]) is False
    assert spool.ack(ids[1]) is True
    assert spool.pending_count() == 1 and spool.bytes == 100
    spool.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_bytes": 0}, "max_bytes must be positive"),
        ({"max_bytes": 100, "synchronous": "OFF"}, "synchronous must be NORMAL or FULL"),
    ],
)
def test_bad_options_are_rejected(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(SpoolError, match=match):
        Spool(tmp_path / "s.db", **kwargs)


def test_message_larger_than_the_spool_is_rejected(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=100)
    with pytest.raises(SpoolError, match="101 bytes, larger than max_bytes 100"):
        spool.append("t", b"x" * 100, 1, False, "cam")
    spool.close()


def test_a_second_daemon_cannot_open_the_same_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=100)
    with pytest.raises(SpoolError, match="in use by another process"):
        Spool(tmp_path / "s.db", max_bytes=100)
    spool.close()
    Spool(tmp_path / "s.db", max_bytes=100).close()


def test_foreign_schema_version_is_refused(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("PRAGMA user_version=7")
    db.close()
    with pytest.raises(SpoolError, match="schema version 7, expected 1"):
        Spool(tmp_path / "s.db", max_bytes=100)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_append_and_ack_from_two_threads(tmp_path: Path, synchronous: str) -> None:
    """The sink thread appends while paho's network thread acks: nothing lost, nothing out of order."""
    spool = Spool(tmp_path / "s.db", max_bytes=10_000_000, synchronous=synchronous)  # type: ignore[arg-type]
    total = 300 if synchronous == "FULL" else 1500
    appended: list[int] = []
    acked: list[int] = []
    done = threading.Event()

    def producer() -> None:
        for i in range(total):
            appended.append(spool.append(f"t/{i % 3}", b"%d" % i, 1, False, f"cam{i % 3}"))
        done.set()

    def consumer() -> None:
        last = 0
        while len(acked) < total:
            rows = spool.peek(50, after_id=last)
            if not rows:
                if done.is_set() and spool.pending_count() == 0:
                    break
                time.sleep(0.001)
            for row in rows:
                assert spool.ack(row.id)
                acked.append(row.id)
                last = row.id

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert acked == appended
    assert spool.pending_count() == 0 and spool.bytes == 0
    spool.close()
