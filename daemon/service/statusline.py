"""The human-facing view of Stats: a live one-line status on a terminal and the end-of-run summary."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TextIO

from daemon.service.stats import Stats

CLEAR_LINE = "\r\x1b[2K"  # back to column 0 and erase: the status line, or a log line, starts clean


class StatusLine:
    """Rewrites one terminal line; nothing at all when the output is not a terminal (a journal, a file, a pipe),
    where a line per second would bury the logs (the retained stats and /metrics serve those instead)."""

    def __init__(self, stats: Stats, captures: Mapping[str, Any], out: TextIO) -> None:
        self.stats = stats
        self.captures = captures
        self.out = out
        self.tty = out.isatty()
        self._last = 0.0

    def maybe_print(self, interval: float) -> None:
        now = time.monotonic()
        if not self.tty or now - self._last < interval:
            return
        self._last = now
        self.out.write(CLEAR_LINE + self.render(now))
        self.out.flush()

    def render(self, now: float) -> str:
        parts = []
        for sid, source in self.stats.sources.items():
            capture = self.captures.get(sid)
            depth = len(capture.queue) if capture is not None else 0
            # fps-cap skips are by design (the `fps:` setting); drop= counts only frames lost to overload
            skipped = source.dropped.get("fps_cap", 0)
            drops = sum(source.dropped.values()) - skipped
            parts.append(
                f"{sid} {source.state} {source.process_rate.per_second(now):.1f}fps "
                f"det={source.detections} q={depth} drop={drops} skip={skipped}"
            )
        sinks = " ".join(f"{s.sink_id}:{s.published}" + (f"!{s.failed}" if s.failed else "")
                         for s in self.stats.sinks.values())
        return " | ".join(parts) + (f" || sinks {sinks}" if sinks else "")

    def end(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def summary_lines(stats: Stats) -> list[str]:
    elapsed = max(time.monotonic() - stats.started_mono, 1e-6)
    lines = [f"ran {elapsed:.1f}s; worker: {stats.worker.frames} frames in {stats.worker.batches} batches, "
             f"{stats.worker.errors} errors"]
    for sid, s in stats.sources.items():
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(s.dropped.items())) or "none"
        unprocessed = f", not processed {s.unprocessed}" if s.unprocessed else ""
        lines.append(
            f"source {sid}: {s.state}; captured {s.captured}, processed {s.processed} "
            f"({s.processed / elapsed:.1f} fps), detections {s.detections}, dropped {dropped}{unprocessed}, "
            f"reconnects {s.reconnects}, errors {s.errors}"
        )
    for kid, k in stats.sinks.items():
        spooled = f", left in spool {k.spool_depth}" if k.spool_depth else ""
        lines.append(f"sink {kid}: published {k.published}, failed {k.failed}, dropped {k.dropped}{spooled}")
    return lines + tracking_lines(stats)


def tracking_lines(stats: Stats) -> list[str]:
    """Second-stage crops read versus skipped and shed per stage, and track events, when tracking ran."""
    worker = stats.worker
    lines = []
    for stage, c in sorted(worker.second_stage.items()):
        total = c["classified"] + c["skipped"]
        share = f" ({c['classified'] / total:.0%} of scheduled crops read)" if total else ""
        lines.append(
            f"stage {stage}: crops read {c['classified']}, skipped {c['skipped']}{share}, shed {c['shed_settled']} "
            f"settled + {c['shed_new']} new in {c['stale_frames']} late frames"
        )
    if worker.second_stage or worker.events:
        events = ", ".join(f"{kind} {worker.events[kind]}" for kind in ("new", "update", "end"))
        lines.append(f"track events: {events}; live tracks {worker.tracks}")
    return lines


def stats_payload(stats: Stats, pipeline: str, timestamp: str) -> dict[str, Any]:
    """Counters for the retained stats topic (README "MQTT topics")."""
    now = time.monotonic()
    worker = stats.worker
    return {
        "pipeline": pipeline,
        "timestamp": timestamp,
        "uptime_s": round(now - stats.started_mono, 1),
        "worker": {"frames": worker.frames, "batches": worker.batches, "errors": worker.errors,
                   "mean_batch": round(worker.frames / worker.batches, 2) if worker.batches else 0.0},
        "sources": {
            sid: {"state": s.state, "fps": round(s.process_rate.per_second(now), 2), "captured": s.captured,
                  "processed": s.processed, "detections": s.detections, "dropped": dict(s.dropped),
                  "reconnects": s.reconnects, "errors": s.errors}
            for sid, s in stats.sources.items()
        },
        "sinks": {
            kid: {"connected": k.connected, "published": k.published, "failed": k.failed, "dropped": k.dropped,
                  "queue_depth": k.queue_depth}
            for kid, k in stats.sinks.items()
        },
    }
