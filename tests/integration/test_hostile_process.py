"""Issue 16 (items 5, 6, 10, 11) with the real daemon as a child process: what its exit code and /healthz say.

An overrun shutdown exits 3 with a count of the frames it read and never processed, and never aborts (rc 134);
a port it cannot listen on is one line and rc 1; a run whose sink delivered nothing or whose source failed
exits 4; a broker that refuses the login is a state of its own (auth_failed, a metric, /healthz unhealthy).
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon_proc import DaemonProcess, read_jsonl, wait_until
from tests.fixtures.mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.integration

PASSWORD = "right-pass-7Q"  # the test broker's


@pytest.fixture
def procs() -> Iterator[Callable[..., DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(*args: Any, **kwargs: Any) -> DaemonProcess:
        made.append(DaemonProcess(*args, **kwargs))
        return made[-1]

    yield make
    for proc in made:
        proc.close()


def detector(models_dir: Path) -> dict[str, Any]:
    return {
        "type": "yolox",
        "path": str(models_dir / "yolox_nano.onnx"),
        "runtime": {"providers": ["cpu"], "intra_op_threads": 1},
    }


def pictures(tmp_path: Path, media_dir: Path, **options: Any) -> dict[str, Any]:
    """An images source over two pictures copied into a folder of the test's own."""
    folder = tmp_path / "pictures"
    folder.mkdir(exist_ok=True)
    for name in ("three_buses.jpg", "rf_car.jpg"):
        shutil.copy(media_dir / name, folder / name)
    return {"id": "pics", "type": "images", "folder": str(folder), **options}


def small_config(models_dir: Path, source: dict[str, Any], sinks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "models": {"det": detector(models_dir)},
        "pipeline": {"name": "hostile", "detector": "det"},
        "sources": [source],
        "sinks": sinks,
        "batch": {"max_size": 2, "timeout_ms": 5},
    }


def output_lines(proc: DaemonProcess) -> list[str]:
    """What the daemon wrote, without the fixture's own "---- start" header."""
    return [line for line in proc.log_text().splitlines() if line and not line.startswith("---- start")]


def assert_no_abort(proc: DaemonProcess) -> None:
    text = proc.log_text()
    assert "Traceback" not in text and "terminate called" not in text, text[-3000:]


# -- item 5: an overrun shutdown ----------------------------------------------------------------------------
def busy_chain(models_dir: Path, media_dir: Path) -> dict[str, Any]:
    """vehicles -> plates (640) -> OCR on a fast file with a long queue: far more queued work than 3 s."""
    cpu = {"providers": ["cpu"], "intra_op_threads": 1}
    return {
        "models": {
            # tiles: seven detector runs a frame, so that a faster runtime cannot empty the queue within 3 s
            "vehicles": {**detector(models_dir), "class_filter": ["car", "bus", "truck"], "tiles": {"grid": [3, 2]}},
            "plates": {
                "type": "yolov5",
                "path": str(models_dir / "plate_det_y5fu_640.onnx"),
                "num_keypoints": 4,
                "class_names": ["single", "double"],
                "runtime": cpu,
            },
            "reader": {"type": "ocr", "runtime": cpu},
        },
        "pipeline": {
            "name": "busy",
            "detector": "vehicles",
            "stages": [
                {
                    "name": "plates",
                    "model": "plates",
                    "on": ["car", "bus", "truck"],
                    "min_crop_size": 16,
                    "stages": [{"name": "text", "model": "reader", "crop": {"rectify_keypoints": True}}],
                }
            ],
        },
        "sources": [
            {
                "id": "london",
                "type": "file",
                "path": str(media_dir / "london_street_TestV4.mp4"),
                "pace": "fast",
                "loop": True,
                "queue": {"size": 150},
            }
        ],
        "sinks": [],
        "batch": {"max_size": 2, "timeout_ms": 5},
        "shutdown_timeout_s": 3,
    }


def test_overrun_shutdown_exits_3_with_the_unprocessed_count_and_no_abort(
    procs: Callable[..., DaemonProcess], tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    proc = procs(tmp_path, busy_chain(models_dir, media_dir))
    proc.start().wait_for_log("edgewatch running")
    # 140 frames queued: far more than this chain runs in the 3 s a shutdown may take on any CPU box
    wait_until(lambda: proc.metric("edgewatch_source_queue_depth", source="london") >= 140, 60, "140 frames queued",
               proc)
    rc = proc.terminate(timeout=30)
    assert_no_abort(proc)
    assert rc == 3, proc.log_text()[-3000:]
    last = output_lines(proc)[-1]
    found = re.fullmatch(r"exit 3: shutdown did not finish within 3s; (\d+) frame\(s\) read but not processed", last)
    assert found is not None, last
    assert int(found.group(1)) >= 1  # how many depends on the CPU: that some are left and said is the point
    assert f"not processed {found.group(1)}," in proc.log_text()  # the source's summary line says the same


# -- item 6: an address the web server cannot listen on -----------------------------------------------------
@pytest.mark.parametrize("case", ["busy-http-port", "foreign-host", "api-overlaps-http"])
def test_a_port_it_cannot_listen_on_is_one_line_and_rc_1(
    procs: Callable[..., DaemonProcess], tmp_path: Path, models_dir: Path, media_dir: Path, case: str
) -> None:
    port = free_port()
    web: dict[str, Any] = {
        "busy-http-port": {"http": {"enabled": True, "host": "127.0.0.1", "port": port}},
        "foreign-host": {"http": {"enabled": True, "host": "203.0.113.5", "port": port}},
        "api-overlaps-http": {
            "http": {"enabled": True, "host": "0.0.0.0", "port": port},
            "api": {"enabled": True, "host": "127.0.0.1", "port": port},
        },
    }[case]
    config = {**small_config(models_dir, pictures(tmp_path, media_dir), []), **web}
    with socket.socket() as holder:
        if case == "busy-http-port":
            holder.bind(("127.0.0.1", port))
            holder.listen()
        proc = procs(tmp_path, config, log_level="warning")
        rc = proc.start().wait(60)
    assert_no_abort(proc)
    lines = output_lines(proc)
    assert rc == 1 and len(lines) == 1, lines
    # `run` refuses it while checking the config (as `validate` does) or when it starts the servers
    assert re.search(rf"(http|api)\b.*: cannot listen on \S+:{port}: ", lines[0]), lines


def test_http_and_api_on_one_address_share_one_server_and_a_good_run_exits_0(
    procs: Callable[..., DaemonProcess], tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    port = free_port()
    web = {
        "http": {"enabled": True, "host": "127.0.0.1", "port": port},
        "api": {"enabled": True, "host": "127.0.0.1", "port": port},
    }
    sinks = [{"id": "out", "type": "jsonl", "path": str(tmp_path / "results.jsonl")}]
    proc = procs(tmp_path, {**small_config(models_dir, pictures(tmp_path, media_dir), sinks), **web})
    assert proc.start().wait(60) == 0
    assert_no_abort(proc)
    assert re.search(rf"INFO daemon.web.server: http and api: .* on http://127.0.0.1:{port}\n", proc.log_text())
    assert len([r for r in read_jsonl(tmp_path / "results.jsonl") if r["kind"] == "result"]) == 2


# -- item 10: a run that delivered nothing ------------------------------------------------------------------
def test_a_sink_that_delivered_nothing_and_a_failed_source_exit_4(
    procs: Callable[..., DaemonProcess], tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """Both at once, one daemon: a JSONL path under /proc and an image folder that does not exist."""
    source = {"id": "pics", "type": "images", "folder": str(tmp_path / "no-such-folder")}
    sinks = [{"id": "out", "type": "jsonl", "path": "/proc/nope/results.jsonl"}]
    proc = procs(tmp_path, small_config(models_dir, source, sinks))
    assert proc.start().wait(60) == 4
    assert_no_abort(proc)
    last = output_lines(proc)[-1]
    assert last.startswith("exit 4: source pics failed: ") and "no-such-folder" in last, last
    assert "; sink out failed to start (" in last and "/proc/nope" in last, last


# -- item 11: a broker that refuses the login ---------------------------------------------------------------
def test_a_refused_mqtt_login_is_a_state_healthz_unhealthy_and_nothing_counted_published(
    procs: Callable[..., DaemonProcess], tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    with Mosquitto(users={"edge": PASSWORD}) as broker:
        sinks = [
            {"id": "out", "type": "jsonl", "path": str(tmp_path / "results.jsonl"), "flush": "every"},
            {
                "id": "mqtt",
                "type": "mqtt",
                "host": "127.0.0.1",
                "port": broker.port,
                "username": "edge",
                "password": "${MQTT_PASSWORD}",
                "reconnect_min_s": 1,
                "reconnect_max_s": 1,
                "auth_grace_s": 2,
            },
        ]
        source = pictures(tmp_path, media_dir, loop=True, fps=5)
        proc = procs(tmp_path, small_config(models_dir, source, sinks), env={"MQTT_PASSWORD": "wrong-" + PASSWORD})
        proc.start().wait_for_log("edgewatch running")
        wait_until(lambda: not proc.healthz()["sinks"]["mqtt"]["healthy"], 30, "mqtt sink unhealthy", proc)
        health = proc.healthz()
        assert not health["healthy"]  # the sink is not `required`, but a refused login counts anyway
        assert health["sinks"]["mqtt"]["reason"].startswith("auth_failed for ")
        assert "Not authorized" in health["sinks"]["mqtt"]["reason"]
        wait_until(
            lambda: proc.metric("edgewatch_sink_auth_failures_total", sink="mqtt") >= 3,
            30,
            "three refused logins",
            proc,
        )
        assert proc.metric("edgewatch_sink_auth_failed", sink="mqtt") == 1
        assert proc.metric("edgewatch_sink_published_total", sink="mqtt") == 0  # nothing acknowledged
        assert proc.metric("edgewatch_sink_published_total", sink="out") > 0
        rc = proc.terminate()
    text = proc.log_text()
    assert rc == 4, text[-3000:]
    assert text.count("ERROR daemon.sinks.mqtt_auth") == 1  # logged once (then once a minute)
    assert "exit 4: sink mqtt: broker refused the login of user edge: Not authorized" in output_lines(proc)[-1]
    assert PASSWORD not in text


def test_an_accepted_login_counts_what_the_broker_acknowledged(
    procs: Callable[..., DaemonProcess], tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    with Mosquitto(users={"edge": PASSWORD}) as broker:
        seen = broker.subscribe("edgewatch/+/results")
        sinks = [
            {
                "id": "mqtt",
                "type": "mqtt",
                "host": "127.0.0.1",
                "port": broker.port,
                "username": "edge",
                "password": "${MQTT_PASSWORD}",
                "kinds": ["result"],
            }
        ]
        proc = procs(
            tmp_path, small_config(models_dir, pictures(tmp_path, media_dir), sinks), env={"MQTT_PASSWORD": PASSWORD}
        )
        assert proc.start().wait(60) == 0
        seen.wait_for_count("edgewatch/pics/results", 2)
    assert "sink mqtt: published 2, failed 0, dropped 0" in proc.log_text()
