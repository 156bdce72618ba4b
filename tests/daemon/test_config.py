"""Config loading: valid configs load, every broken one gives a one-paragraph error with its line number."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config
from tests.conftest import MEDIA, MODELS, ROOT

BASE = """\
models:
  det:
    type: yolox
    path: {models}/yolox_nano.onnx
  cls:
    type: classify
    path: {models}/squeezenet1.1_fp16.onnx
    labels_file: {models}/imagenet_labels.txt
pipeline:
  name: p
  detector: det
sources:
  - id: cam1
    type: file
    path: {media}/london_street_TestV4.mp4
  - id: cam2
    type: rtsp
    url: rtsp://user:hunter2@127.0.0.1:8554/cam
sinks:
  - id: out
    type: jsonl
    path: {out}/results.jsonl
  - id: broker
    type: mqtt
    host: 127.0.0.1
    port: 1883
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text.format(models=MODELS, media=MEDIA, out=tmp_path))
    return path


def replace(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def test_base_config_is_valid(tmp_path: Path, models_dir: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert [s.id for s in config.sources] == ["cam1", "cam2"]
    assert config.sources[0].queue.policy is None  # resolved per source kind by the capture
    assert set(config.models) == {"det", "cls"}


# (case id, broken YAML, expected location in the message, expected line, expected words)
BROKEN = [
    ("unknown top-level key", BASE + "sourcez: []\n", "sourcez", 27, "unknown key"),
    ("unknown source key", replace("    type: file\n", "    type: file\n    colour: red\n"),
     "sources[0].colour", 15, "unknown key 'colour'"),
    ("wrong type", BASE + "batch:\n  max_size: four\n", "batch.max_size", 28, "valid integer"),
    ("missing model file", replace("yolox_nano.onnx", "nope.onnx"), "models.det.path", 4, "does not exist"),
    ("bad rtsp url", replace("rtsp://user:hunter2@", "http://user:hunter2@"), "sources[1].url", 18, "rtsp"),
    ("duplicate source ids", replace("id: cam2", "id: cam1"), "sources[1].id", 16, "duplicate id"),
    ("bad queue policy", replace("    type: file\n", "    type: file\n    queue: {{policy: drop_some}}\n"),
     "sources[0].queue.policy", 15, "drop_oldest"),
    ("unknown source type", replace("type: file", "type: firewire"), "sources[0].type", 14, "firewire"),
    ("unknown sink type", replace("type: jsonl", "type: kafka"), "sinks[0].type", 21, "kafka"),
    ("missing pipeline", replace("pipeline:\n  name: p\n  detector: det\n", ""), "pipeline", None, "missing"),
    ("unknown model in pipeline", replace("detector: det", "detector: dett"), "pipeline.detector", 11,
     "unknown model 'dett'"),
    ("classifier as detector", replace("detector: det", "detector: cls"), "pipeline.detector", 11,
     "classify model"),
    ("unset environment variable", replace("host: 127.0.0.1", "host: ${{EW_TEST_UNSET_HOST}}"),
     "line 25", 25, "EW_TEST_UNSET_HOST is not set"),
    ("invalid YAML", BASE + "batch: [1, 2\n", "line", 28, "not valid YAML"),
    ("port out of range", replace("port: 1883", "port: 70000"), "sinks[1].port", 26, "65535"),
    ("negative fps", replace("    type: file\n", "    type: file\n    fps: -5\n"), "sources[0].fps", 15,
     "greater than 0"),
    ("no sources", BASE.split("sources:")[0] + "sources: []\n", "sources", 12, "at least 1"),
    ("unreadable secret file", replace("port: 1883", "port: 1883\n    password: ${{file:/nonexistent/pw}}"),
     "line 27", 27, "cannot read"),
    ("unknown model type", replace("type: yolox", "type: yolo99"), "models.det.type", 3, "yolo99"),
    ("not a mapping", "- just\n- a list\n", "top level", None, "expected a mapping"),
    ("bad source id", replace("id: cam1", "id: 'cam 1/x'"), "sources[0].id", 13, "pattern"),
    ("zone for unknown source",
     replace("  detector: det\n", "  detector: det\n  tracking:\n    events:\n"
             "      zones:\n        cam9: [{{name: gate, polygon: [[0, 0], [9, 0], [9, 9]]}}]\n"),
     "pipeline.tracking.events.zones.cam9", 15, "unknown source 'cam9'"),
    ("unknown pipeline key", replace("  name: p\n", "  name: p\n  detektor: det\n"), "pipeline.detektor", 11,
     "unknown key"),
]


@pytest.mark.parametrize(("case", "text", "where", "line", "words"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_config_gives_one_paragraph_error(
    tmp_path: Path, models_dir: Path, case: str, text: str, where: str, line: int | None, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert str(path) in message
    assert where in message, message
    if line is not None:
        assert re.search(rf"\bline {line}\b", message), message
    assert words in message, message
    assert "hunter2" not in message


def test_every_error_is_reported_at_once(tmp_path: Path, models_dir: Path) -> None:
    text = replace("port: 1883", "port: 70000").replace("detector: det", "detector: nope")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert "sinks[1].port" in str(info.value) and "pipeline.detector" in str(info.value)


def test_secrets_from_env_file_and_credentials_directory(tmp_path: Path, models_dir: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("s3cret-cred")
    text = replace("port: 1883", "port: ${{EW_PORT:-1883}}\n    username: ${{EW_USER}}\n"
                   "    password: ${{cred:mqtt_password}}")
    text = text.replace("rtsp://user:hunter2@", "rtsp://user:${{file:" + str(secret) + "}}@")
    config = load_config(write(tmp_path, text), env={"EW_USER": "edge", "CREDENTIALS_DIRECTORY": str(creds)})
    mqtt = config.sinks[1]
    assert mqtt.port == 1883 and mqtt.username == "edge"  # type: ignore[attr-defined]
    assert mqtt.password.get_secret_value() == "s3cret-cred"  # type: ignore[attr-defined]
    assert "s3cret-file@" in str(config.sources[1].url)  # type: ignore[attr-defined]


def test_secret_values_are_not_echoed_in_errors(tmp_path: Path, models_dir: Path) -> None:
    text = replace("port: 1883", "port: ${{EW_PORT}}")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={"EW_PORT": "topsecretvalue"})
    assert "sinks[1].port" in str(info.value)
    assert "topsecretvalue" not in str(info.value)


def test_relative_model_paths_are_relative_to_the_config_file(tmp_path: Path, models_dir: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "det.onnx").write_bytes((models_dir / "yolox_nano.onnx").read_bytes())
    text = replace("path: {models}/yolox_nano.onnx", "path: m/det.onnx")
    config = load_config(write(tmp_path, text))
    assert Path(config.models["det"].path) == tmp_path / "m" / "det.onnx"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path: Path, models_dir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWATCH_DEMO_VIDEO", str(MEDIA / "london_street_TestV4.mp4"))
    monkeypatch.setenv("EDGEWATCH_STATE_DIR", str(tmp_path))
    creds = tmp_path / "credentials"  # what systemd's LoadCredential= provides on a real box
    creds.mkdir()
    for name in ("camera_password", "mqtt_password"):
        (creds / name).write_text("not-a-real-secret")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = load_config(path)
    assert config.sources, path



@pytest.mark.parametrize("name", ["demo.yaml", "inference-api.yaml", "vehicle-plate-ocr.yaml",
                                  "vehicle-plates-tracked.yaml"])
def test_example_configs_write_to_the_checkouts_out_and_var(name: str, models_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the working directory: `make demo` writes out/demo-results.jsonl at the root, as the README says."""
    monkeypatch.delenv("EDGEWATCH_OUT", raising=False)
    monkeypatch.delenv("EDGEWATCH_STATE_DIR", raising=False)
    monkeypatch.setenv("EDGEWATCH_DEMO_VIDEO", str(MEDIA / "london_street_TestV4.mp4"))
    monkeypatch.chdir(tmp_path)
    config = load_config(ROOT / "configs" / name)
    assert Path(config.state_dir).resolve() == ROOT / "var"
    files = [Path(sink.path).resolve() for sink in config.sinks if sink.type == "jsonl"]  # type: ignore[attr-defined]
    assert files and all(f.parent == ROOT / "out" for f in files), files
    if name == "demo.yaml":
        assert files == [ROOT / "out" / "demo-results.jsonl"]

def test_validate_command_exit_codes(tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.__main__ import main

    good = write(tmp_path, BASE)
    assert main(["validate", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(BASE.format(models=MODELS, media=MEDIA, out=tmp_path)) + "bogus: 1\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bogus" in err and "line 27" in err


PATHS = """\
models:
  det: {type: yolox, path: MODELS/yolox_nano.onnx, runtime: {trt_cache_dir: cache/trt}}
pipeline: {name: p, detector: det}
sources:
  - {id: photos, type: images, folder: media}
  - {id: clip, type: file, path: /srv/clip.mp4}
  - {id: cam, type: rtsp, url: 'rtsp://127.0.0.1:8554/cam'}
sinks:
  - {id: out, type: jsonl, path: 'out/{source_id}.jsonl'}
  - {id: shots, type: snapshots, dir: shots}
  - id: broker
    type: mqtt
    spool: {path: var/broker.spool.db}
    tls: {ca_file: tls/ca.pem, cert_file: tls/client.pem, key_file: tls/client.key}
api: {model_dirs: [models, /opt/models]}
state_dir: state
"""


def test_every_relative_path_is_relative_to_the_config_file(tmp_path: Path, models_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "pipeline.yaml").write_text(PATHS.replace("MODELS", str(MODELS)))
    (conf / "tls").mkdir()
    for name in ("ca.pem", "client.pem", "client.key"):  # checked to exist while the config loads
        (conf / "tls" / name).write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(conf / "pipeline.yaml")
    photos, clip, cam = config.sources
    out, shots, broker = config.sinks
    found = {
        "state_dir": config.state_dir,
        "api.model_dirs": config.api.model_dirs,
        "trt_cache_dir": str(config.models["det"].runtime.trt_cache_dir),
        "images folder": photos.folder,  # type: ignore[attr-defined]
        "file path": clip.path,  # type: ignore[attr-defined]
        "rtsp url": cam.url,  # type: ignore[attr-defined]
        "jsonl path": out.path,  # type: ignore[attr-defined]
        "snapshots dir": shots.dir,  # type: ignore[attr-defined]
        "spool path": broker.spool.path,  # type: ignore[attr-defined]
        "tls files": [broker.tls.ca_file, broker.tls.cert_file, broker.tls.key_file],  # type: ignore[attr-defined]
    }
    assert found == {
        "state_dir": f"{conf}/state",
        "api.model_dirs": [f"{conf}/models", "/opt/models"],  # absolute paths stay as written
        "trt_cache_dir": f"{conf}/cache/trt",
        "images folder": f"{conf}/media",
        "file path": "/srv/clip.mp4",
        "rtsp url": "rtsp://127.0.0.1:8554/cam",  # URLs too
        "jsonl path": f"{conf}/out/{{source_id}}.jsonl",
        "snapshots dir": f"{conf}/shots",
        "spool path": f"{conf}/var/broker.spool.db",
        "tls files": [f"{conf}/tls/ca.pem", f"{conf}/tls/client.pem", f"{conf}/tls/client.key"],
    }


@pytest.mark.parametrize(("env", "expected"), [(None, "CONF/var"), ("/srv/state", "/srv/state"),
                                               ("state", "CONF/state")])
def test_state_dir_default_is_beside_the_config_file(tmp_path: Path, models_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     env: str | None, expected: str) -> None:
    """Unset, state_dir is $EDGEWATCH_STATE_DIR, else var; relative, either is taken from the config's folder."""
    if env is None:
        monkeypatch.delenv("EDGEWATCH_STATE_DIR", raising=False)
    else:
        monkeypatch.setenv("EDGEWATCH_STATE_DIR", env)
    monkeypatch.chdir("/")
    config = load_config(write(tmp_path, BASE))
    assert config.state_dir == expected.replace("CONF", str(tmp_path))


def test_a_run_from_another_directory_writes_beside_the_config(tmp_path: Path, models_dir: Path, media_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Output files, the MQTT spool and the state_dir land beside the config, never in the working directory."""
    from daemon.__main__ import main

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "run.yaml").write_text(
        f"models: {{det: {{type: yolox, path: {models_dir}/yolox_nano.onnx}}}}\n"
        "pipeline: {name: photos, detector: det}\n"
        f"sources: [{{id: photos, type: images, folder: {media_dir}, image_ext: [.jpg], loop: false}}]\n"
        "sinks:\n"
        "  - {id: out, type: jsonl, path: out/results.jsonl}\n"
        f"  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {_closed_port()}, close_timeout_s: 0.2,"
        " connect_timeout_s: 0.5}\n"
        "stats_interval_s: 0\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("EDGEWATCH_STATE_DIR", raising=False)
    # 4: the broker sink delivered nothing this run (all of it waits in its spool for the next start)
    assert main(["run", str(conf / "run.yaml")]) == 4
    assert (conf / "out" / "results.jsonl").stat().st_size > 0
    assert (conf / "var" / "broker.spool.db").is_file()  # <state_dir>/<sink id>.spool.db, state_dir: var
    assert list(elsewhere.iterdir()) == []


def _closed_port() -> int:
    """A loopback port nothing listens on: the MQTT sink keeps spooling instead of delivering."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


UNRESOLVED = replace(
    "    port: 1883\n", "    port: 1883\n    username: ew\n    password: ${{cred:mqtt_password}}\n"
).replace("rtsp://user:hunter2@", "rtsp://user:${{CAM_PW}}@")


def test_check_config_notes_unresolved_references_and_checks_the_rest(tmp_path: Path, models_dir: Path) -> None:
    from daemon.config import check_config

    config, notes = check_config(write(tmp_path, UNRESOLVED), env={})
    assert len(notes) == 2 and "CAM_PW" in notes[0] and "cred:mqtt_password" in notes[1]
    assert len(config.sinks) == 2
    bad = write(tmp_path, UNRESOLVED.replace("    port: 1883\n", "    port: many\n"))
    with pytest.raises(ConfigError, match=r"sinks\[1\]\.port.*Also: .*cred:mqtt_password"):
        check_config(bad, env={})


def test_effective_config_masks_secrets(tmp_path: Path, models_dir: Path) -> None:
    from daemon.config import effective_config

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("topsecret")
    config = load_config(write(tmp_path, UNRESOLVED), env={"CREDENTIALS_DIRECTORY": str(creds), "CAM_PW": "hunter2"})
    data = effective_config(config)
    text = str(data)
    assert "topsecret" not in text and "hunter2" not in text
    assert data["sinks"][1]["password"] == "***"  # type: ignore[index]
    assert data["sources"][1]["url"] == "rtsp://***@127.0.0.1:8554/cam"  # type: ignore[index]
    assert data["models"]["det"]["confidence_threshold"] is not None  # type: ignore[index]  # defaults filled in


def test_validate_missing_secrets_flag_and_show_effective(tmp_path: Path, models_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.__main__ import main

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("CAM_PW", raising=False)
    path = write(tmp_path, UNRESOLVED)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "note:" in err and "--allow-missing-secrets" in err
    assert main(["validate", "--allow-missing-secrets", "--show-effective", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 unresolved references noted" in out and "type: yolox" in out and "hunter2" not in out
