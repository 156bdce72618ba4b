"""Fault tests with real processes: the daemon as a child process, mosquitto stopped or gone, SIGKILL, and RTSP
cameras that die and come back. Bad inputs, bad sinks and a wedged worker are in test_faults_inprocess.py.

Figures (held, lost, recovery times) are appended as JSON lines to $EDGEWATCH_FAULT_REPORT when it is set;
the README's reliability section quotes them.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.sinks.spool import Spool
from tests.fixtures.daemon_proc import DaemonProcess, read_jsonl, report, wait_until
from tests.fixtures.durable_mqtt import PersistentMosquitto, durable_subscribe
from tests.fixtures.mosquitto import Collector
from tests.fixtures.rtsp_server import RtspServer, require_gst_rtsp

pytestmark = pytest.mark.integration

Key = tuple[str, int, str]  # (source_id, seq, timestamp): seq restarts with the daemon, the timestamp does not
OUTAGE_S = 20.0  # the broker outage, kept at full length in one test


def daemon_config(models_dir: Path, sources: list[dict[str, Any]], sinks: list[dict[str, Any]]) -> dict[str, Any]:
    """YOLOX-nano on CPU, a small batch: cheap enough for 2 shared cores, real enough to publish detections."""
    return {
        "models": {"det": {"type": "yolox", "path": str(models_dir / "yolox_nano.onnx"),
                           "runtime": {"providers": ["cpu"], "intra_op_threads": 1}}},
        "pipeline": {"name": "faults", "detector": "det"},
        "sources": sources,
        "sinks": sinks,
        "batch": {"max_size": 2, "timeout_ms": 5},
    }


def street(media_dir: Path, source_id: str = "street", fps: float = 5.0) -> dict[str, Any]:
    return {"id": source_id, "type": "file", "path": str(media_dir / "london_street_TestV4.mp4"),
            "pace": "realtime", "loop": True, "fps": fps}


def result_sinks(out: Path, port: int) -> list[dict[str, Any]]:
    return [
        {"id": "jsonl", "type": "jsonl", "path": str(out), "kinds": ["result"], "flush": "every"},
        {"id": "mqtt", "type": "mqtt", "host": "127.0.0.1", "port": port, "kinds": ["result"],
         "reconnect_min_s": 1, "reconnect_max_s": 2},
    ]


def key(row: dict[str, Any]) -> Key:
    return (row["source_id"], row["seq"], row["timestamp"])


def received(seen: Collector) -> list[Key]:
    return [key(m.json()) for m in list(seen.messages) if m.topic.endswith("/results")]


def assert_in_order(keys: list[Key]) -> None:
    """Per source, first arrivals follow capture time (re-sends after an outage may repeat a message)."""
    by_source: dict[str, list[str]] = {}
    for source, _seq, stamp in dict.fromkeys(keys):
        by_source.setdefault(source, []).append(stamp)
    for source, stamps in by_source.items():
        assert stamps == sorted(stamps), f"{source}: results arrived out of order"


@pytest.fixture
def broker() -> Iterator[PersistentMosquitto]:
    made = PersistentMosquitto()
    yield made.start()
    made.close()


@pytest.fixture
def procs() -> Iterator[Callable[..., DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(*args: Any, **kwargs: Any) -> DaemonProcess:
        made.append(DaemonProcess(*args, **kwargs))
        return made[-1]

    yield make
    for proc in made:
        proc.close()


def spool_depth(proc: DaemonProcess) -> float:
    return proc.metric("edgewatch_sink_spool_depth", sink="mqtt")


def test_broker_down_20s_mid_run_loses_no_result(
    broker: PersistentMosquitto, procs: Callable[..., DaemonProcess], tmp_path: Path, models_dir: Path,
    media_dir: Path,
) -> None:
    """The issue's case: mosquitto stopped for 20 s and restarted; the subscriber gets every JSONL result."""
    seen = durable_subscribe(broker, "edgewatch/+/results")
    out = tmp_path / "results.jsonl"
    proc = procs(tmp_path, daemon_config(models_dir, [street(media_dir)], result_sinks(out, broker.port)))
    proc.start().wait_for_log("edgewatch running")
    wait_until(lambda: len(received(seen)) >= 10, 60, "10 results over MQTT", proc)
    broker.stop()
    down = time.monotonic()
    wait_until(lambda: proc.metric("edgewatch_sink_connected", sink="mqtt") == 0, 10, "sink disconnected", proc)
    held = 0.0
    while time.monotonic() - down < OUTAGE_S:
        held = max(held, spool_depth(proc))
        assert proc.healthz()["sinks"]["mqtt"]["healthy"]  # spooling counts as healthy
        time.sleep(1.0)
    held = max(held, spool_depth(proc))
    broker.start()
    up = time.monotonic()
    wait_until(lambda: proc.metric("edgewatch_sink_connected", sink="mqtt") == 1 and spool_depth(proc) == 0, 30,
               "spool drained after the broker came back", proc)
    drained_s = time.monotonic() - up
    time.sleep(1.0)
    assert proc.terminate() == 0
    written = {key(row) for row in read_jsonl(out)}
    wait_until(lambda: written <= set(received(seen)), 20, "every JSONL result at the subscriber")
    keys = received(seen)
    assert_in_order(keys)
    assert held >= 5 * OUTAGE_S * 0.5  # ~5 results/s were produced all along and went to the spool
    report("broker_down_20s", outage_s=OUTAGE_S, results=len(written), held_in_spool=int(held), lost=0,
           duplicates=len(keys) - len(set(keys)), drain_after_broker_back_s=round(drained_s, 2))


def test_daemon_sigkilled_while_broker_down_loses_no_spooled_result(
    broker: PersistentMosquitto, procs: Callable[..., DaemonProcess], tmp_path: Path, models_dir: Path,
    media_dir: Path,
) -> None:
    """Broker down, daemon SIGKILLed, daemon restarted (still no broker), broker back: nothing spooled is lost."""
    seen = durable_subscribe(broker, "edgewatch/+/results")
    out = tmp_path / "results.jsonl"
    proc = procs(tmp_path, daemon_config(models_dir, [street(media_dir)], result_sinks(out, broker.port)))
    proc.start().wait_for_log("edgewatch running")
    wait_until(lambda: len(received(seen)) >= 5, 60, "5 results over MQTT", proc)
    broker.stop()
    wait_until(lambda: spool_depth(proc) >= 15, 30, "15 results spooled", proc)
    proc.sigkill()
    first_run = {key(row) for row in read_jsonl(out)}
    spool = Spool(proc.state_dir / "mqtt.spool.db", max_bytes=1 << 30)
    try:
        spooled = {key(json.loads(row.payload)) for row in spool.peek(100_000)}
    finally:
        spool.close()
    assert len(spooled) >= 15
    log_offset = len(proc.log_text())
    proc.start().wait_for_log("edgewatch running", after=log_offset)
    assert f"{len(spooled)} message(s)" in proc.log_text()[log_offset:]  # the spool says what it found
    wait_until(lambda: spool_depth(proc) >= len(spooled) + 5, 30, "new results spooled behind the old", proc)
    broker.start()
    up = time.monotonic()
    wait_until(lambda: spool_depth(proc) == 0, 30, "spool drained after the broker came back", proc)
    drained_s = time.monotonic() - up
    assert proc.terminate() == 0
    written = {key(row) for row in read_jsonl(out)}
    wait_until(lambda: spooled | written <= set(received(seen)), 20, "every spooled and JSONL result delivered")
    keys = received(seen)
    assert_in_order(keys)
    report("broker_down_daemon_sigkilled", spooled_at_kill=len(spooled), lost=0,
           results=len(written), in_memory_at_kill=len(first_run - spooled - set(keys)),
           duplicates=len(keys) - len(set(keys)), drain_after_broker_back_s=round(drained_s, 2))


RECONNECT = {"initial_s": 0.5, "max_s": 2.0, "multiplier": 2.0, "jitter": 0.2}
# A killed camera is back within one backoff period (max_s * (1 + jitter)) plus an RTSP session setup and the
# first key frame (one per second in the test video).
BACKOFF_BOUND_S = RECONNECT["max_s"] * (1 + RECONNECT["jitter"]) + 3.0


def test_rtsp_camera_killed_five_times_comes_back_and_others_keep_flowing(
    procs: Callable[..., DaemonProcess], tmp_path: Path, models_dir: Path
) -> None:
    require_gst_rtsp()
    flaky, steady = RtspServer(("/cam1",)), RtspServer(("/cam2",))
    try:
        flaky.start()
        steady.start()
        sources = [{"id": sid, "type": "rtsp", "url": server.url(f"/{sid}"), "fps": 5, "stall_timeout_s": 3.0,
                    "reconnect": RECONNECT} for sid, server in (("cam1", flaky), ("cam2", steady))]
        sinks = [{"id": "jsonl", "type": "jsonl", "path": str(tmp_path / "out.jsonl"), "kinds": ["result"]}]
        proc = procs(tmp_path / "daemon", daemon_config(models_dir, sources, sinks))
        proc.start().wait_for_log("edgewatch running")

        def captured(sid: str) -> float:
            return proc.metric("edgewatch_frames_captured_total", source=sid)

        wait_until(lambda: captured("cam1") > 0 and captured("cam2") > 0, 30, "both cameras streaming", proc)
        recoveries = []
        for cycle in range(5):
            steady_before = captured("cam2")
            flaky.kill()
            wait_until(lambda: proc.metric("edgewatch_source_state", source="cam1",
                                           edgewatch_source_state="streaming") == 0,
                       10, f"cycle {cycle}: cam1 noticed the dead server", proc)
            time.sleep(1.0)  # down for a while: attempts fail and the backoff grows
            frames = captured("cam1")
            flaky.start()
            back = time.monotonic()
            wait_until(lambda: captured("cam1") > frames, 30, f"cycle {cycle}: cam1 back", proc)  # noqa: B023
            recoveries.append(time.monotonic() - back)
            assert captured("cam2") > steady_before, f"cycle {cycle}: cam2 stopped while cam1 was down"
        assert max(recoveries) <= BACKOFF_BOUND_S, f"recoveries {recoveries} exceed {BACKOFF_BOUND_S}s"
        assert proc.metric("edgewatch_source_reconnects_total", source="cam2") == 0
        assert proc.terminate() == 0
    finally:
        flaky.close()
        steady.close()
    report("rtsp_killed_5x", recovery_s=[round(r, 2) for r in recoveries], bound_s=BACKOFF_BOUND_S,
           max_recovery_s=round(max(recoveries), 2))


def bad_media(folder: Path, media_dir: Path) -> dict[str, Path]:
    """A truncated video (its index, at the end, cut off), a corrupted one, and a folder with a broken image."""
    folder.mkdir(parents=True, exist_ok=True)
    data = (media_dir / "london_street_TestV4.mp4").read_bytes()
    assert data.find(b"moov") > len(data) // 2, "the sample video's index is expected at its end"
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    noisy = bytearray(data)
    for offset in range(len(noisy) // 4, len(noisy) * 3 // 4, 997):  # the middle half, 64 bytes per KiB
        noisy[offset:offset + 64] = bytes((offset * 31 + i * 17) % 256 for i in range(64))
    corrupted = folder / "corrupted.mp4"
    corrupted.write_bytes(bytes(noisy))
    images = folder / "images"
    images.mkdir()
    (images / "a_good.jpg").write_bytes((media_dir / "rf_car.jpg").read_bytes())
    (images / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG " * 20)
    (images / "c_good.jpg").write_bytes((media_dir / "three_buses.jpg").read_bytes())
    return {"truncated": truncated, "corrupted": corrupted, "images": images}


def test_bad_inputs_are_reported_and_the_rest_keeps_running(
    procs: Callable[..., DaemonProcess], tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    bad = bad_media(tmp_path / "media", media_dir)
    sources = [
        street(media_dir),
        {"id": "truncated", "type": "file", "path": str(bad["truncated"]), "pace": "fast", "required": False},
        {"id": "corrupted", "type": "file", "path": str(bad["corrupted"]), "pace": "fast", "fps": 15,
         "required": False},
        {"id": "folder", "type": "images", "folder": str(bad["images"]), "required": False},
    ]
    sinks = [{"id": "jsonl", "type": "jsonl", "path": str(tmp_path / "out.jsonl"), "kinds": ["result"]}]
    proc = procs(tmp_path / "daemon", daemon_config(models_dir, sources, sinks))
    proc.start().wait_for_log("edgewatch running")

    def state(sid: str, name: str) -> bool:
        return proc.metric("edgewatch_source_state", source=sid, edgewatch_source_state=name) == 1

    wait_until(lambda: state("truncated", "failed") and state("corrupted", "ended") and state("folder", "ended"),
               60, "the bad sources finished", proc)
    processed = proc.metric("edgewatch_frames_processed_total", source="street")
    wait_until(lambda: proc.metric("edgewatch_frames_processed_total", source="street") >= processed + 5, 30,
               "the good source still running", proc)
    log = proc.log_text()
    assert f"cannot decode video file {bad['truncated']}" in log
    assert f"cannot decode image {bad['images'] / 'b_broken.jpg'}" in log
    health = proc.healthz()
    assert health["healthy"] and health["sources"]["street"]["healthy"]
    assert "cannot decode video file" in health["sources"]["truncated"]["reason"]
    assert proc.metric("edgewatch_frames_processed_total", source="folder") == 2  # both good images
    assert proc.metric("edgewatch_source_errors_total", source="folder") == 1
    corrupted = proc.metric("edgewatch_frames_processed_total", source="corrupted")
    assert corrupted > 0  # what was still decodable
    assert proc.terminate() == 4  # the run went on, but a source failed: exit code 4 says so
    assert "exit 4: source truncated failed: " in proc.log_text().splitlines()[-1]
    report("bad_inputs", truncated="failed: cannot decode", corrupted_frames_decoded=int(corrupted),
           corrupted_frames_in_file=152, broken_images_skipped=1, good_images=2, daemon_kept_running=True)


def test_model_replaced_by_garbage_on_reload_keeps_the_running_pipeline(
    procs: Callable[..., DaemonProcess], tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    model = tmp_path / "det.onnx"
    model.write_bytes((models_dir / "yolox_nano.onnx").read_bytes())
    config = daemon_config(models_dir, [street(media_dir)],
                           [{"id": "jsonl", "type": "jsonl", "path": str(tmp_path / "out.jsonl")}])
    config["models"]["det"]["path"] = str(model)
    proc = procs(tmp_path / "daemon", config)
    proc.start().wait_for_log("edgewatch running")
    wait_until(lambda: proc.metric("edgewatch_frames_processed_total", source="street") >= 5, 30, "5 frames", proc)
    model.write_bytes(b"this is not an ONNX model " * 1000)
    offset = len(proc.log_text())
    proc.send_signal(signal.SIGHUP)
    proc.wait_for_log("reload rejected", after=offset)
    rejection = next(line for line in proc.log_text()[offset:].splitlines() if "reload rejected" in line)
    assert str(model) in rejection and "ERROR" in rejection
    processed = proc.metric("edgewatch_frames_processed_total", source="street")
    wait_until(lambda: proc.metric("edgewatch_frames_processed_total", source="street") >= processed + 5, 30,
               "frames still processed by the old pipeline", proc)
    assert proc.metric("edgewatch_worker_errors_total") == 0 and proc.healthz()["healthy"]
    assert proc.terminate() == 0
    report("garbage_model_on_reload", rejected=True, old_pipeline_kept=True, worker_errors=0)
