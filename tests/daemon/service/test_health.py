"""Health rules over hand-built Stats (the HTTP side is tests/daemon/web/test_health.py)."""

from __future__ import annotations

import pytest

from daemon.service.health import HealthRules, evaluate, progress_problems, sink_check, source_check
from daemon.service.stats import SinkStats, SourceStats, Stats

NOW = 10_000.0


def make_source(state: str, frame_age: float | None, state_age: float = 60.0, error: str = "") -> SourceStats:
    source = SourceStats("cam1", state=state, state_since=NOW - state_age, last_error=error)
    source.last_frame_mono = 0.0 if frame_age is None else NOW - frame_age
    return source


@pytest.mark.parametrize(
    ("state", "frame_age", "state_age", "error", "healthy", "reason"),
    [
        ("streaming", 0.5, 60, "", True, "streaming, last frame 0.5s ago"),
        ("streaming", 12.0, 60, "", False, "streaming but last frame 12.0s ago (limit 10s)"),
        ("streaming", None, 3, "", True, "streaming, first frame pending for 3.0s"),
        ("streaming", None, 30, "", False, "streaming but no frame in 30.0s (limit 10s)"),
        ("ended", 500.0, 400, "", True, "ended (finite source finished)"),
        ("reconnecting", 40.0, 25, "connection refused", False, "reconnecting for 25.0s: connection refused"),
        ("connecting", None, 2, "", False, "connecting for 2.0s"),
        ("failed", 900.0, 600, "gave up after 5 attempts", False, "failed for 600.0s: gave up after 5 attempts"),
    ],
)
def test_source_rule(
    state: str, frame_age: float | None, state_age: float, error: str, healthy: bool, reason: str
) -> None:
    check = source_check(make_source(state, frame_age, state_age, error), NOW, max_frame_age_s=10.0)
    assert (check.healthy, check.reason) == (healthy, reason)


@pytest.mark.parametrize(
    ("connected", "spooling", "error", "healthy", "reason"),
    [
        (True, True, "", True, "connected"),
        (False, True, "broker unreachable", True, "disconnected (broker unreachable), spooling 42 message(s)"),
        (False, False, "broker unreachable", False, "disconnected (broker unreachable), nothing spooled"),
    ],
)
def test_sink_rule(connected: bool, spooling: bool, error: str, healthy: bool, reason: str) -> None:
    sink = SinkStats("mqtt", connected=connected, last_error=error, spooling=spooling, spool_depth=42)
    check = sink_check(sink)
    assert check.healthy is healthy
    assert check.reason.startswith(reason)


def healthy_stats() -> Stats:
    stats = Stats(started_mono=NOW - 100)
    stats.sources["cam1"] = make_source("streaming", 0.2)
    stats.sinks["mqtt"] = SinkStats("mqtt", connected=True)
    stats.worker.last_progress_mono = NOW - 0.1
    return stats


RULES = HealthRules(required_sources=frozenset({"cam1"}), required_sinks=frozenset({"mqtt"}))


@pytest.mark.parametrize(
    ("breakage", "healthy", "where", "reason"),
    [
        (lambda s: None, True, None, None),
        (
            lambda s: s.sources.__setitem__("cam1", make_source("reconnecting", 30, 20)),
            False,
            "sources",
            "reconnecting",
        ),
        (lambda s: setattr(s.sinks["mqtt"], "connected", False), False, "sinks", "disconnected"),
        (lambda s: setattr(s.worker, "last_progress_mono", NOW - 31), False, "worker", "no progress for 31.0s"),
        # an optional source that is down is reported but does not fail the check
        (lambda s: s.sources.__setitem__("lobby", make_source("failed", None)), True, "sources", "failed"),
        # a required source that never registered is not silently healthy
        (lambda s: s.sources.pop("cam1"), False, "sources", "not started yet"),
    ],
)
def test_evaluate(breakage, healthy: bool, where: str | None, reason: str | None) -> None:
    stats = healthy_stats()
    breakage(stats)
    report = evaluate(stats, RULES, now=NOW).to_dict()
    assert report["healthy"] is healthy
    assert report["uptime_s"] == 100.0
    if where == "worker":
        assert reason in report["worker"]["reason"]
    elif where is not None:
        assert any(reason in check["reason"] for check in report[where].values())


def test_progress_problems_ignore_outages_but_catch_wedged_threads() -> None:
    stats = healthy_stats()
    stats.sources["cam1"] = make_source("reconnecting", 120, 100)  # down camera: the thread is busy, fine
    stats.sinks["mqtt"].connected = False
    rules = HealthRules(worker_stall_s=30, capture_stall_s=60)
    assert progress_problems(stats, rules, now=NOW) == []
    stats.sources["cam2"] = make_source("streaming", 90, 300)  # read() never returned
    stats.worker.last_progress_mono = NOW - 45
    assert progress_problems(stats, rules, now=NOW) == [
        "worker: no progress for 45.0s (limit 30s)",
        "source cam2: streaming but no frame for 90.0s",
    ]
    assert progress_problems(stats, HealthRules(worker_stall_s=60), now=NOW) == []  # capture not judged


def test_a_refused_login_is_unhealthy_after_its_grace_even_when_not_required() -> None:
    sink = SinkStats("mqtt", spooling=True, last_error="broker refused the login of user edge: Not authorized")
    sink.auth_failed_since, sink.auth_grace_s = 100.0, 30.0
    within = sink_check(sink, required=False, now=120.0)
    assert within.healthy and within.reason.startswith("auth_failed for 20s (unhealthy after auth_grace_s=30)")
    after = sink_check(sink, required=False, now=131.0)
    assert not after.healthy and after.required and after.reason.startswith("auth_failed for 31s: broker refused")
    stats = Stats()
    stats.sinks["mqtt"] = sink
    assert not evaluate(stats, HealthRules(), now=131.0).healthy
    sink.auth_failed_since = None  # accepted again: spooling while disconnected is healthy as before
    assert sink_check(sink, required=False, now=131.0).healthy
