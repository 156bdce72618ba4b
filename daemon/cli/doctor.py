"""`edgewatch doctor [CONFIG]`: checks a box before the first run and says how to fix each problem."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from daemon.config import Config, ConfigError, check_config
from pipelines.models import ModelOptions

Status = Literal["ok", "warn", "fail"]

EXIT_OK, EXIT_FAIL = 0, 1
PACKAGES = ("edgewatch", "onnxruntime", "onnxruntime-gpu", "numpy", "opencv-python", "opencv-python-headless",
            "rapidocr_onnxruntime", "supervision", "pydantic", "paho-mqtt", "tensorrt", "cuda-python")
MIN_FREE_MB = 500  # the MQTT spool and snapshots live in state_dir

# How to get each GPU execution provider; printed with every missing one.
GPU_FIX = (
    "ONNX Runtime here is the CPU build. On an x86_64 box with an NVIDIA GPU: `pip uninstall -y onnxruntime && "
    "pip install onnxruntime-gpu` (CUDA 12 and cuDNN 9 from NVIDIA's packages; TensorRT 10 libraries on the "
    "library path for 'tensorrt'). On a Jetson: install NVIDIA's onnxruntime-gpu wheel for your JetPack "
    "(https://elinux.org/Jetson_Zoo#ONNX_Runtime or the jetson-ai-lab pip index), which includes the CUDA and "
    "TensorRT providers. Until then the models run on the CPU (the 'cpu' entry of providers). See docs/MODELS.md."
)


@dataclass
class Check:
    """One finding: what was checked, how it went, the detail, and the fix when it is not ok."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def register(subparsers: Any) -> None:
    doctor = subparsers.add_parser("doctor", help="check this box (and a config): packages, GPU, models, state_dir")
    doctor.add_argument("config", nargs="?", type=Path, help="pipeline YAML to check as well")
    doctor.add_argument("--json", action="store_true", help="one JSON object instead of the human report")
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.config)
    if args.json:
        print(json.dumps({"ok": all(c.status != "fail" for c in checks), "checks": [asdict(c) for c in checks]},
                         indent=2))
    else:
        for check in checks:
            print(f"[{check.status:>4}] {check.name}: {check.detail}")
            if check.fix:
                print(f"       fix: {check.fix}")
        fails, warns = sum(c.status == "fail" for c in checks), sum(c.status == "warn" for c in checks)
        print(f"{len(checks)} checks: {fails} failed, {warns} warnings")
    return EXIT_FAIL if any(c.status == "fail" for c in checks) else EXIT_OK


def run_checks(config_path: Path | None) -> list[Check]:
    checks = [check_python(), check_packages(), check_opencv(), check_gpu_visible()]
    available = _ort_providers()
    config: Config | None = None
    if config_path is not None:
        config, config_checks = check_config_file(config_path)
        checks += config_checks
    requested = sorted({p for m in config.models.values() for p in m.runtime.providers}) if config else []
    checks += check_providers(available, requested)
    checks += check_tensorrt(requested)
    if config is not None:
        checks += check_models(config)
        checks.append(check_state_dir(Path(config.state_dir)))
    return checks


def check_python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check("python", "ok" if ok else "fail", f"{platform.python_version()} at {sys.executable}",
                 "" if ok else "edgewatch needs Python 3.11 or newer")


def check_packages() -> Check:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    missing = [n for n in ("edgewatch", "numpy", "supervision", "pydantic") if n not in found]
    if "onnxruntime" not in found and "onnxruntime-gpu" not in found:
        missing.append("onnxruntime (or onnxruntime-gpu)")
    detail = ", ".join(f"{k} {v}" for k, v in found.items())
    fix = f"install {', '.join(missing)} (pip install from the checkout: systemd/README.md)" if missing else ""
    return Check("packages", "fail" if missing else "ok", detail, fix)


def check_opencv() -> Check:
    import cv2

    info = cv2.getBuildInformation()
    backends = {name: _build_flag(info, name) for name in ("FFMPEG", "GStreamer")}
    detail = f"OpenCV {cv2.__version__}; " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in backends.items())
    if not backends["FFMPEG"]:
        return Check("opencv", "warn", detail, "file and RTSP sources need OpenCV with FFmpeg "
                     "(pip install opencv-python-headless), or use `type: ffmpeg` sources")
    return Check("opencv", "ok", detail)


def _build_flag(info: str, name: str) -> bool:
    for line in info.splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == name:
            return value.strip().upper().startswith("YES")
    return False


def check_gpu_visible() -> Check:
    if shutil.which("nvidia-smi"):
        return Check("gpu", "ok", "nvidia-smi found (an NVIDIA dGPU driver is installed)")
    if Path("/etc/nv_tegra_release").exists() or shutil.which("tegrastats"):
        return Check("gpu", "ok", "Jetson (L4T) detected")
    return Check("gpu", "ok", "no NVIDIA GPU visible (no nvidia-smi, not a Jetson): CPU inference only")


def _ort_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def check_providers(available: Sequence[str], requested: Sequence[str]) -> list[Check]:
    from pipelines.runtime.base import ORT_PROVIDER_NAMES

    short = [name for name, ort_name in ORT_PROVIDER_NAMES.items() if ort_name in available or name == "cpu"]
    checks = [Check("onnxruntime providers", "ok", f"available: {', '.join(short)} ({', '.join(available)})")]
    missing = [p for p in requested if p != "cpu" and ORT_PROVIDER_NAMES[p] not in available]
    if missing:
        checks.append(Check("requested providers", "warn",
                            f"the config asks for {', '.join(missing)}, which this ONNX Runtime does not have",
                            GPU_FIX))
    elif requested:
        checks.append(Check("requested providers", "ok", f"all of {', '.join(requested)} available"))
    return checks


def check_tensorrt(requested: Sequence[str]) -> list[Check]:
    """TensorRT and cuda-python serve .engine files and build-engine: missing is a warning only when asked for."""
    found = {}
    for module in ("tensorrt", "cuda"):
        try:
            found[module] = metadata.version("cuda-python" if module == "cuda" else module)
        except metadata.PackageNotFoundError:
            continue
    if len(found) == 2:
        return [Check("tensorrt", "ok", f"tensorrt {found['tensorrt']}, cuda-python {found['cuda']}")]
    status: Status = "warn" if "tensorrt" in requested else "ok"
    return [Check("tensorrt", status, "the tensorrt and cuda-python packages are not installed (needed only for "
                  ".engine files and build-engine)", "pip install tensorrt cuda-python (dGPU) or use JetPack's "
                  "python3-libnvinfer (Jetson)" if status == "warn" else "")]


def check_config_file(path: Path) -> tuple[Config | None, list[Check]]:
    try:
        config, notes = check_config(path)
    except ConfigError as exc:
        return None, [Check("config", "fail", str(exc), "fix the settings named above")]
    checks = [Check("config", "ok", f"{path}: valid ({len(config.sources)} sources, {len(config.models)} models, "
                    f"{len(config.sinks)} sinks)")]
    checks += [Check("config reference", "warn", note, "provide it where the daemon runs (LoadCredential=, "
                     "Environment=; systemd/README.md)") for note in notes]
    return config, checks


def check_models(config: Config) -> list[Check]:
    return [check_model(name, options) for name, options in config.models.items()]


def check_model(name: str, options: ModelOptions) -> Check:
    from pipelines.models import load_model
    from pipelines.runtime.base import InferenceError, ModelLoadError
    from pipelines.runtime.open import open_runtime

    path = Path(options.path)
    if not path.is_file():
        return Check(f"model {name}", "fail", f"{path} does not exist", "put the file there (docs/MODELS.md)")
    if not os.access(path, os.R_OK):
        return Check(f"model {name}", "fail", f"{path} is not readable", "chmod a+r it, in a folder the unit can read")
    started = time.perf_counter()
    try:
        provider = "" if options.type == "tesseract" else open_runtime(path, options.runtime, stage=name).provider
        opened = time.perf_counter()
        load_model(options, name=name)
    except (ModelLoadError, InferenceError, ValueError, OSError) as exc:
        return Check(f"model {name}", "fail", f"{path}: {exc}", "check the model's type and options (docs/MODELS.md)")
    loaded_ms = (time.perf_counter() - opened) * 1000
    on = f" on {provider}" if provider else ""
    return Check(f"model {name}", "ok", f"{path.name} ({options.type}) loads{on}, "
                 f"session {1000 * (opened - started):.0f} ms, load with warm-up {loaded_ms:.0f} ms")


def check_state_dir(path: Path) -> Check:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the daemon creates state_dir: what matters is that it can
    if not os.access(probe, os.W_OK):
        return Check("state_dir", "fail", f"{path}: {probe} is not writable",
                     "under systemd it is StateDirectory= (/var/lib/edgewatch); else make it writable")
    free_mb = shutil.disk_usage(probe).free >> 20
    status: Status = "ok" if free_mb >= MIN_FREE_MB else "warn"
    return Check("state_dir", status, f"{path}: writable, {free_mb} MB free",
                 "" if status == "ok" else f"free some space: the MQTT spool and snapshots need more than "
                 f"{MIN_FREE_MB} MB")
