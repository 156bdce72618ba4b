"""What the pages show, as plain dicts read from the daemon's stats, health verdict and latest results.

Pure reads of what the frame path already counts (daemon/service/stats.py, daemon/service/health.py); the
templates and the JSON refresh endpoints both use these, so a tile and its refresh always agree.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.service.health import HealthRules, evaluate
from daemon.service.stats import SourceStats, Stats
from daemon.web.ui.live import LiveFeed, Viewers


@dataclass(frozen=True)
class DaemonView:
    """The parts of a running daemon the pages read; built once when the UI's routes are made."""

    stats: Stats
    rules: HealthRules
    feed: LiveFeed
    viewers: Viewers
    pipeline: str
    sources: Sequence[str]  # configured source ids, in config order
    sinks: Mapping[str, str]  # sink id -> type
    providers: Mapping[str, Sequence[str]]  # model name -> execution providers asked for, in fallback order


STOPPED = "stopped"  # what a capture says once stop() was called: the daemon is stopping or a reload removed it
FINAL = frozenset({STOPPED, "ended", "failed"})  # capture states after which no frame comes


def source_running(view: DaemonView, source_id: str) -> bool:
    """False once the source can send no more frames: its live view ends (the browser keeps the last frame),
    and the server's shutdown waits for no viewer."""
    source = view.stats.sources.get(source_id)
    return source is None or source.state not in FINAL


def daemon_running(view: DaemonView) -> bool:
    """False once every source was stopped (the daemon is stopping): the event streams end."""
    stopped = [sid for sid in view.sources if (s := view.stats.sources.get(sid)) is not None and s.state == STOPPED]
    return not view.sources or len(stopped) < len(view.sources)


def _age(source: SourceStats | None, now: float) -> float | None:
    if source is None or not source.last_frame_mono:
        return None
    return round(now - source.last_frame_mono, 1)


def camera(view: DaemonView, source_id: str, now: float | None = None) -> dict[str, Any]:
    """One tile: state, fps, drops by reason, age of the last frame, detections in the latest result."""
    now = time.monotonic() if now is None else now
    source = view.stats.sources.get(source_id)
    latest = view.feed.latest(source_id)
    return {
        "id": source_id,
        "state": source.state if source is not None else "not started",
        "fps": round(source.process_rate.per_second(now), 1) if source is not None else 0.0,
        "captured": source.captured if source is not None else 0,
        "processed": source.processed if source is not None else 0,
        "drops": sum(source.dropped.values()) if source is not None else 0,
        "drops_by_reason": dict(source.dropped) if source is not None else {},
        "last_frame_age_s": _age(source, now),
        "objects": len(latest.detections) if latest is not None else 0,
        "seq": latest.frame.seq if latest is not None else None,
    }


def cameras(view: DaemonView) -> list[dict[str, Any]]:
    now = time.monotonic()
    known = list(view.sources) + [sid for sid in view.stats.sources if sid not in view.sources]
    return [camera(view, sid, now) for sid in known]


def stage_timings(view: DaemonView) -> dict[str, dict[str, float]]:
    """Per source, the latest result's stage timings in ms (what the worker measured for that frame)."""
    out: dict[str, dict[str, float]] = {}
    for sid in view.feed.sources():
        latest = view.feed.latest(sid)
        if latest is not None and latest.timings_ms:
            out[sid] = {name: round(ms, 1) for name, ms in latest.timings_ms.items()}
    return out


def status(view: DaemonView) -> dict[str, Any]:
    """Everything the status page shows: the /healthz verdict, sinks with spools, worker, timings, providers."""
    report = evaluate(view.stats, view.rules).to_dict()
    worker = view.stats.worker
    sinks = []
    for sid, sink in sorted(view.stats.sinks.items()):
        sinks.append(
            {
                "id": sid,
                "type": view.sinks.get(sid, "?"),
                "connected": sink.connected,
                "published": sink.published,
                "failed": sink.failed,
                "dropped": sink.dropped,
                "queue_depth": sink.queue_depth,
                "spooling": sink.spooling,
                "spool_depth": sink.spool_depth,
                "spool_bytes": sink.spool_bytes,
                "last_error": sink.last_error,
                "healthy": report["sinks"].get(sid, {}).get("healthy", True),
            }
        )
    return {
        "health": report,
        "pipeline": view.pipeline,
        "cameras": cameras(view),
        "sinks": sinks,
        "worker": {
            "batches": worker.batches,
            "frames": worker.frames,
            "errors": worker.errors,
            "last_batch_size": worker.last_batch_size,
            "tracks": worker.tracks,
            "mean_batch_ms": round(worker.infer_ms_total / worker.batches, 1) if worker.batches else None,
            "events": dict(worker.events),
            "stage_errors": dict(worker.stage_errors),
        },
        "timings": stage_timings(view),
        "providers": {name: list(p) for name, p in view.providers.items()},
        "viewers": {"open": view.viewers.count, "limit": view.viewers.limit, "frames_sent": view.viewers.served},
    }
