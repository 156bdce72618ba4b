"""CameraControl: add, remove and switch cameras of a running daemon, persisted in the overlay.

Every change goes through the reload path: a ReloadPlan naming the sources added or removed, applied by
the Daemon's apply_reload like a SIGHUP reload, under one lock that SIGHUP reloads take too. Changes are
echoed as "control" messages through the fan-out (MQTT .../state topics, JSONL) and written to the
overlay before the call returns. MQTT commands arrive on paho's thread and run on a thread of their own.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import supervision as sv

from daemon.config import Config, load_config
from daemon.control.errors import ControlError
from daemon.control.overlay import Overlay, apply_overlay, overlay_path, read_overlay, validate_source, write_overlay
from daemon.fanout import Fanout
from daemon.frames import Frame, Message, Result, iso_utc
from daemon.reload import Fingerprint, PreparedReload, ReloadPlan
from daemon.service.stats import Stats
from daemon.sinks.control import SWITCHES, control_message, parse_switch
from daemon.sources.base import SourceOptions
from daemon.worker import Worker

log = logging.getLogger(__name__)

WORKER_WAIT_S = 10.0  # a batch on a slow CPU, at most


class LiveView(Protocol):
    """The UI's live feed (daemon/web/ui/live.py): frames of a camera whose inference is off still go there."""

    def offer(self, result: Result) -> None: ...


class ControlledDaemon(Protocol):
    """What control needs from daemon.app.Daemon."""

    config: Config
    config_path: Path | None
    model_fingerprints: dict[str, Fingerprint]
    worker: Worker | None
    fanout: Fanout | None
    stats: Stats

    @property
    def live(self) -> LiveView: ...

    def apply_reload(self, prepared: PreparedReload) -> None: ...


class CameraControl:
    """The daemon's runtime camera controls (implements the MQTT sink's CommandHandler and the HTTP routes')."""

    def __init__(self, daemon: ControlledDaemon) -> None:
        self.daemon = daemon
        self.lock = threading.RLock()  # one change at a time, SIGHUP reloads included
        self.path = overlay_path(daemon.config.state_dir)
        self.overlay: Overlay | None = None  # read at the first load()
        self.disabled: dict[str, SourceOptions] = {}
        self.added: set[str] = set()
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._runner: threading.Thread | None = None
        self._closed = False  # the daemon is stopping: no camera may start any more

    # -- loading: start and SIGHUP ---------------------------------------------------------------------
    def load(self, config: Config) -> Config:
        """The YAML config with the overlay applied (read from state_dir the first time)."""
        with self.lock:
            if self.overlay is None:
                self.overlay = read_overlay(self.path)
            applied = apply_overlay(config, self.overlay, self._base_dir())
            for problem in applied.problems:
                log.warning("%s", problem)
            self.disabled, self.added = applied.disabled, applied.added
            if not self.overlay.empty:
                log.info("runtime overlay %s applied: %d camera(s) added, %d removed, %d switched off", self.path,
                         len(applied.added), len(self.overlay.removed), len(applied.disabled))
            return applied.config

    def load_file(self, path: Path) -> Config:
        """The reload hook (daemon/reload.py prepare): read the YAML, apply the overlay."""
        return self.load(load_config(path))

    def started(self) -> None:
        """The worker exists: give it the cameras whose inference is off, and where their frames go."""
        self._apply_detect()
        if self.daemon.worker is not None:
            self.daemon.worker.on_detect_off = self._to_live_view

    def _to_live_view(self, frame: Frame) -> None:
        """A frame that skipped inference: the live view shows it, without boxes (the worker's thread)."""
        self.daemon.live.offer(Result(frame, self.daemon.config.pipeline.name, sv.Detections.empty()))

    def close(self) -> None:
        """At shutdown, before the sources stop: waits for a change in progress, then refuses new ones."""
        with self.lock:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ControlError(503, "the daemon is stopping")

    # -- queries --------------------------------------------------------------------------------------
    def switch_states(self) -> Mapping[str, Mapping[str, bool]]:
        with self.lock:
            return {sid: self._states(sid) for sid in self._ids()}

    def cameras(self) -> list[dict[str, object]]:
        with self.lock:
            return [self.describe(sid) for sid in self._ids()]

    def describe(self, camera: str) -> dict[str, object]:
        options = self._options(camera)
        source = self.daemon.stats.sources.get(camera)
        state = "disabled" if camera in self.disabled else source.state if source is not None else "starting"
        return {"id": camera, "type": options.type, "origin": "api" if camera in self.added else "config",
                "state": state, **self._states(camera)}

    # -- changes --------------------------------------------------------------------------------------
    def set_switch(self, camera: str, switch: str, on: bool) -> dict[str, object]:
        with self.lock:
            self._check_open()
            self._options(camera)  # 404 for an unknown camera
            overlay = self._overlay()
            if switch == "detect":
                self._set_flag(overlay.detect, camera, on)
                self._apply_detect()
            elif switch == "enabled":
                self._set_enabled(camera, on)
                self._set_flag(overlay.enabled, camera, on)
            else:
                raise ControlError(404, f"unknown switch {switch!r}; expected one of: {', '.join(SWITCHES)}")
            self._save()
            self._echo(camera)
            log.info("control: camera %s %s %s", camera, switch, "ON" if on else "OFF")
            return self.describe(camera)

    def add(self, entry: Mapping[str, Any]) -> dict[str, object]:
        """A new camera from a source entry (the YAML schema); 422 when invalid, 409 when its id is taken."""
        with self.lock:
            self._check_open()
            options, resolved = validate_source(entry, self._base_dir())
            if options.id in self._ids():
                raise ControlError(409, f"a camera with id {options.id!r} already exists; ids must be unique")
            self._apply(ReloadPlan(sources_added=[options.id]), [*self.daemon.config.sources, options])
            overlay = self._overlay()
            overlay.added.append(resolved)
            self.added.add(options.id)
            self._save()
            self._echo(options.id)
            log.info("control: camera %s (%s) added", options.id, options.type)
            return self.describe(options.id)

    def remove(self, camera: str) -> dict[str, object]:
        """Stop the camera and forget it; its retained MQTT topics are cleared."""
        with self.lock:
            self._check_open()
            described = self.describe(camera)  # 404 for an unknown camera
            if self.disabled.pop(camera, None) is None:
                self._apply(ReloadPlan(sources_removed=[camera]),
                            [s for s in self.daemon.config.sources if s.id != camera])
            overlay = self._overlay()
            if camera in self.added:
                overlay.added = [e for e in overlay.added if e.get("id") != camera]
                self.added.discard(camera)
            else:
                overlay.removed.append(camera)
            overlay.detect.pop(camera, None)
            overlay.enabled.pop(camera, None)
            self._save()
            self._apply_detect()
            self._after_worker_emptied()
            self.daemon.stats.source(camera).set_state("removed")  # /healthz: not expected to stream any more
            self._submit(control_message(camera, None, iso_utc(time.time())))
            log.info("control: camera %s removed", camera)
            return {**described, "state": "removed"}

    # -- MQTT commands (CommandHandler) ---------------------------------------------------------------
    def command(self, camera: str, switch: str, payload: str) -> str | None:
        """Check an MQTT command now (paho's thread) and carry it out on the control thread."""
        if switch not in SWITCHES:
            return f"unknown switch {switch!r}; expected one of: {', '.join(SWITCHES)}"
        on = parse_switch(payload)
        if on is None:
            return f"payload {payload[:40]!r} for {switch}: expected ON or OFF"
        # no lock here: a reload holding it may be joining this very thread (paho's, when the sinks restart)
        if camera not in self._ids():
            return f"unknown camera {camera!r}; cameras are: {', '.join(self._ids()) or 'none'}"
        self._commands.put(lambda: self._run_command(camera, switch, on))
        self._ensure_runner()
        return None

    def _run_command(self, camera: str, switch: str, on: bool) -> None:
        try:
            self.set_switch(camera, switch, on)
        except ControlError as exc:  # e.g. removed between the check and now
            log.warning("control: %s %s for camera %s refused: %s", switch, on, camera, exc.describe())
        except Exception:  # isolation boundary: one command fails, the control thread goes on
            log.exception("control: %s for camera %s failed", switch, camera)

    def _ensure_runner(self) -> None:
        with self.lock:
            if self._runner is None:
                self._runner = threading.Thread(target=self._run_commands, name="control", daemon=True)
                self._runner.start()

    def _run_commands(self) -> None:
        while True:
            self._commands.get()()

    # -- helpers --------------------------------------------------------------------------------------
    def _ids(self) -> list[str]:
        """Running cameras, then switched-off ones; safe without the lock (copies before iterating)."""
        running = [s.id for s in self.daemon.config.sources]
        return running + [sid for sid in list(self.disabled) if sid not in running]

    def _options(self, camera: str) -> SourceOptions:
        for options in self.daemon.config.sources:
            if options.id == camera:
                return options
        if camera in self.disabled:
            return self.disabled[camera]
        raise ControlError(404, f"unknown camera {camera!r}; cameras are: {', '.join(self._ids()) or 'none'}")

    def _states(self, camera: str) -> dict[str, bool]:
        overlay = self._overlay()
        return {"detect": overlay.detect.get(camera, True), "enabled": camera not in self.disabled}

    def _overlay(self) -> Overlay:
        if self.overlay is None:
            self.overlay = read_overlay(self.path)
        return self.overlay

    def _set_enabled(self, camera: str, on: bool) -> None:
        running = [s for s in self.daemon.config.sources if s.id != camera]
        if not on and camera not in self.disabled:
            options = self._options(camera)
            self._apply(ReloadPlan(sources_removed=[camera]), running)
            self.disabled[camera] = options
            self._status(camera, "disabled", "enabled/set OFF: capture stopped")
        elif on and camera in self.disabled:
            options = self.disabled.pop(camera)
            self._apply(ReloadPlan(sources_added=[camera]), [*running, options])

    def _apply(self, plan: ReloadPlan, sources: list[SourceOptions]) -> None:
        """The reload path with a plan that names only sources: the Daemon starts and stops them."""
        new = self.daemon.config.model_copy(update={"sources": sources})
        self.daemon.apply_reload(PreparedReload(new, plan, dict(self.daemon.model_fingerprints)))

    def _after_worker_emptied(self) -> None:
        """Wait until what the worker still had of a removed camera is out: the results of a batch that was
        running, and the end events of its tracks, are sent before its topics are cleared, not after (they
        would bring retained topics back). Worker jobs run between batches and before the tracks of removed
        sources end, so the second of two jobs in a row completes after both."""
        worker = self.daemon.worker
        if worker is None or not worker.alive:
            return
        for _ in range(2):
            try:
                worker.submit(lambda: None).result(timeout=WORKER_WAIT_S)
            except TimeoutError:
                log.warning("control: the worker did not finish its batch within %.0fs; clearing anyway",
                            WORKER_WAIT_S)
                return

    def _apply_detect(self) -> None:
        worker = self.daemon.worker
        if worker is not None:
            worker.detect_off = frozenset(sid for sid, on in self._overlay().detect.items() if not on)

    @staticmethod
    def _set_flag(flags: dict[str, bool], camera: str, on: bool) -> None:
        if on:
            flags.pop(camera, None)  # on is the default: the overlay keeps only what differs from the YAML
        else:
            flags[camera] = False

    def _save(self) -> None:
        try:
            write_overlay(self.path, self._overlay())
        except OSError as exc:
            raise ControlError(500, f"applied, but the overlay {self.path} could not be written "
                                    f"({exc.strerror}): the change is lost at the next restart") from None

    def _echo(self, camera: str) -> None:
        self._submit(control_message(camera, self._states(camera), iso_utc(time.time())))

    def _status(self, camera: str, state: str, detail: str) -> None:
        stats = self.daemon.stats.source(camera)
        stats.set_state(state)
        payload = {"source_id": camera, "state": state, "detail": detail, "pipeline": self.daemon.config.pipeline.name,
                   "timestamp": iso_utc(time.time())}
        self._submit(Message("status", camera, payload))

    def _submit(self, msg: Message) -> None:
        fanout = self.daemon.fanout
        if fanout is not None:
            fanout.submit(msg)

    def _base_dir(self) -> Path:
        """Relative paths in an added entry mean what they would in the YAML: relative to the config file."""
        path = self.daemon.config_path
        return path.resolve().parent if path is not None else Path.cwd()
