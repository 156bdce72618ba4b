"""The runtime overlay: reading and writing overlay.json, one source entry's validation, applying it to a config."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from daemon.config import Config, load_config
from daemon.control.errors import ControlError
from daemon.control.overlay import (
    Overlay,
    OverlayError,
    apply_overlay,
    describe_overlay,
    effective_with_overlay,
    overlay_path,
    read_overlay,
    validate_source,
    write_overlay,
)


@pytest.fixture
def config(tmp_path: Path, models_dir: Path, media_dir: Path) -> Config:
    video = str(media_dir / "london_street_TestV4.mp4")
    data = {
        "pipeline": {"name": "p", "detector": "det"},
        "models": {"det": {"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")}},
        "sources": [{"id": cam, "type": "file", "path": video} for cam in ("cam1", "cam2")],
        "state_dir": str(tmp_path / "state"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(path)


def test_read_write_round_trip(tmp_path: Path) -> None:
    path = overlay_path(tmp_path)
    assert read_overlay(path).empty  # no file yet: nothing changed at runtime
    overlay = Overlay(added=[{"id": "cam9", "type": "file", "path": "/x.mp4"}], removed=["cam1"],
                      detect={"cam2": False})
    write_overlay(path, overlay)
    assert read_overlay(path) == overlay
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # added entries may carry camera URLs


@pytest.mark.parametrize(("text", "named"), [("{not json", "overlay.json"), ('{"added": 5}', "added"),
                                              ('{"colour": 1}', "colour")])
def test_unusable_file_names_file_and_field(tmp_path: Path, text: str, named: str) -> None:
    path = overlay_path(tmp_path)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(OverlayError, match="not a valid runtime overlay") as caught:
        read_overlay(path)
    assert str(path) in str(caught.value) and named in str(caught.value)


def test_validate_source_resolves_paths_like_yaml(tmp_path: Path) -> None:
    options, resolved = validate_source({"id": "cam9", "type": "file", "path": "videos/a.mp4", "fps": 5}, tmp_path)
    assert options.id == "cam9" and options.fps == 5
    assert resolved["path"] == str(tmp_path / "videos/a.mp4")


@pytest.mark.parametrize(("entry", "fields"), [
    ({"id": "c", "type": "teleport"}, {"type"}),
    ({"id": "c"}, {"type"}),
    ({"id": "c", "type": "file", "fps": -1, "colour": 1}, {"fps", "colour", "path"}),
    ({"id": "bad id!", "type": "rtsp", "url": "rtsp://h/s", "reconnect": {"max_s": "soon"}}, {"id", "reconnect.max_s"}),
])
def test_invalid_source_lists_each_field(tmp_path: Path, entry: dict[str, object], fields: set[str]) -> None:
    with pytest.raises(ControlError) as caught:
        validate_source(entry, tmp_path)
    assert caught.value.status == 422
    assert {e.field for e in caught.value.errors} == fields
    assert all(e.message for e in caught.value.errors)


def test_apply_adds_removes_and_sets_aside(config: Config, media_dir: Path) -> None:
    video = str(media_dir / "london_street_TestV4.mp4")
    overlay = Overlay(added=[{"id": "cam3", "type": "file", "path": video}], removed=["cam1"],
                      enabled={"cam2": False}, detect={"cam3": False})
    applied = apply_overlay(config, overlay, Path("/"))
    assert [s.id for s in applied.config.sources] == ["cam3"]
    assert list(applied.disabled) == ["cam2"] and applied.added == {"cam3"} and not applied.problems
    assert [s.id for s in config.sources] == ["cam1", "cam2"]  # the YAML config itself is untouched


def test_yaml_wins_and_broken_entries_are_skipped(config: Config) -> None:
    overlay = Overlay(added=[{"id": "cam2", "type": "file", "path": "/other.mp4"},
                             {"id": "cam4", "type": "file", "fps": 0}])
    applied = apply_overlay(config, overlay, Path("/"))
    assert [s.id for s in applied.config.sources] == ["cam1", "cam2"]
    assert applied.config.sources[1].model_dump()["path"] != "/other.mp4"
    assert len(applied.problems) == 2
    assert "'cam2' is in the YAML now" in applied.problems[0]
    assert "'cam4' skipped" in applied.problems[1] and "fps" in applied.problems[1]


def test_effective_with_overlay_reads_state_dir(config: Config) -> None:
    assert effective_with_overlay(config) == (config, [])
    overlay = Overlay(removed=["cam2"], detect={"cam1": False})
    write_overlay(overlay_path(config.state_dir), overlay)
    effective, notes = effective_with_overlay(config)
    assert [s.id for s in effective.sources] == ["cam1"]
    assert notes == describe_overlay(overlay, overlay_path(config.state_dir))
    assert "  removed: cam2" in notes and "  inference off (detect OFF): cam1" in notes
    assert json.loads(overlay_path(config.state_dir).read_text())["version"] == 1


def test_references_resolved_for_the_check_kept_in_the_overlay(tmp_path: Path) -> None:
    (tmp_path / "campw").write_text("s3cret\n", encoding="utf-8")
    entry = {"id": "gate", "type": "rtsp", "url": "rtsp://admin:${cred:campw}@10.0.0.5/stream"}
    options, kept = validate_source(entry, tmp_path, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert "s3cret" in str(options.model_dump(mode="python")["url"])
    assert kept["url"] == entry["url"]  # overlay.json never holds the password
    with pytest.raises(ControlError) as caught:
        validate_source(entry, tmp_path, env={})
    assert [e.field for e in caught.value.errors] == ["url"]
    message = caught.value.errors[0].message
    assert "${cred:campw}" in message and "CREDENTIALS_DIRECTORY" in message
