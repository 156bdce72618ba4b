"""glibc allocator tuning: freed frame-sized buffers are reused without faulting their pages in again."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# Bursts of 8 frame-sized buffers filled in one thread while the previous burst is still held, as when a queue
# fills while the worker and a sink still hold older frames; prints the page faults per frame after the first
# two bursts have warmed the heap.
PROBE = """
import json, queue, resource, sys, threading
import numpy as np
from daemon.service.memory import keep_frame_buffers
applied = keep_frame_buffers() if sys.argv[1] == "tuned" else None
q, marks = queue.Queue(), []
def produce():
    for i in range(22):
        if i == 2:
            marks.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        burst = [np.full((720, 1280, 3), i, np.uint8) for _ in range(8)]  # the last burst is still alive
        q.put(burst)
        q.join()
    marks.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    q.put(None)
def consume():
    while (item := q.get()) is not None:
        del item
        q.task_done()
threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"applied": applied, "faults_per_frame": (marks[1] - marks[0]) / 160}))
"""


def probe(mode: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is for glibc")
def test_tuned_allocator_reuses_frame_buffers_without_page_faults() -> None:
    plain, tuned = probe("plain"), probe("tuned")
    assert tuned["applied"] is True
    # a 720p frame is 675 pages: untuned, glibc hands the burst back to the kernel and faults it in again
    assert plain["faults_per_frame"] > 100, plain
    assert tuned["faults_per_frame"] < 5, tuned
