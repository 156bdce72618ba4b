"""The run outcome behind `edgewatch run`'s exit code: unprocessed frames, failed sources, silent sinks."""

from __future__ import annotations

from daemon.service.outcome import count_unprocessed, run_problems
from daemon.service.stats import Stats


def test_unprocessed_is_what_was_read_and_neither_processed_nor_dropped() -> None:
    stats = Stats()
    source = stats.source("cam")
    source.captured, source.processed = 43, 10
    source.dropped["fps_cap"] = 3
    assert count_unprocessed(stats) == 30 and source.unprocessed == 30


def test_a_good_run_has_no_problems() -> None:
    stats = Stats()
    stats.source("cam").state = "ended"
    stats.sink("out").published = 5
    stats.sink("idle")  # given nothing: not a problem
    assert run_problems(stats) == []


def test_failed_source_and_sinks_that_delivered_nothing_are_named() -> None:
    stats = Stats()
    source = stats.source("pics")
    source.state, source.last_error = "failed", "folder /x does not exist"
    broken = stats.sink("jsonl")
    broken.start_failed, broken.last_error, broken.dropped = True, "JsonlWriteError: /proc/nope", 8
    lost = stats.sink("lossy")
    lost.failed, lost.dropped = 1, 2
    refused = stats.sink("mqtt")
    refused.auth_failed_since, refused.last_error, refused.spool_depth = 1.0, "broker refused the login", 68
    problems = run_problems(stats)
    assert problems == [
        "source pics failed: folder /x does not exist",
        "sink jsonl failed to start (JsonlWriteError: /proc/nope) and delivered nothing",
        "sink lossy delivered nothing: 1 failed, 2 dropped, 0 left in its spool",
        "sink mqtt: broker refused the login; published 0, 68 left in its spool",
    ]
