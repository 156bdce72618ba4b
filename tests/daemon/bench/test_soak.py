"""bench soak: the growth fit, and a short real run of the tracked chain with RSS sampled."""

from __future__ import annotations

import mmap

import pytest

from daemon.bench.soak import fit_growth, rss_mb, run


def test_fit_growth_recovers_known_slopes() -> None:
    # 1 MB every 10 s at 50 frames per second: 6 MB a minute, 20 MB per 10,000 frames
    samples = [(t, int(t * 50), 300.0 + t / 10.0) for t in range(0, 60, 2)]
    per_minute, per_10k = fit_growth(samples)
    assert per_minute == pytest.approx(6.0, rel=1e-6) and per_10k == pytest.approx(20.0, rel=1e-2)
    flat = [(t, t * 50, 300.0) for t in range(0, 60, 2)]
    assert fit_growth(flat) == pytest.approx((0.0, 0.0), abs=1e-9)


def test_rss_is_read_from_proc() -> None:
    # A fresh anonymous mapping, not bytes from the heap: malloc may hand back pages that an earlier
    # test freed but which are still resident, and then RSS does not move (seen in CI).
    size = 64 * 2**20
    with mmap.mmap(-1, size) as block:
        before = rss_mb()
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1
        assert rss_mb() - before > 50


@pytest.mark.integration
def test_short_soak_run_reports_memory_and_track_churn() -> None:
    figures = run(seconds=6.0)
    assert figures["frames"] > 50 and figures["worker_errors"] == 0
    assert figures["track_events"].get("new", 0) > 0
    # before < after warm-up is not asserted: the allocator may reuse pages an earlier test left resident
    assert figures["rss_mb_before_start"] > 0 and 0 < figures["rss_mb_after_warmup"] <= figures["rss_mb_peak"]
    assert isinstance(figures["rss_growth_mb_per_minute"], float)
