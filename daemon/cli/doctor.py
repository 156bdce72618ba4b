"""`edgewatch doctor [CONFIG]`: checks a box before the first run and says how to fix each problem."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from daemon import registry
from daemon.config import Config, ConfigError, check_config
from daemon.sinks.base import SinkOptions
from daemon.sources.base import Source, SourceOptions, mask_credentials
from pipelines.models import ModelOptions

if TYPE_CHECKING:
    from daemon.sinks.mqtt import MqttOptions

Status = Literal["ok", "warn", "fail"]

EXIT_OK, EXIT_FAIL = 0, 1
PACKAGES = ("edgewatch", "onnxruntime", "onnxruntime-gpu", "numpy", "opencv-python", "opencv-python-headless",
            "rapidocr_onnxruntime", "supervision", "pydantic", "paho-mqtt", "tensorrt", "cuda-python")
MIN_FREE_MB = 500  # the MQTT spool and snapshots live in state_dir
SOURCE_TIMEOUT_S = 15.0  # open plus first frame; a camera slower than this is a problem in itself

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
    doctor.add_argument("--no-connect", action="store_true",
                        help="do not open the sources or connect to the broker (a box prepared before its cameras)")
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.config, connect=not args.no_connect)
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


def run_checks(config_path: Path | None, connect: bool = True) -> list[Check]:
    checks = [check_python(), check_packages(), check_opencv(), check_gpu_visible()]
    available = _ort_providers()
    config: Config | None = None
    if config_path is not None:
        config, config_checks = check_config_file(config_path)
        checks += config_checks
    requested = sorted({p for m in config.models.values() for p in m.runtime.providers}) if config else []
    checks += check_providers(available, requested)
    checks += check_tensorrt(requested)
    if config is not None and config_path is not None:
        waiting = unresolved_entries(config_path) if connect else {
            **{("sources", i): [] for i in range(len(config.sources))},
            **{("sinks", i): [] for i, o in enumerate(config.sinks) if o.type == "mqtt"}}
        checks += check_sources([o for i, o in enumerate(config.sources) if ("sources", i) not in waiting])
        checks += [not_probed("source", o.id, waiting[("sources", i)])
                   for i, o in enumerate(config.sources) if ("sources", i) in waiting]
        checks += check_models(config)
        checks += [not_probed("sink", o.id, waiting[("sinks", i)]) if ("sinks", i) in waiting
                   else check_sink(o, Path(config.state_dir)) for i, o in enumerate(config.sinks)]
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


def unresolved_entries(path: Path) -> dict[tuple[str, int], list[str]]:
    """The sources and sinks (by section and index) whose settings still hold an unresolved ${...} here,
    with those settings' names: opening them would test a placeholder, not the user's secret."""
    from daemon.yamlsrc import YamlError, load_yaml

    try:
        src = load_yaml(path, allow_unresolved=True)
    except YamlError:
        return {}  # check_config_file has reported it
    found: dict[tuple[str, int], list[str]] = {}
    for loc in src.unresolved:
        if len(loc) >= 2 and loc[0] in ("sources", "sinks") and isinstance(loc[1], int):
            found.setdefault((str(loc[0]), loc[1]), []).append(".".join(str(part) for part in loc[2:]))
    return found


def not_probed(kind: str, entry_id: str, settings: Sequence[str]) -> Check:
    if not settings:
        return Check(f"{kind} {entry_id}", "ok", "not opened (--no-connect)")
    return Check(f"{kind} {entry_id}", "warn",
                 f"not opened: {', '.join(settings)} is an unresolved ${{...}} here",
                 "run doctor where the secrets resolve (as the unit sees them: systemd/README.md)")


def check_sources(sources: Sequence[SourceOptions]) -> list[Check]:
    """Open every source once at the same time (four silent cameras cost one timeout, not four)."""
    probes = [SourceProbe(options) for options in sources]
    for probe in probes:
        probe.start()
    deadline = time.monotonic() + SOURCE_TIMEOUT_S
    return [probe.result(deadline) for probe in probes]


class SourceProbe:
    """One source opened through its plug-in until its first frame, in a thread so that a silent camera
    cannot hang the doctor; every text shown goes through mask_credentials."""

    def __init__(self, options: SourceOptions) -> None:
        self.name = f"source {options.id}"
        self.source = registry.resolve("source", options.type)(options)
        self.outcome: dict[str, Any] = {}
        self.thread = threading.Thread(target=_first_frame, args=(self.source, self.outcome),
                                       name=f"doctor-{options.id}", daemon=True)

    def start(self) -> None:
        self.started = time.perf_counter()
        self.thread.start()

    def result(self, deadline: float) -> Check:
        self.thread.join(max(0.0, deadline - time.monotonic()))
        self.source.close()  # safe from another thread: also ends a read still blocked on the camera
        where, outcome = self.source.describe(), self.outcome
        if self.thread.is_alive():
            return Check(self.name, "fail", f"{where}: no frame within {SOURCE_TIMEOUT_S:g}s",
                         "check the address, that the camera streams, and the network between them")
        if "error" in outcome:
            return Check(self.name, "fail", mask_credentials(outcome["error"]),
                         "check the address, path and credentials of this source")
        height, width = outcome["shape"][:2]
        info = outcome["info"]
        fps = f"{info['fps']:g} fps" if info.get("fps") else "fps not stated"
        return Check(self.name, "ok", f"{where}: {info.get('codec', 'codec not stated')}, {width}x{height}, {fps}, "
                     f"first frame in {1000 * (outcome['at'] - self.started):.0f} ms")


def _first_frame(source: Source, outcome: dict[str, Any]) -> None:
    from daemon.sources.base import SourceError

    try:
        source.open()
        frame = source.read()
    except (SourceError, OSError, ValueError) as exc:
        outcome["error"] = str(exc)
        return
    if frame is None:
        outcome["error"] = f"{source.describe()}: opened, but it has no frames"
        return
    outcome.update(shape=frame[0].shape, info=source.stream_info(), at=time.perf_counter())


def check_sink(options: SinkOptions, state_dir: Path) -> Check:
    from daemon.sinks.events import EventsOptions
    from daemon.sinks.jsonl import JsonlOptions
    from daemon.sinks.mqtt import MqttOptions
    from daemon.sinks.snapshots import SnapshotOptions

    if isinstance(options, MqttOptions):
        return check_mqtt(options)
    if isinstance(options, JsonlOptions):
        return _writable(f"sink {options.id}", Path(options.path).parent, "the JSONL files")
    if isinstance(options, SnapshotOptions):
        return _writable(f"sink {options.id}", Path(options.dir) if options.dir else state_dir / "snapshots",
                         "the snapshot JPEGs")
    if isinstance(options, EventsOptions):
        return _writable(f"sink {options.id}", Path(options.dir) if options.dir else state_dir / "events",
                         "the event snapshots and clips")
    return Check(f"sink {options.id}", "ok", f"{options.type}: nothing to check before it runs")


def _writable(name: str, folder: Path, what: str) -> Check:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the sink creates its folder: what matters is that it can
    if probe.is_dir() and os.access(probe, os.W_OK):
        return Check(name, "ok", f"{folder}: writable")
    return Check(name, "fail", f"{folder}: {probe} is not a writable folder",
                 f"make it writable by the daemon's user, or point the sink at a folder that is, for {what}")


def check_mqtt(options: MqttOptions) -> Check:
    """Connect once with the sink's host, port, user and TLS, and report what the broker said."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from daemon.sinks.mqtt_tls import set_tls

    name, port = f"sink {options.id}", options.port or (8883 if options.tls else 1883)
    where = f"mqtt://{options.host}:{port}" + (" over TLS" if options.tls else "")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgewatch-doctor-{os.getpid()}")
    if options.username is not None:
        client.username_pw_set(options.username,
                               options.password.get_secret_value() if options.password is not None else None)
    answered = threading.Event()
    reasons: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        reasons.append(str(reason) if reason.is_failure else "")
        answered.set()

    client.on_connect = on_connect
    try:
        if options.tls is not None:
            set_tls(client, options.tls, options.id)
        client.connect(options.host, port, keepalive=10)
        client.loop_start()
        answered.wait(options.connect_timeout_s)
    except ssl.SSLError as exc:
        return Check(name, "fail", f"{where}: TLS handshake failed ({exc})",
                     "set tls.ca_file to the CA that signed the broker's certificate, whose name must match host "
                     "(and cert_file/key_file when the broker asks for a client certificate)")
    except (OSError, ValueError) as exc:
        return Check(name, "fail", f"{where}: unreachable ({exc})",
                     "start the broker or fix host/port (and tls: for port 8883); check the firewall")
    finally:
        client.disconnect()  # before loop_stop, so the loop sends DISCONNECT and closes the socket
        client.loop_stop()
    if not reasons:
        return Check(name, "fail", f"{where}: no answer within {options.connect_timeout_s:g}s",
                     "check host/port and that the broker speaks MQTT (TLS on a TLS port)")
    if reasons[0]:
        return Check(name, "fail", f"{where}: the broker refused the connection: {reasons[0]}",
                     "fix username/password (or the client certificate) for this broker")
    user = f" as {options.username}" if options.username else ""
    return Check(name, "ok", f"{where}: connected{user}")
