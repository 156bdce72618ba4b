"""`edgewatch bench api`: the inference HTTP API under load while file streams run: latency and stream fps.

Starts a real Daemon (YOLOX on N looping file streams, paced in real time) with the API on a free loopback
port, then C client threads post /infer/object_detection as fast as answers come back for D seconds.
Reports HTTP latency percentiles and throughput, errors, the streams' fps during the same window, and
how many images each worker job carried (cross-request batching).
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
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run(
    clients: int = 4,
    duration_s: float = 30.0,
    streams: int = 2,
    video: str | Path | None = None,
    model: str | Path | None = None,
    images: Sequence[str | Path] | None = None,
    threads: int = 2,
    batch: int = 4,
) -> dict[str, Any]:
    """Run the load test and return its figures (flat: names -> numbers)."""
    video = Path(video or SHARED / "media" / "london_street_TestV4.mp4")
    pictures = [Path(p) for p in images] if images else [SHARED / "media" / name for name in DEFAULT_IMAGES]
    _need(video, *pictures)
    bodies = [_body(p) for p in pictures]
    with daemon_with_api(streams, video, model, threads, batch) as (daemon, server):
        _post(server.port, bodies[0])  # the first call loads nothing (the daemon's model is shared) but opens the path
        before = {sid: s.processed for sid, s in daemon.stats.sources.items()}
        logs, seconds = _load(server.port, bodies, clients, duration_s)
        after = {sid: s.processed for sid, s in daemon.stats.sources.items()}
        batching = server.inference.batch_stats()
    return _figures(logs, seconds, clients, before, after, batching) | {"video_fps": _video_fps(video)}


def _need(*paths: Path) -> None:
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"bench api: {path} does not exist (set EDGEWATCH_SHARED or pass the paths)")


@contextlib.contextmanager
def daemon_with_api(
    streams: int = 2, video: str | Path | None = None, model: str | Path | None = None, threads: int = 2,
    batch: int = 4,
) -> Iterator[tuple[Any, ApiServer]]:
    """A running Daemon (YOLOX, `streams` looping file sources paced in real time) and its API (model det/1)."""
    from daemon.app import Daemon
    from daemon.config import load_config

    video = Path(video or SHARED / "media" / "london_street_TestV4.mp4")
    model = Path(model or SHARED / "models" / "yolox_nano.onnx")
    _need(video, model)
    with tempfile.TemporaryDirectory(prefix="edgewatch-bench-api-") as tmp:
        config = load_config(_write_config(Path(tmp), video, model, streams, threads, batch))
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


def _write_config(workdir: Path, video: Path, model: Path, streams: int, threads: int, batch: int) -> Path:
    sources = "".join(
        f"  - {{id: stream{i}, type: file, path: '{video}', pace: realtime, loop: true}}\n" for i in range(streams)
    )
    path = workdir / "bench-api.yaml"
    path.write_text(
        f"models:\n  det: {{type: yolox, path: '{model}', runtime: {{intra_op_threads: {threads}}}}}\n"
        "pipeline: {name: bench-api, detector: det}\n"
        f"sources:\n{sources}"
        f"batch: {{max_size: {batch}, timeout_ms: 5}}\n"
        f"state_dir: '{workdir}/state'\n"
        "api: {enabled: true, host: 127.0.0.1, port: 0}\n"
    )
    return path


def _find_api(daemon: Any) -> ApiServer | None:
    """The daemon's own API server when Daemon.start() runs one."""
    return next((v for v in vars(daemon).values() if isinstance(v, ApiServer)), None)


def _post(port: int, body: bytes, connection: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/infer/object_detection", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if connection is None:
        conn.close()
    return response.status, data


def _client(port: int, bodies: list[bytes], offset: int, deadline: float, out: ClientLog) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    i = offset
    try:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                status, data = _post(port, bodies[i % len(bodies)], conn)
            except (OSError, http.client.HTTPException) as exc:
                out.errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            out.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
            if status != 200:
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
    return logs, time.monotonic() - t0


def _figures(logs: list[ClientLog], seconds: float, clients: int, before: dict[str, int], after: dict[str, int],
             batching: dict[str, int]) -> dict[str, Any]:
    latencies = np.array([v for log_ in logs for v in log_.latencies_ms], dtype=np.float64)
    errors = [e for log_ in logs for e in log_.errors]
    figures: dict[str, Any] = {
        "clients": clients,
        "duration_s": round(seconds, 2),
        "http_requests": len(latencies),
        "http_errors": len(errors),
        "http_rps": len(latencies) / seconds if seconds else 0.0,
    }
    for q in (50, 90, 99):
        figures[f"http_p{q}_ms"] = float(np.percentile(latencies, q)) if len(latencies) else float("nan")
    figures["http_max_ms"] = float(latencies.max()) if len(latencies) else float("nan")
    for sid in sorted(after):
        figures[f"stream_fps_{sid}"] = (after[sid] - before.get(sid, 0)) / seconds if seconds else 0.0
    figures["api_worker_jobs"] = batching["jobs"]
    figures["api_images_per_job"] = batching["images"] / batching["jobs"] if batching["jobs"] else 0.0
    figures["api_largest_job"] = batching["largest_job"]
    if errors:
        figures["first_error"] = errors[0]
    return figures
