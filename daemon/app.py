"""The Daemon: builds the frame path back to front, runs it, and stops it front to back within a bound."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from daemon import inferpool, registry
from daemon.capture import Capture, make_capture
from daemon.config import Config, pipeline_to_build
from daemon.control.state import CameraControl
from daemon.fanout import Fanout
from daemon.frames import Frame, Message, Result, begin_run
from daemon.motion import MotionCollector
from daemon.payload import EventLinks, event_message, result_payload
from daemon.reload import Fingerprint, PreparedReload, fingerprints, prepare, restart_only
from daemon.service.health import HealthRules, progress_problems
from daemon.service.memory import keep_frame_buffers
from daemon.service.metrics import Metrics
from daemon.service.notify import Notifier, Watchdog, watchdog_interval
from daemon.service.outcome import count_unprocessed, run_problems
from daemon.service.stats import Stats
from daemon.service.statusline import StatusLine, stats_payload, summary_lines
from daemon.sinks.base import Sink, SinkContext
from daemon.sinks.events import EventsOptions
from daemon.sinks.events_metrics import EventsCollector
from daemon.sources.base import SourceOptions
from daemon.trackhooks import TrackingCollector
from daemon.vlm.stage import VlmStages
from daemon.web.apimetrics import ApiCollector
from daemon.web.app import ApiServer, start_endpoints
from daemon.web.cameras import with_cameras
from daemon.web.events import with_events
from daemon.web.health import health_routes
from daemon.web.server import WebServer
from daemon.web.ui.live import LiveFeed, live_feed
from daemon.web.ui.mount import with_ui
from daemon.worker import Worker
from pipelines.build import build_pipeline
from pipelines.models import LoadedModel, ModelOptions, load_model
from pipelines.stages import PipelineLike
from pipelines.tracking.events import Event

log = logging.getLogger(__name__)


class Daemon:
    """One running pipeline config. start() -> wait() -> stop(); or run() for all three."""

    def __init__(
        self, config: Config, pipeline: PipelineLike | None = None, config_path: Path | None = None,
        models: Mapping[str, LoadedModel] | None = None,
    ) -> None:
        """pipeline: run this one instead of building config.pipeline from config.models (benchmarks, tests);
        models: config.models already loaded (by the pre-flight check), used by the first start only."""
        inferpool.install()  # before start() loads models (idempotent; the CLI installs it first)
        self.config = config
        self.config_path = config_path  # re-read on SIGHUP
        self._preloaded: dict[str, LoadedModel] = dict(models or {})
        self.models: dict[str, LoadedModel] = {}
        self.model_fingerprints: dict[str, Fingerprint] = {}
        self.stats = Stats()
        self.state_dir = Path(config.state_dir)
        self._pipeline_override = pipeline
        self.sinks: list[Sink] = []
        self.fanout: Fanout | None = None
        self.captures: dict[str, Capture] = {}
        self.worker: Worker | None = None
        self.vlm: VlmStages | None = None
        self.api: ApiServer | None = None  # when config.api.enabled (daemon/web/app.py)
        self._closing = False
        self.pipeline: PipelineLike | None = None  # built by start()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._signals = 0
        self.metrics = Metrics(self.stats, lambda: {sid: len(c.queue) for sid, c in self.captures.items()})
        self.metrics.registry.register(TrackingCollector(self.stats))
        self.metrics.registry.register(MotionCollector(lambda: self.worker.motion if self.worker else None))
        self.metrics.registry.register(ApiCollector(lambda: self.api.inference.counters if self.api else None))
        self.metrics.registry.register(EventsCollector(lambda: self.sinks))  # events sinks' clips and retention
        self.rules = HealthRules(
            required_sources=frozenset(s.id for s in config.sources if s.required),
            required_sinks=frozenset(s.id for s in config.sinks if s.required),
        )
        self.health: WebServer | None = None  # when config.http.enabled on an address of its own
        self.live: LiveFeed = live_feed(config.ui)  # the latest result per source, for the UI's live view
        # unset=True: ffmpeg and other children must not inherit the socket and speak for us
        self.notifier = Notifier.from_env(unset=True)
        self.watchdog: Watchdog | None = None
        self.control = CameraControl(self)  # runtime add/remove/switch of cameras; its overlay applies at load

    # -- build, back to front -------------------------------------------------------------------------
    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config = self.control.load(self.config)  # the overlay of runtime changes on top of the YAML
        if self.config.keep_frame_buffers:
            keep_frame_buffers()
        self._start_sinks()
        pipeline = self.pipeline = self._pipeline_override or self._load_pipeline()
        for options in self.config.sources:
            self.captures[options.id] = make_capture(options, self.stats, on_state=self._on_state)
        queues = {sid: cap.queue for sid, cap in self.captures.items()}
        self.worker = Worker(queues, pipeline, self._emit, self.stats, self.config.batch, self.metrics,
                             emit_event=self._emit_event)
        self.vlm = self.make_vlm(self.config)
        self.control.started()
        self.worker.start()
        for capture in self.captures.values():
            capture.start()
        self._start_service_endpoints()
        log.info(
            "edgewatch running pipeline %s: %d source(s), %d sink(s)",
            pipeline.name, len(self.captures), len(self.sinks),
        )

    def _start_service_endpoints(self) -> None:
        """http: and api: on the one web stack, then systemd READY: only now are models loaded and sinks started."""
        assert self.worker is not None
        served = with_events(health_routes(self.stats, self.rules, self.metrics), self.state_dir)  # + /api/events
        served = with_cameras(served, self.control if self.config.ui.enabled else None)  # behind the UI's login
        health = with_ui(served, self.config, self.stats, self.rules, self.live)
        endpoints = start_endpoints(self.config.http, self.config.api, health, self.models, self.config.models,
                                    self.worker, cameras=self.control)
        self.health, self.api = endpoints.health, endpoints.api  # api also serves health on a shared address
        self.notifier.ready(self.status_text())
        interval = watchdog_interval()
        if interval is not None:
            self.watchdog = Watchdog(self.notifier, lambda: not progress_problems(self.stats, self.rules), interval)
            self.watchdog.start()

    def status_text(self) -> str:
        """One line for systemctl status: per-source state and fps."""
        parts = [f"{sid} {s.state} {s.process_rate.per_second():.1f}fps" for sid, s in self.stats.sources.items()]
        return "; ".join(parts) or "starting"

    def _start_sinks(self, config: Config | None = None) -> None:
        config = config or self.config
        context = SinkContext(
            pipeline=config.pipeline.name,
            source_ids=tuple(s.id for s in config.sources),
            state_dir=str(self.state_dir),
            control=self.control,
        )
        for options in config.sinks:
            cls = registry.resolve("sink", options.type)
            self.sinks.append(cls(options, context))
        self.fanout = Fanout(self.sinks, self.stats)
        self.fanout.start()

    def _pipeline_name(self) -> str:
        return self.config.pipeline.name

    def _load_pipeline(self) -> PipelineLike:
        """The configured models, loaded, and the pipeline over them (pipelines/build.py: plain or tracked)."""
        preloaded, self._preloaded = self._preloaded, {}  # a reload loads its own
        self.models = {
            name: preloaded[name] if name in preloaded else load_model(options, name)
            for name, options in self.config.models.items()
        }
        self.model_fingerprints = fingerprints(self.config.models)
        return build_pipeline(*pipeline_to_build(self.config, self.models), isolate_stage_errors=True)

    # -- the running daemon ---------------------------------------------------------------------------
    def _emit(self, result: Result) -> None:
        assert self.fanout is not None
        self.live.offer(result)  # a reference only: the UI encodes it when, and only if, someone watches
        self.metrics.observe_e2e(result.frame.source_id, time.monotonic() - result.frame.t_mono)
        if self.config.pipeline.publish_results:
            self.fanout.submit(Message("result", result.frame.source_id, result_payload(result), result))
        vlm = self.vlm  # a reload may replace the stages: this frame goes to one set
        if vlm is not None:
            vlm.offer(result)  # after its result: the VLM side path never delays the video path

    def make_vlm(self, config: Config) -> VlmStages:
        # answers go to the current fan-out, which a reload may replace
        return VlmStages(config.vlm, lambda msg: self.fanout.submit(msg) if self.fanout else None)

    def _emit_event(self, frame: Frame, event: Event) -> None:
        """A track event (worker thread): JSON for every sink, the best crop for the snapshot sink."""
        assert self.fanout is not None
        name = self.pipeline.name if self.pipeline is not None else self._pipeline_name()
        self.fanout.submit(event_message(event, frame, name, self._event_links()))

    def _event_links(self) -> EventLinks:
        """Which event files the http: server will serve: none without an events sink (README "Event history")."""
        stores = [s for s in self.config.sinks if isinstance(s, EventsOptions)]
        if not self.config.http.enabled or not stores:
            return EventLinks()
        return EventLinks(files=True, clip=any(s.clips.enabled for s in stores))

    def _on_state(self, source_id: str, state: str, detail: str = "") -> None:
        if state in ("ended", "failed") and self.worker is not None:
            self.worker.finish_source(source_id)  # its tracks end once the worker has emptied its queue
        if self.fanout is None:
            return
        payload = {"source_id": source_id, "state": state, "detail": detail, "pipeline": self._pipeline_name(),
                   "timestamp": _now_iso()}
        self.fanout.submit(Message("status", source_id, payload))

    def finished(self) -> bool:
        """True when every source has ended (files, folders) and the worker has emptied the queues."""
        if not self.captures or not all(c.done.is_set() for c in self.captures.values()):
            return False
        return all(len(c.queue) == 0 for c in self.captures.values())

    def wait(self) -> None:
        """Block until a stop is requested or all finite sources are done; prints the live status line."""
        status = StatusLine(self.stats, self.captures, sys.stderr) if self.config.status_interval_s else None
        interval = self.config.status_interval_s or 0.5
        last_notify = last_stats = time.monotonic()
        while not self._stop.wait(min(interval, 0.5)):
            if self.config.stats_interval_s and time.monotonic() - last_stats >= self.config.stats_interval_s:
                last_stats = time.monotonic()
                self.publish_stats()
            if status is not None:
                status.maybe_print(interval)
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if time.monotonic() - last_notify > 5.0:
                last_notify = time.monotonic()
                self.notifier.status(self.status_text())
            if self.finished():
                log.info("all sources have ended")
                break
        if status is not None:
            status.end()

    def request_stop(self) -> None:
        self._stop.set()

    def publish_stats(self) -> None:
        """The retained stats message: the same counters /metrics serves, as one JSON document."""
        if self.fanout is not None and not self._closing:
            payload = stats_payload(self.stats, self._pipeline_name(), _now_iso())
            self.fanout.submit(Message("stats", None, payload))

    # -- reload (SIGHUP): daemon/reload.py prepares the changes, the daemon applies them -----------------
    def reload(self) -> bool:
        """Re-read the config file and restart only what changed; False (old config kept) on any error."""
        if self.config_path is None:
            log.warning("reload requested but the daemon was not started from a config file")
            return False
        self.notifier.reloading("reloading " + str(self.config_path))
        try:
            with self.control.lock:  # runtime camera changes wait for the reload, and see its result
                prepared = prepare(self.config_path, self.config, self.model_fingerprints, self.models,
                                   load=self.control.load_file)
                if prepared is None:
                    return False
                self.apply_reload(prepared)
                return True
        finally:
            self.notifier.ready(self.status_text())

    def apply_reload(self, prepared: PreparedReload) -> None:
        """Restart what the plan names: sinks, VLM stages, batch options, pipeline, then the sources."""
        plan, new = prepared.plan, prepared.config
        if plan.sinks_changed:
            self.restart_sinks(new)
        if plan.vlm_changed:
            self.restart_vlm(new)
        if plan.batch_changed and self.worker is not None:
            self.worker.batch = new.batch  # read once per batch: the next one uses it
        if prepared.pipeline is not None:
            self.swap_pipeline(prepared.pipeline, prepared.models, prepared.fingerprints, new.models)
        for sid in plan.sources_removed + plan.sources_changed:
            self.remove_source(sid)
        if plan.sources_added or plan.sources_changed:
            begin_run()  # their seq starts again at 0: a new run id keeps (run, source_id, seq) unique
        for options in new.sources:
            if options.id in plan.sources_added or options.id in plan.sources_changed:
                self.add_source(options)
        # what a reload cannot change stays as it runs, so that the next reload still compares against it
        running = restart_only(self.config)
        self.config = new.model_copy(update={name: running[name] for name in plan.need_restart})

    def restart_sinks(self, config: Config) -> None:
        # The old sinks close first: a sink may hold an exclusive resource (the MQTT spool's lock) that its
        # replacement needs. Messages emitted during the switch are dropped and counted by the old fan-out.
        if self.fanout is not None:
            self.fanout.close(timeout=self.config.shutdown_timeout_s)
        self.sinks = []
        self._start_sinks(config)

    def restart_vlm(self, config: Config) -> None:
        old, self.vlm = self.vlm, self.make_vlm(config)
        if old is not None:  # what it had queued is still sent, within the bound
            old.close(timeout=self.config.shutdown_timeout_s)

    def swap_pipeline(
        self, pipeline: PipelineLike, models: dict[str, LoadedModel], prints: dict[str, Fingerprint],
        model_options: dict[str, ModelOptions],
    ) -> None:
        self.pipeline = pipeline
        self.models = dict(models)
        self.model_fingerprints = prints
        if self.worker is not None:
            self.worker.pipeline = pipeline  # the worker reads it once per batch: an atomic swap
        if self.api is not None:
            self.api.update_models(self.models, model_options)

    def remove_source(self, source_id: str) -> None:
        capture = self.captures.pop(source_id, None)
        if capture is None:
            return
        capture.stop(timeout=self.config.shutdown_timeout_s)
        if self.worker is not None:
            self.worker.remove_queue(source_id)
        capture.queue.close()
        log.info("source %s stopped", source_id)

    def add_source(self, options: SourceOptions) -> None:
        capture = make_capture(options, self.stats, on_state=self._on_state)
        self.captures[options.id] = capture
        if self.worker is not None:
            self.worker.add_queue(options.id, capture.queue)
        capture.start()
        log.info("source %s started", options.id)

    # -- stop, front to back --------------------------------------------------------------------------
    def stop(self) -> bool:
        """Sources first, then drain the queues, then flush and close sinks; True if all within the bound."""
        deadline = time.monotonic() + self.config.shutdown_timeout_s
        clean = True
        self.notifier.stopping("stopping: draining queues and flushing sinks")
        self.control.close()  # a camera change in progress finishes; none starts a source after this
        if self.api is not None:  # before the worker: requests in flight finish, new ones get 503
            clean &= self.api.stop(timeout=max(0.1, (deadline - time.monotonic()) / 4))
        if self.watchdog is not None:
            self.watchdog.stop()
        for capture in self.captures.values():
            clean &= capture.stop(timeout=max(0.1, deadline - time.monotonic()) / max(1, len(self.captures)))
        if self.worker is not None:
            clean &= self.worker.stop(drain=True, timeout=max(0.1, deadline - time.monotonic()))
        unprocessed = count_unprocessed(self.stats)  # frames read and never run, e.g. a queue the worker left
        if self.vlm is not None:  # before the fan-out closes: answers still arriving go out through it
            self.vlm.close(timeout=max(0.1, (deadline - time.monotonic()) / 2))
        for capture in self.captures.values():
            capture.queue.close()
        self._closing = True
        if self.fanout is not None:
            clean &= bool(self.fanout.close(timeout=max(0.5, deadline - time.monotonic())))
        if self.health is not None:
            clean &= self.health.stop()
        self.notifier.close()
        if not clean:
            log.warning("shutdown did not finish within %.1fs; %d frame(s) read but not processed",
                        self.config.shutdown_timeout_s, unprocessed)
        return clean

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals > 1:
                log.warning("second signal: forcing exit")
                sys.stderr.flush()
                import os

                os._exit(130)
            log.info("received %s: stopping (send again to force)", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGHUP, lambda _s, _f: self._reload.set())

    def summary(self) -> list[str]:
        count_unprocessed(self.stats)  # again: a worker the shutdown gave up on may have run a few more since
        return summary_lines(self.stats)

    def problems(self) -> list[str]:
        """After stop(): failed sources and sinks that delivered nothing (a non-zero exit code)."""
        return run_problems(self.stats)


def _now_iso() -> str:
    from daemon.frames import iso_utc

    return iso_utc(time.time())
