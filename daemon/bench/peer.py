"""`edgewatch bench peer`: edgewatch beside Roboflow's InferencePipeline and the bare loop, same model/video/threads.

The peer runs in its own virtual environment (PyPI `streamvision`, never installed into the daemon's venv),
with the same onnxruntime, opencv-python and numpy releases as ours, as a subprocess (peer_driver.py) whose
callback is the bare loop's letterbox + `session.run`. Every contender runs once per round, rounds are
interleaved so that a busy neighbour hits all of them alike, and each figure is a median over rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from daemon.bench import reference

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EDGEWATCH_SHARED", ROOT.parent / "shared"))
PEER_VENV = Path(os.environ.get("EDGEWATCH_PEER_VENV", Path.home() / ".cache" / "edgewatch" / "peer-venv"))
PEER_PACKAGE = "streamvision==0.1.4"
DRIVER = Path(__file__).with_name("peer_driver.py")
DEFAULT_BATCHES = (1, 4)


def requirements() -> list[str]:
    """The peer's package and, pinned to what this venv has, the libraries that do the work in both."""
    return [PEER_PACKAGE] + [f"{name}=={version(name)}" for name in ("onnxruntime", "opencv-python", "numpy")]


def venv_commands(venv: Path, python: str = sys.executable) -> list[list[str]]:
    """The command lines that build the peer venv (what `ensure_venv` runs; nothing is run here)."""
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    return [[python, "-m", "venv", "--clear", str(venv)], pip + requirements()]


def ensure_venv(venv: Path = PEER_VENV, python: str = sys.executable) -> Path:
    """The peer venv's python, built once; rebuilt when the pinned requirements changed. pip's error is raised."""
    built, stamp = venv / "bin" / "python", venv / "edgewatch-requirements.txt"
    wanted = "\n".join(requirements())
    if built.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return built
    for command in venv_commands(venv, python):
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(
                f"bench peer: `{' '.join(command)}` failed ({done.returncode}):\n{done.stderr.strip()[-2000:]}"
            )
    stamp.write_text(wanted)
    return built


def peer_fps(python: Path, model: Path, videos: list[Path], threads: int, spin: bool) -> float:
    """Frames per second of InferencePipeline over `videos` (all sources together), from the driver's timing."""
    command = [
        str(python),
        str(DRIVER),
        "--model",
        str(model),
        "--threads",
        str(threads),
        "--spin",
        "on" if spin else "off",
        *map(str, videos),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(
            f"bench peer: the InferencePipeline run failed ({done.returncode}):\n{done.stderr.strip()[-2000:]}"
        )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return float(figures["frames"]) / float(figures["seconds"])


def runtime_text(threads: int | None, spin: bool) -> str:
    """The detector's runtime options: None threads = the daemon's default (parallel_runs auto, 1 thread each);
    a number = one session with that many intra-op threads and no split, as the peer and the bare loop run."""
    if threads is None:
        return f"{{spin_wait: {str(spin).lower()}}}"
    return f"{{intra_op_threads: {threads}, parallel_runs: 1, spin_wait: {str(spin).lower()}}}"


def daemon_config(
    videos: list[Path], model: Path, threads: int | None, batch: int, spin: bool, workdir: Path
) -> str:
    """A daemon config with one fast file source per video and the detector alone, results to JSONL."""
    runtime = runtime_text(threads, spin)
    sources = "".join(
        f"  - {{id: s{index}, type: file, path: '{video}', pace: fast, queue: {{size: 16}}}}\n"
        for index, video in enumerate(videos)
    )
    return (
        f"models:\n  det: {{type: yolox, path: '{model}', runtime: {runtime}}}\n"
        "pipeline: {name: bench, detector: det}\n"
        f"sources:\n{sources}"
        f"sinks:\n  - {{id: out, type: jsonl, path: '{workdir}/results.jsonl', flush: close}}\n"
        f"batch: {{max_size: {batch}, timeout_ms: 2}}\nstate_dir: '{workdir}/state'\n"
    )


def daemon_fps(
    videos: list[Path], model: Path, threads: int | None, batch: int, spin: bool, workdir: Path
) -> float:
    """Frames per second of the daemon over `videos` (all sources together), from the moment capture starts."""
    from daemon.app import Daemon
    from daemon.config import load_config

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "bench.yaml"
    path.write_text(daemon_config(videos, model, threads, batch, spin, workdir))
    config = load_config(path)
    daemon = Daemon(config)
    daemon.start()  # loads and warms the model up; the capture threads start at its very end
    t0 = time.perf_counter()
    stats = [daemon.stats.source(f"s{index}") for index in range(len(videos))]
    while not daemon.finished() or any(s.processed + sum(s.dropped.values()) < s.captured for s in stats):
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    daemon.stop()
    return sum(s.processed for s in stats) / seconds


def one_round(
    looped: Path, frames: list[reference.Frame], k: int, spin: bool, setup: dict[str, Any], tmp: Path
) -> dict[str, float]:
    """Every contender once on `k` streams with spinning `spin`; fps of all streams together."""
    model, threads, loops = setup["model"], setup["threads"], setup["loops"]
    count, seconds = reference.loop(model, frames, loops, threads, spin)
    figures = {"bare": count / seconds}
    if setup["python"] is not None:
        figures["peer"] = peer_fps(setup["python"], model, [looped] * k, threads, spin)
    for batch in setup["batches"]:
        workdir = Path(tempfile.mkdtemp(dir=tmp))
        figures[f"edgewatch_b{batch}"] = daemon_fps([looped] * k, model, None, batch, spin, workdir)
    # A/B: the same daemon with the old runtime (one session, `threads` intra-op threads, batches run whole)
    batch = max(setup["batches"])
    workdir = Path(tempfile.mkdtemp(dir=tmp))
    figures[f"edgewatch_b{batch}_one_session"] = daemon_fps([looped] * k, model, threads, batch, spin, workdir)
    return figures


def ratios(fps: dict[str, float]) -> dict[str, float]:
    """e2e / bare for every contender, and edgewatch / peer for every batch size."""
    out = {f"{name}_vs_bare": value / fps["bare"] for name, value in fps.items() if name != "bare"}
    if "peer" in fps:
        out.update(
            {f"{name}_vs_peer": value / fps["peer"] for name, value in fps.items() if name.startswith("edgewatch_")}
        )
    return out


def run(
    streams: str = "1,3",
    rounds: int = 3,
    spin: str = "on,off",
    batches: str = "1,4",
    peer: bool = True,
    loops: int = 3,
    threads: int = 2,
    video: Path | None = None,
    model: Path | None = None,
) -> dict[str, Any]:
    """Interleaved rounds over every (streams, spin) cell; medians of fps and the ratios of the medians."""
    video = video or SHARED / "media" / "london_street_TestV4.mp4"
    model = model or SHARED / "models" / "yolox_nano.onnx"
    for path in (video, model):
        if not path.is_file():
            raise FileNotFoundError(f"bench peer: {path} does not exist (set EDGEWATCH_SHARED or pass --video/--model)")
    cells = [(k, s) for k in parse_list(streams, "--streams") for s in parse_spins(spin)]
    setup = {
        "model": model,
        "threads": threads,
        "loops": loops,
        "batches": parse_list(batches, "--batches"),
        "python": ensure_venv() if peer else None,
    }
    frames = reference.decode(video)
    runs: dict[tuple[int, bool], list[dict[str, float]]] = {cell: [] for cell in cells}
    with tempfile.TemporaryDirectory(prefix="edgewatch-peer-") as name:
        tmp = Path(name)
        looped = tmp / "looped.mp4"  # the video `loops` times back to back: one file source, no seek
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-stream_loop",
                str(loops - 1),
                "-i",
                str(video),
                "-c",
                "copy",
                str(looped),
            ],
            check=True,
        )
        for _ in range(rounds):
            for k, spinning in cells:
                runs[(k, spinning)].append(one_round(looped, frames, k, spinning, setup, tmp))
    figures: dict[str, Any] = {
        "frames_per_stream": len(frames) * loops,
        "rounds": rounds,
        "threads": threads,
        "peer": PEER_PACKAGE if peer else "not run (--no-peer)",
    }
    for (k, spinning), measured in runs.items():
        fps = {key: statistics.median(r[key] for r in measured) for key in measured[0]}
        label = f"{k} stream{'s' if k > 1 else ''}, spin {'on' if spinning else 'off'}:"
        figures.update({f"{label} {key} fps": value for key, value in fps.items()})
        # the spread shows how much a shared machine moved the figures between rounds
        figures.update({f"{label} {key} fps per round": [round(r[key], 1) for r in measured] for key in fps})
        figures.update({f"{label} {key}": value for key, value in ratios(fps).items()})
    return figures


def parse_list(text: str, option: str) -> list[int]:
    """'1,3' -> [1, 3]; anything but positive integers is an error naming the option."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"bench peer: {option} takes comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"bench peer: {option} takes comma-separated positive integers, got {text!r}")
    return values


def parse_spins(text: str) -> list[bool]:
    """'on,off' -> [True, False]: ONNX Runtime's spin-wait settings to measure, in that order."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or any(name not in ("on", "off") for name in names):
        raise ValueError(f"bench peer: --spin takes on, off or on,off; got {text!r}")
    return [name == "on" for name in names]
