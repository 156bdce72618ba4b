"""`edgewatch bench api`: the inference HTTP API under load while file streams run: latency and stream fps.

Starts a real Daemon (YOLOX on N looping file streams, paced in real time and capped at `fps`) with the API on
a free loopback port, then for each client count (0, 4, 16 by default) C client threads post
/infer/object_detection as fast as answers come back for D seconds (a 503 is retried after its Retry-After).
Reports, per client count, the streams' fps next to the no-client figure, HTTP latency percentiles of the
answered requests, 503s and other errors, and how many images each worker job carried.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from daemon.web.app import ApiServer, start_api

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EDGEWATCH_SHARED", ROOT.parent / "shared"))
DEFAULT_IMAGES = ("three_buses.jpg", "crosswalk_people.jpg", "rf_car.jpg", "times_square_cars_people.jpg")


@dataclass
class ClientLog:
    latencies_ms: list[float] = field(default_factory=list)  # answered (200) requests
    errors: list[str] = field(default_factory=list)  # anything but 200 and 503
    busy: int = 0  # 503s (the API queue was full)


def run(
    clients: Sequence[int] = (0, 4, 16),
    duration_s: float = 20.0,
    streams: int = 1,
    fps: float = 5.0,
    video: str | Path | None = None,
    model: str | Path | None = None,
    images: Sequence[str | Path] | None = None,
    threads: int = 2,
    batch: int = 4,
) -> dict[str, Any]:
    """Run the load test for each client count on one daemon; figures are flat (names -> numbers)."""
    video = Path(video or SHARED / "media" / "london_street_TestV4.mp4")
    pictures = [Path(p) for p in images] if images else [SHARED / "media" / name for name in DEFAULT_IMAGES]
    _need(video, *pictures)
    bodies = [_body(p) for p in pictures]
    figures: dict[str, Any] = {"streams": streams, "stream_fps_cap": fps, "duration_s": duration_s}
    with daemon_with_api(streams, video, model, threads, batch, fps) as (daemon, server):
        _post(server.port, bodies[0])  # the first call loads nothing (the daemon's model is shared) but opens the path
        idle: float | None = None
        for count in clients:
            row = _measure(daemon, server, bodies, count, duration_s)
            idle = row["stream_fps"] if idle is None and count == 0 else idle
            if idle:
                row["stream_fps_vs_idle_pct"] = 100.0 * row["stream_fps"] / idle
            figures |= {f"clients_{count}_{name}": value for name, value in row.items()}
    return figures


def _measure(daemon: Any, server: ApiServer, bodies: list[bytes], clients: int, duration_s: float) -> dict[str, Any]:
    """One window of `clients` clients: the streams' fps (mean per stream) and the HTTP figures."""
    before = {sid: s.processed for sid, s in daemon.stats.sources.items()}
    busy_before = server.inference.counters.busy
    logs, seconds = _load(server.port, bodies, clients, duration_s)
    after = {sid: s.processed for sid, s in daemon.stats.sources.items()}
    row = _figures(logs, seconds, clients, before, after, server.inference.batch_stats())
    row["http_503_counted_by_server"] = server.inference.counters.busy - busy_before
    return row


def _need(*paths: Path) -> None:
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"bench api: {path} does not exist (set EDGEWATCH_SHARED or pass the paths)")


@contextlib.contextmanager
def daemon_with_api(
    streams: int = 2, video: str | Path | None = None, model: str | Path | None = None, threads: int = 2,
    batch: int = 4, fps: float | None = None, max_queued: int | None = None,
) -> Iterator[tuple[Any, ApiServer]]:
    """A running Daemon (YOLOX, `streams` looping file sources paced in real time, capped at `fps`) and its API."""
    from daemon.app import Daemon
    from daemon.config import load_config

    video = Path(video or SHARED / "media" / "london_street_TestV4.mp4")
    model = Path(model or SHARED / "models" / "yolox_nano.onnx")
    _need(video, model)
    with tempfile.TemporaryDirectory(prefix="edgewatch-bench-api-") as tmp:
        config = load_config(_write_config(Path(tmp), video, model, streams, threads, batch, fps, max_queued))
        daemon = Daemon(config)
        daemon.start()
        own: ApiServer | None = None
        try:
            server = _find_api(daemon)
            if server is None:  # a Daemon that does not start the API itself
                assert daemon.worker is not None
                models = getattr(daemon.pipeline, "models", {})
                server = own = start_api(config.api, models, config.models, daemon.worker)
            yield daemon, server
        finally:
            if own is not None:
                own.stop()
            daemon.stop()


def _body(path: Path) -> bytes:
    value = base64.b64encode(path.read_bytes()).decode("ascii")
    return json.dumps({"model_id": "det/1", "image": {"type": "base64", "value": value}}).encode()


def _video_fps(video: Path) -> float:
    capture = cv2.VideoCapture(str(video))
    try:
        return float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        capture.release()


def _write_config(workdir: Path, video: Path, model: Path, streams: int, threads: int, batch: int,
                  fps: float | None = None, max_queued: int | None = None) -> Path:
    cap = f", fps: {fps}" if fps else ""
    queued = f", max_queued: {max_queued}" if max_queued else ""
    sources = "".join(
        f"  - {{id: stream{i}, type: file, path: '{video}', pace: realtime, loop: true{cap}}}\n"
        for i in range(streams)
    )
    path = workdir / "bench-api.yaml"
    path.write_text(
        f"models:\n  det: {{type: yolox, path: '{model}', runtime: {{intra_op_threads: {threads}}}}}\n"
        "pipeline: {name: bench-api, detector: det}\n"
        f"sources:\n{sources}"
        f"batch: {{max_size: {batch}, timeout_ms: 5}}\n"
        f"state_dir: '{workdir}/state'\n"
        f"api: {{enabled: true, host: 127.0.0.1, port: 0{queued}}}\n"
    )
    return path


def _find_api(daemon: Any) -> ApiServer | None:
    """The daemon's own API server when Daemon.start() runs one."""
    return next((v for v in vars(daemon).values() if isinstance(v, ApiServer)), None)


def _post(port: int, body: bytes, connection: http.client.HTTPConnection | None = None) -> tuple[int, bytes, float]:
    """(status, body, Retry-After seconds or 0) of one detection request."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/infer/object_detection", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    retry = response.getheader("Retry-After") or "0"
    if connection is None:
        conn.close()
    return response.status, data, float(retry) if retry.replace(".", "", 1).isdigit() else 0.0


def _client(port: int, bodies: list[bytes], offset: int, deadline: float, out: ClientLog) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    i = offset
    try:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                status, data, retry_after = _post(port, bodies[i % len(bodies)], conn)
            except (OSError, http.client.HTTPException) as exc:
                out.errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            if status == 503:
                out.busy += 1
                time.sleep(min(retry_after, max(0.0, deadline - time.monotonic())))  # as the answer asks
                continue
            if status == 200:
                out.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
            else:
                out.errors.append(f"HTTP {status}: {data[:200]!r}")
            i += 1
    finally:
        conn.close()


def _load(port: int, bodies: list[bytes], clients: int, duration_s: float) -> tuple[list[ClientLog], float]:
    logs = [ClientLog() for _ in range(clients)]
    t0 = time.monotonic()
    deadline = t0 + duration_s
    workers = [threading.Thread(target=_client, args=(port, bodies, i, deadline, logs[i]), name=f"bench-client-{i}")
               for i in range(clients)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    time.sleep(max(0.0, deadline - time.monotonic()))  # with no client the window still lasts duration_s
    return logs, time.monotonic() - t0


def _figures(logs: list[ClientLog], seconds: float, clients: int, before: dict[str, int], after: dict[str, int],
             batching: dict[str, int]) -> dict[str, Any]:
    latencies = np.array([v for log_ in logs for v in log_.latencies_ms], dtype=np.float64)
    errors = [e for log_ in logs for e in log_.errors]
    figures: dict[str, Any] = {
        "http_answered": len(latencies),
        "http_503": sum(log_.busy for log_ in logs),
        "http_errors": len(errors),
        "http_rps": len(latencies) / seconds if seconds else 0.0,
    }
    for q in (50, 90, 99):
        figures[f"http_p{q}_ms"] = float(np.percentile(latencies, q)) if len(latencies) else float("nan")
    figures["http_max_ms"] = float(latencies.max()) if len(latencies) else float("nan")
    per_stream = [(after[sid] - before.get(sid, 0)) / seconds if seconds else 0.0 for sid in sorted(after)]
    figures["stream_fps"] = sum(per_stream) / len(per_stream) if per_stream else 0.0
    figures["api_worker_jobs"] = batching["jobs"]
    figures["api_images_per_job"] = batching["images"] / batching["jobs"] if batching["jobs"] else 0.0
    figures["api_largest_job"] = batching["largest_job"]
    if errors:
        figures["first_error"] = errors[0]
    return figures
