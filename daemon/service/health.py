"""Health of a running daemon: per-stage checks from Stats, the verdict behind /healthz and the watchdog.

Health is computed from the same Stats the threads already update, on request; nothing here runs on the
frame path. The HTTP side (/healthz, /metrics on the one web stack) is daemon/web/health.py.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from daemon.service.stats import SinkStats, SourceStats, Stats


@dataclass(frozen=True)
class HealthRules:
    """Which stages must be healthy for /healthz to answer 200, and how stale is too stale."""

    required_sources: frozenset[str] = frozenset()
    required_sinks: frozenset[str] = frozenset()
    max_frame_age_s: float = 10.0  # a streaming source with no newer frame is unhealthy
    worker_stall_s: float = 30.0  # the worker stamps progress after every batch and every idle wait
    # A capture thread that stays "streaming" this long without a frame is wedged (its read never
    # returned). None: do not judge capture threads for the watchdog (e.g. folders that go quiet).
    capture_stall_s: float | None = None


@dataclass(frozen=True)
class Check:
    healthy: bool
    reason: str
    required: bool = True


@dataclass
class HealthReport:
    healthy: bool
    worker: Check
    sources: dict[str, Check] = field(default_factory=dict)
    sinks: dict[str, Check] = field(default_factory=dict)
    uptime_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "uptime_s": round(self.uptime_s, 1),
            "worker": asdict(self.worker),
            "sources": {sid: asdict(check) for sid, check in self.sources.items()},
            "sinks": {sid: asdict(check) for sid, check in self.sinks.items()},
        }


def source_check(source: SourceStats, now: float, max_frame_age_s: float, required: bool = True) -> Check:
    """Healthy when streaming with a recent frame, or when a finite source has ended."""
    state = source.state
    if state in ("disabled", "removed"):  # by runtime control (daemon/control/): not meant to stream
        return Check(True, f"{state} at runtime (enabled OFF or removed)", required)
    if state == "ended":
        return Check(True, "ended (finite source finished)", required)
    if state == "streaming":
        if source.last_frame_mono > 0:
            age = now - source.last_frame_mono
            if age <= max_frame_age_s:
                return Check(True, f"streaming, last frame {age:.1f}s ago", required)
            return Check(False, f"streaming but last frame {age:.1f}s ago (limit {max_frame_age_s:g}s)", required)
        waited = now - source.state_since
        if waited <= max_frame_age_s:
            return Check(True, f"streaming, first frame pending for {waited:.1f}s", required)
        return Check(False, f"streaming but no frame in {waited:.1f}s (limit {max_frame_age_s:g}s)", required)
    detail = f": {source.last_error}" if source.last_error else ""
    return Check(False, f"{state} for {now - source.state_since:.1f}s{detail}", required)


def sink_check(sink: SinkStats, required: bool = True, now: float | None = None) -> Check:
    """Healthy when connected, or when a durable spool keeps what it cannot deliver yet; not when the broker has
    refused the login for longer than its auth_grace_s, whatever `required` says: no retry fixes that."""
    since = sink.auth_failed_since
    if since is not None:
        age = (time.monotonic() if now is None else now) - since
        if age > sink.auth_grace_s:
            return Check(False, f"auth_failed for {age:.0f}s: {sink.last_error}", True)
        return Check(True, f"auth_failed for {age:.0f}s (unhealthy after auth_grace_s={sink.auth_grace_s:g}): "
                     f"{sink.last_error}", required)
    if sink.connected:
        return Check(True, "connected", required)
    detail = f" ({sink.last_error})" if sink.last_error else ""
    if sink.spooling:
        return Check(True, f"disconnected{detail}, spooling {sink.spool_depth} message(s)", required)
    return Check(False, f"disconnected{detail}, nothing spooled: messages are being lost", required)


def worker_check(stats: Stats, now: float, stall_s: float) -> Check:
    age = now - stats.worker.last_progress_mono
    if age > stall_s:
        return Check(False, f"no progress for {age:.1f}s (limit {stall_s:g}s)")
    return Check(True, f"progressing, {stats.worker.batches} batch(es) so far")


def evaluate(stats: Stats, rules: HealthRules, now: float | None = None) -> HealthReport:
    """The /healthz verdict: every required source and sink healthy, and the worker progressing."""
    now = time.monotonic() if now is None else now
    sources_seen = dict(stats.sources)  # snapshot: capture threads may add entries meanwhile
    sinks_seen = dict(stats.sinks)
    report = HealthReport(True, worker_check(stats, now, rules.worker_stall_s), uptime_s=now - stats.started_mono)
    for sid in sorted(set(sources_seen) | rules.required_sources):
        required = sid in rules.required_sources
        source = sources_seen.get(sid)
        report.sources[sid] = (
            source_check(source, now, rules.max_frame_age_s, required)
            if source is not None
            else Check(False, "not started yet", required)
        )
    for sid in sorted(set(sinks_seen) | rules.required_sinks):
        required = sid in rules.required_sinks
        sink = sinks_seen.get(sid)
        report.sinks[sid] = (
            sink_check(sink, required, now) if sink is not None else Check(False, "not started yet", required)
        )
    checks = [*report.sources.values(), *report.sinks.values()]
    report.healthy = report.worker.healthy and all(c.healthy for c in checks if c.required)
    return report


def progress_problems(stats: Stats, rules: HealthRules, now: float | None = None) -> list[str]:
    """Why the daemon is wedged (empty when every stage makes progress): gates the systemd watchdog.

    Unlike /healthz this ignores a camera that is down or a broker that is away: those threads are
    busy reconnecting, and a restart would not help. It looks only for threads that stopped moving.
    """
    now = time.monotonic() if now is None else now
    problems = []
    worker = worker_check(stats, now, rules.worker_stall_s)
    if not worker.healthy:
        problems.append(f"worker: {worker.reason}")
    if rules.capture_stall_s is not None:
        for sid, source in list(stats.sources.items()):
            since = max(source.last_frame_mono, source.state_since)
            if source.state == "streaming" and now - since > rules.capture_stall_s:
                problems.append(f"source {sid}: streaming but no frame for {now - since:.1f}s")
    return problems
