"""`edgewatch bench peer`: the peer venv's command lines (nothing installed), its reuse, config and arithmetic."""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from daemon.bench import peer, peer_driver
from daemon.config import load_config
from daemon.sources.file import FileOptions


def test_the_venv_is_built_apart_with_our_pinned_libraries(tmp_path: Path) -> None:
    venv = tmp_path / "peer-venv"
    create, install = peer.venv_commands(venv, python="/usr/bin/python3")
    assert create == ["/usr/bin/python3", "-m", "venv", "--clear", str(venv)]
    assert install[:3] == [str(venv / "bin" / "python"), "-m", "pip"]  # never the daemon's own pip
    assert install[-4:] == [
        "streamvision==0.1.4",
        f"onnxruntime=={version('onnxruntime')}",
        f"opencv-python=={version('opencv-python')}",
        f"numpy=={version('numpy')}",
    ]
    assert peer.venv_commands(venv)[0][0] == sys.executable


def test_a_built_venv_with_the_same_pins_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text("")
    (tmp_path / "edgewatch-requirements.txt").write_text("\n".join(peer.requirements()))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"nothing should run: {args}")

    monkeypatch.setattr(peer.subprocess, "run", refuse)
    assert peer.ensure_venv(tmp_path) == python
    (tmp_path / "edgewatch-requirements.txt").write_text("streamvision==0.1.3")  # stale pins: rebuilt
    with pytest.raises(AssertionError, match="nothing should run"):
        peer.ensure_venv(tmp_path)


def test_a_failing_build_step_is_reported_with_its_command(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"`/bin/false -m venv --clear .*peer-venv` failed \(1\)"):
        peer.ensure_venv(tmp_path / "peer-venv", python="/bin/false")
    assert not (tmp_path / "peer-venv" / "edgewatch-requirements.txt").exists()


def test_k_fast_file_sources_with_the_spin_setting(tmp_path: Path, media_dir: Path, models_dir: Path) -> None:
    video = media_dir / "london_street_TestV4.mp4"
    path = tmp_path / "bench.yaml"
    path.write_text(peer.daemon_config([video] * 3, models_dir / "yolox_nano.onnx", 2, 4, True, tmp_path))
    config = load_config(path)
    files = [s for s in config.sources if isinstance(s, FileOptions)]
    assert [(s.id, s.path, s.pace) for s in files] == [(f"s{i}", str(video), "fast") for i in range(3)]
    runtime = config.models["det"].runtime
    assert (runtime.intra_op_threads, runtime.spin_wait, config.batch.max_size) == (2, True, 4)


def test_ratios_against_the_bare_loop_and_the_peer() -> None:
    fps = {"bare": 100.0, "peer": 70.0, "edgewatch_b1": 63.0, "edgewatch_b4": 84.0}
    assert peer.ratios(fps) == pytest.approx(
        {
            "peer_vs_bare": 0.7,
            "edgewatch_b1_vs_bare": 0.63,
            "edgewatch_b4_vs_bare": 0.84,
            "edgewatch_b1_vs_peer": 0.9,
            "edgewatch_b4_vs_peer": 1.2,
        }
    )
    assert set(peer.ratios({"bare": 10.0, "edgewatch_b4": 9.0})) == {"edgewatch_b4_vs_bare"}


def test_lists_and_spin_settings_are_parsed_with_clear_errors() -> None:
    assert peer.parse_list("1, 3", "--streams") == [1, 3]
    assert peer.parse_spins("on,off") == [True, False] and peer.parse_spins("off") == [False]
    for bad in ("", "0", "1,x"):
        with pytest.raises(ValueError, match="--streams takes comma-separated positive integers"):
            peer.parse_list(bad, "--streams")
    with pytest.raises(ValueError, match="--spin takes on, off or on,off; got 'fast'"):
        peer.parse_spins("fast")


def test_missing_shared_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope.mp4 does not exist \(set EDGEWATCH_SHARED"):
        peer.run(video=tmp_path / "nope.mp4", peer=False)


def test_the_driver_loads_the_reference_loop_by_file_path() -> None:
    module = peer_driver.load_reference()
    assert module.__name__ == "edgewatch_reference" and module.PAD == 114


def test_edgewatch_runs_with_its_default_runtime_and_the_a_b_with_one_session(tmp_path: Path, models_dir: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(peer.daemon_config([tmp_path / "v.mp4"], models_dir / "yolox_nano.onnx", None, 4, False, tmp_path))
    runtime = load_config(path).models["det"].runtime
    assert (runtime.intra_op_threads, runtime.parallel_runs, runtime.spin_wait) == (None, "auto", False)
    path.write_text(peer.daemon_config([tmp_path / "v.mp4"], models_dir / "yolox_nano.onnx", 2, 4, False, tmp_path))
    runtime = load_config(path).models["det"].runtime
    assert (runtime.intra_op_threads, runtime.parallel_runs) == (2, 1)
