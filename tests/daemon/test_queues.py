"""FrameQueue: the three full-queue policies, their exact drop counts, and close() releasing a blocked put."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from daemon.frames import Frame
from daemon.queues import FrameQueue
from daemon.service.stats import SourceStats
from daemon.sources.base import QueuePolicy

IMAGE = np.zeros((2, 2, 3), np.uint8)


def frame(seq: int) -> Frame:
    return Frame("cam", seq, IMAGE, time.time(), time.monotonic())


def drain(queue: FrameQueue) -> list[int]:
    seqs = []
    while (item := queue.get_nowait()) is not None:
        seqs.append(item.seq)
    return seqs


@pytest.mark.parametrize(
    ("policy", "size", "count", "kept", "dropped", "accepted"),
    [
        ("drop_oldest", 3, 10, [7, 8, 9], 7, 10),
        ("drop_newest", 3, 10, [0, 1, 2], 7, 3),
        ("drop_oldest", 5, 5, [0, 1, 2, 3, 4], 0, 5),
        ("drop_newest", 1, 4, [0], 3, 1),
    ],
)
def test_drop_policies_count_every_drop(
    policy: QueuePolicy, size: int, count: int, kept: list[int], dropped: int, accepted: int
) -> None:
    stats = SourceStats("cam")
    queue = FrameQueue(size, policy, stats)
    results = [queue.put(frame(i)) for i in range(count)]
    assert sum(results) == accepted
    assert drain(queue) == kept
    assert stats.dropped["queue_full"] == dropped


def test_block_loses_nothing_and_keeps_order() -> None:
    stats = SourceStats("cam")
    queue = FrameQueue(2, "block", stats)
    received: list[int] = []

    def consume() -> None:
        while len(received) < 200:
            item = queue.get(timeout=5)
            assert item is not None
            received.append(item.seq)
            if item.seq % 50 == 0:
                time.sleep(0.01)  # a slow consumer: the producer must wait, not drop

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert all(queue.put(frame(i)) for i in range(200))
    consumer.join(timeout=10)
    assert received == list(range(200))
    assert stats.dropped["queue_full"] == 0


def test_block_put_times_out_without_counting_a_drop() -> None:
    stats = SourceStats("cam")
    queue = FrameQueue(1, "block", stats)
    assert queue.put(frame(0))
    started = time.monotonic()
    assert queue.put(frame(1), timeout=0.1) is False
    assert time.monotonic() - started >= 0.09
    assert drain(queue) == [0]
    assert stats.dropped["queue_full"] == 0


def test_close_releases_a_blocked_put_and_keeps_queued_frames() -> None:
    queue = FrameQueue(1, "block", SourceStats("cam"))
    assert queue.put(frame(0))
    outcome: list[bool] = []
    producer = threading.Thread(target=lambda: outcome.append(queue.put(frame(1))))
    producer.start()
    time.sleep(0.1)
    assert producer.is_alive(), "put should block on a full queue"
    queue.close()
    producer.join(timeout=2)
    assert not producer.is_alive()
    assert outcome == [False]
    assert queue.closed
    assert queue.put(frame(2)) is False
    assert drain(queue) == [0]  # what was queued before close() can still be taken


def test_get_returns_none_on_timeout_and_when_closed_and_empty() -> None:
    queue = FrameQueue(2, "drop_oldest", SourceStats("cam"))
    assert queue.get(timeout=0.05) is None
    waiter: list[Frame | None] = []
    consumer = threading.Thread(target=lambda: waiter.append(queue.get(timeout=10)))
    consumer.start()
    time.sleep(0.05)
    queue.close()
    consumer.join(timeout=2)
    assert waiter == [None]


def test_put_sets_the_consumer_events() -> None:
    queue = FrameQueue(2, "drop_oldest", SourceStats("cam"))
    event = threading.Event()
    queue.on_put.append(event)
    queue.put(frame(0))
    assert event.is_set()
    assert len(queue) == 1
