"""How a finished run went, for its exit code: sources that failed and sinks that delivered nothing.

`edgewatch run` exits 0 only when every source ran to its end (or was stopped) and every sink that was given
messages delivered some; otherwise it exits EXIT_DEGRADED (daemon/__main__.py, README "Command line") with
these lines as the reason, so a cron job or a CI step notices a run that lost everything.
"""

from __future__ import annotations

from daemon.service.stats import SinkStats, Stats


def count_unprocessed(stats: Stats) -> int:
    """Frames read but neither processed nor dropped (and counted) by now; stored per source, total returned.

    Called once the worker has stopped or been given up on: what remains was in a queue, in the batch the
    worker was still running, or in the capture thread's hands when it stopped.
    """
    total = 0
    for source in stats.sources.values():
        source.unprocessed = max(0, source.captured - source.processed - sum(source.dropped.values()))
        total += source.unprocessed
    return total


def sink_problem(sink: SinkStats) -> str | None:
    """Why this sink delivered nothing, or None when it delivered something (or was given nothing)."""
    if sink.start_failed:
        return f"sink {sink.sink_id} failed to start ({sink.last_error}) and delivered nothing"
    if sink.auth_failed_since is not None:
        return (
            f"sink {sink.sink_id}: {sink.last_error}; published {sink.published}, {sink.spool_depth} left in its spool"
        )
    lost = sink.failed + sink.dropped + sink.spool_depth
    if sink.published == 0 and lost:
        return (
            f"sink {sink.sink_id} delivered nothing: {sink.failed} failed, {sink.dropped} dropped, "
            f"{sink.spool_depth} left in its spool"
        )
    return None


def run_problems(stats: Stats) -> list[str]:
    """One line per failed source and per sink that delivered nothing; empty for a good run."""
    problems = [
        f"source {sid} failed: {source.last_error or 'no reason recorded'}"
        for sid, source in stats.sources.items()
        if source.state == "failed"
    ]
    problems += [problem for sink in stats.sinks.values() if (problem := sink_problem(sink)) is not None]
    return problems
