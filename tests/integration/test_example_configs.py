"""The example configs in configs/ run end to end on the real models and media."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.app import Daemon
from daemon.config import load_config
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

# Every shipped example, as a fresh clone sees it: no EDGEWATCH_* variables and no systemd credentials.
# Unresolved secrets in these files are notes (they exist only on a user's box); everything else must be valid.
EXAMPLES = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
EXPECTED_NOTES = {"cameras-mqtt.yaml": 3, "carpark.yaml": 5, "demo.yaml": 1}


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_config_validates_as_shipped(name: str, models_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWATCH_") and k != "CREDENTIALS_DIRECTORY"}
    proc = subprocess.run([sys.executable, "-m", "daemon", "validate", f"configs/{name}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"configs/{name}: valid" in proc.stdout
    assert proc.stderr.count("note: ") == EXPECTED_NOTES.get(name, 0), proc.stderr


def test_carpark_config_with_its_credentials(tmp_path: Path, models_dir: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    for name in ("camera_password", "mqtt_password"):
        (creds / name).write_text(f"{name}-value\n")
    config = load_config(ROOT / "configs" / "carpark.yaml",
                         env={"CREDENTIALS_DIRECTORY": str(creds), "EDGEWATCH_MODELS": str(models_dir)})
    assert [s.type for s in config.sources] == ["rtsp"] * 4
    assert all(s.password.get_secret_value() == "camera_password-value" for s in config.sources)  # type: ignore[attr-defined]
    assert config.models["vehicles"].class_agnostic_nms  # type: ignore[attr-defined]
    assert Path(config.models["plates"].path) == models_dir / "plate_det_y5fu_640.onnx"
    tracking = config.pipeline.tracking
    assert tracking is not None
    known = tracking.schedule.consensus.known
    assert {k.allow for k in known} == {True, False}
    assert {s.type for s in config.sinks} == {"mqtt", "snapshots", "jsonl"}


def test_vehicle_plate_ocr_config_runs_on_the_london_video(tmp_path: Path, models_dir: Path, media_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWATCH_OUT", str(tmp_path))
    monkeypatch.setenv("EDGEWATCH_STATE_DIR", str(tmp_path / "state"))
    config = load_config(ROOT / "configs" / "vehicle-plate-ocr.yaml")
    config.sources[0].stop_frame = 40  # type: ignore[attr-defined]
    config.status_interval_s = 0
    daemon = Daemon(config)
    daemon.start()
    daemon.wait()
    assert daemon.stop()
    results = [json.loads(line) for line in (tmp_path / "vehicle-plate-ocr.jsonl").read_text().splitlines()]
    results = [r for r in results if r["kind"] == "result"]
    assert len(results) == 40 and all(r["pipeline"] == "vehicle-plate-ocr" for r in results)
    vehicles = [d for r in results for d in r["detections"]]
    assert {d["class"] for d in vehicles} <= {"car", "bus", "truck", "motorcycle"}
    assert sum(d["class"] == "bus" for d in vehicles) >= 15  # the London buses, frame after frame
    big = [d for d in vehicles if d["class"] in ("car", "bus", "truck") and d["confidence"] >= 0.3
           and min(d["bbox"][2] - d["bbox"][0], d["bbox"][3] - d["bbox"][1]) >= 48]
    assert big and all("plates" in d["stages"] for d in big)  # the second stage ran on every eligible crop
    for plate in (p for d in big for p in d["stages"]["plates"]):
        x1, y1, x2, y2 = plate["bbox"]
        assert len(plate["keypoints"]) == 4 and x2 > x1 and y2 > y1
        assert "text" in plate["stages"]  # the third stage read every plate found
