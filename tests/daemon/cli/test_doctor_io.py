"""`edgewatch doctor`'s source and sink checks: a real video file, a real mosquitto, a closed port, masked secrets."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon import registry
from daemon.__main__ import main
from daemon.cli.doctor import check_mqtt, check_sink, check_sources
from daemon.sinks.mqtt import MqttOptions
from tests.conftest import ROOT
from tests.fixtures.mosquitto import Mosquitto, free_port

VIDEO = (ROOT / ".." / "shared" / "media" / "london_street_TestV4.mp4").resolve()
PASSWORD = "Sup3r-s3cret"


def _source(**fields: Any) -> Any:
    return registry.resolve("source", fields["type"]).Options.model_validate(fields)


def test_a_video_file_opens_with_codec_size_and_fps() -> None:
    if not VIDEO.is_file():
        pytest.skip(f"{VIDEO} is not here")
    [check] = check_sources([_source(id="street", type="file", path=str(VIDEO))])
    assert check.status == "ok", check.detail
    assert "h264, 1280x720, 29.955 fps, first frame in " in check.detail


def test_a_missing_file_fails_with_its_name(tmp_path: Path) -> None:
    [check] = check_sources([_source(id="gone", type="file", path=str(tmp_path / "gone.mp4"))])
    assert check.status == "fail" and "gone.mp4 does not exist" in check.detail and check.fix


def test_an_rtsp_password_is_never_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens: the open fails at once
    in_url = _source(id="cam1", type="rtsp", url=f"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/live",
                     open_timeout_s=2)
    as_field = _source(id="cam2", type="rtsp", url=f"rtsp://127.0.0.1:{port}/live", username="admin",
                       password=PASSWORD, open_timeout_s=2)
    checks = check_sources([in_url, as_field])
    assert [c.status for c in checks] == ["fail", "fail"]
    assert "rtsp://***@127.0.0.1" in checks[0].detail
    assert all(PASSWORD not in c.detail + c.fix for c in checks)
    # the example config with its video replaced by the camera (models and pipeline as shipped)
    text = (ROOT / "configs" / "vehicle-plate-ocr.yaml").read_text().split("\nsources:")[0]
    config = tmp_path / "cams.yaml"
    config.write_text(text.replace("${EDGEWATCH_MODELS:-../../shared/models}", str(ROOT.parent / "shared" / "models"))
                      + f"\nsources:\n  - {{id: cam, type: rtsp, open_timeout_s: 2, "
                      f"url: 'rtsp://admin:{PASSWORD}@127.0.0.1:{port}/live'}}\n")
    for extra in ([], ["--json"]):
        assert main(["doctor", str(config), *extra]) == 1
        captured = capsys.readouterr()
        assert "source cam" in captured.out and "rtsp://***@127.0.0.1" in captured.out
        assert PASSWORD not in captured.out + captured.err


def test_mqtt_broker_reachable_refused_and_closed(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    broker = mosquitto_factory(users={"edge": "right-password"})
    good = MqttOptions(id="broker", type="mqtt", host=broker.host, port=broker.port, username="edge",
                       password="right-password")
    ok = check_mqtt(good)
    assert ok.status == "ok" and f"mqtt://{broker.host}:{broker.port}: connected as edge" == ok.detail
    refused = check_mqtt(good.model_copy(update={"password": None}))
    assert refused.status == "fail" and "refused" in refused.detail and "username/password" in refused.fix
    closed = check_mqtt(MqttOptions(id="broker", type="mqtt", host="127.0.0.1", port=free_port(),
                                    connect_timeout_s=2))
    assert closed.status == "fail" and "unreachable" in closed.detail and "start the broker" in closed.fix


def test_file_sinks_need_a_writable_folder(tmp_path: Path) -> None:
    jsonl = registry.resolve("sink", "jsonl").Options.model_validate(
        {"id": "out", "type": "jsonl", "path": str(tmp_path / "new" / "r.jsonl")})
    assert check_sink(jsonl, tmp_path).status == "ok"
    (tmp_path / "file").write_text("")
    blocked = jsonl.model_copy(update={"path": str(tmp_path / "file" / "r.jsonl")})
    assert check_sink(blocked, tmp_path).status == "fail"
    snaps = registry.resolve("sink", "snapshots").Options.model_validate({"id": "snaps", "type": "snapshots"})
    check = check_sink(snaps, tmp_path / "state")
    assert check.status == "ok" and str(tmp_path / "state" / "snapshots") in check.detail


def test_doctor_json_lists_the_file_source(capsys: pytest.CaptureFixture[str]) -> None:
    if not VIDEO.is_file():
        pytest.skip(f"{VIDEO} is not here")
    main(["doctor", str(ROOT / "configs" / "vehicle-plate-ocr.yaml"), "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["source london"]["status"] == "ok" and "1280x720" in checks["source london"]["detail"]
    assert checks["sink results"]["status"] == "ok"


def test_no_connect_opens_no_source_and_no_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "configs" / "vehicle-plate-ocr.yaml").read_text().split("\nsources:")[0]
    config = tmp_path / "c.yaml"
    config.write_text(text.replace("${EDGEWATCH_MODELS:-../../shared/models}", str(ROOT.parent / "shared" / "models"))
                      + f"\nsources:\n  - {{id: cam, type: rtsp, url: 'rtsp://127.0.0.1:{free_port()}/live'}}\n"
                      f"sinks:\n  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {free_port()}}}\n")
    assert main(["doctor", str(config), "--json"]) == 1  # the camera is not there, nor the broker
    capsys.readouterr()
    assert main(["doctor", str(config), "--json", "--no-connect"]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["source cam"] == {"name": "source cam", "status": "ok", "detail": "not opened (--no-connect)",
                                    "fix": ""}
    assert checks["sink broker"]["detail"] == "not opened (--no-connect)"


# paho's connect() drops, unclosed, the socket whose TLS handshake failed; collected inside this test
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_mqtt_over_tls_needs_the_brokers_ca(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    broker = mosquitto_factory(tls=True)
    with_ca = MqttOptions(id="broker", type="mqtt", host=broker.host, port=broker.port,
                          tls={"ca_file": broker.ca_file})
    assert check_mqtt(with_ca).status == "ok"
    system_cas = check_mqtt(with_ca.model_copy(update={"tls": with_ca.tls.model_copy(update={"ca_file": None})}))
    assert system_cas.status == "fail" and "TLS handshake failed" in system_cas.detail
    assert "tls.ca_file" in system_cas.fix
    gc.collect()
