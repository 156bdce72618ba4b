"""The ui: section through load_config: auth beyond loopback needs a token, kept out of the YAML; http: on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import ConfigError, load_config
from daemon.service.uioptions import UiOptions, auth_required, is_loopback
from tests.conftest import MODELS


def write(tmp_path: Path, http: dict[str, Any], ui: dict[str, Any]) -> Path:
    (tmp_path / "token").write_text("a-secret-token\n")
    config = {
        "models": {"det": {"type": "yolox", "path": str(MODELS / "yolox_nano.onnx")}},
        "pipeline": {"name": "p", "detector": "det"},
        "sources": [{"id": "cam", "type": "file", "path": "video.mp4"}],
        "http": http,
        "ui": ui,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


SECRET = {"token": "${file:token}"}


@pytest.mark.parametrize(
    ("http", "ui", "error"),
    [
        ({"enabled": True}, {"enabled": True}, None),  # loopback: no token needed
        ({"enabled": True, "host": "0.0.0.0"}, {"enabled": True, **SECRET}, None),
        ({"enabled": True, "host": "0.0.0.0"}, {"enabled": True}, "ui.token .*http.host 0.0.0.0 is not loopback"),
        ({"enabled": True}, {"enabled": True, "require_auth": True}, "ui.token .*require_auth is on"),
        ({"enabled": True}, {"enabled": True, "token": "in-the-yaml"}, "ui.token .*not in the file"),
        ({"enabled": False}, {"enabled": True}, "http.enabled .*set http.enabled: true"),
        ({"enabled": False, "host": "0.0.0.0"}, {"enabled": False}, None),  # ui off: nothing to check
    ],
)
def test_ui_section(tmp_path: Path, http: dict[str, Any], ui: dict[str, Any], error: str | None) -> None:
    path = write(tmp_path, http, ui)
    if error is None:
        assert load_config(path).ui.enabled == ui["enabled"]
        return
    with pytest.raises(ConfigError, match=error) as caught:
        load_config(path)
    assert "a-secret-token" not in str(caught.value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("camera-box.lan", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert auth_required(UiOptions(enabled=True), host) is not loopback
    assert auth_required(UiOptions(enabled=True, require_auth=True), host)
