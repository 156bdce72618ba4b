"""SIGHUP reload: diff the new config against the running one and restart only what changed.

Order matters: everything that can fail (reading the YAML, loading changed models) happens before anything
running is touched, so an invalid new config or a garbage model file leaves the old pipeline running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.config import Config, ConfigError, load_config
from pipelines.models import load_model

if TYPE_CHECKING:
    from daemon.app import Daemon

log = logging.getLogger(__name__)


@dataclass
class ReloadPlan:
    """What differs between the running config and the new one."""

    sources_added: list[str] = field(default_factory=list)
    sources_removed: list[str] = field(default_factory=list)
    sources_changed: list[str] = field(default_factory=list)
    models_changed: list[str] = field(default_factory=list)
    pipeline_changed: bool = False
    sinks_changed: bool = False
    vlm_changed: bool = False
    batch_changed: bool = False
    need_restart: list[str] = field(default_factory=list)  # sections a running process cannot change

    def summary(self) -> str:
        parts = [f"{name}: {', '.join(ids)}" for name, ids in (
            ("sources added", self.sources_added), ("sources removed", self.sources_removed),
            ("sources changed", self.sources_changed), ("models reloaded", self.models_changed)) if ids]
        if self.pipeline_changed and not self.models_changed:
            parts.append("pipeline changed")
        if self.sinks_changed:
            parts.append("sinks restarted")
        if self.vlm_changed:
            parts.append("vlm stages restarted")
        if self.batch_changed:
            parts.append("batch options changed")
        return "; ".join(parts) or "nothing changed"


def model_fingerprint(options: Any) -> tuple[Any, ...]:
    """A model reloads when its options or its file (size, modification time) changed."""
    path = Path(options.path)
    stat = path.stat() if path.exists() else None
    return (options.model_dump_json(), stat.st_size if stat else None, stat.st_mtime_ns if stat else None)


# Listening sockets and the state directory (spool, caches) are bound at start: changing them live would
# mean a moment with neither the old nor the new one, so a reload says so and keeps the running ones.
RESTART_ONLY = ("http", "api", "state_dir")


def make_plan(old: Config, new: Config, fingerprints: dict[str, tuple[Any, ...]]) -> ReloadPlan:
    plan = ReloadPlan()
    old_sources = {s.id: s.model_dump_json() for s in old.sources}
    new_sources = {s.id: s.model_dump_json() for s in new.sources}
    plan.sources_added = [sid for sid in new_sources if sid not in old_sources]
    plan.sources_removed = [sid for sid in old_sources if sid not in new_sources]
    plan.sources_changed = [sid for sid in new_sources if sid in old_sources and old_sources[sid] != new_sources[sid]]
    plan.models_changed = [name for name, options in new.models.items()
                           if fingerprints.get(name) != model_fingerprint(options)]
    plan.pipeline_changed = bool(plan.models_changed) or _dump(old.pipeline) != _dump(new.pipeline) \
        or set(old.models) != set(new.models)
    plan.sinks_changed = [s.model_dump_json() for s in old.sinks] != [s.model_dump_json() for s in new.sinks]
    plan.vlm_changed = [v.model_dump_json() for v in old.vlm] != [v.model_dump_json() for v in new.vlm]
    plan.batch_changed = _dump(old.batch) != _dump(new.batch)
    plan.need_restart = [name for name in RESTART_ONLY if _dump(getattr(old, name)) != _dump(getattr(new, name))]
    return plan


def _dump(value: Any) -> str:
    return str(value.model_dump_json() if hasattr(value, "model_dump_json") else value)


def reload(daemon: Daemon, path: Path) -> bool:
    """Apply the config at path to the running daemon; False (old config kept) on any error."""
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("reload rejected, keeping the running config: %s", exc)
        return False
    plan = make_plan(daemon.config, new, daemon.model_fingerprints)
    pipeline = None
    if plan.pipeline_changed:
        pipeline = _build_pipeline(daemon, new, plan.models_changed)
        if pipeline is None:
            return False
    log.info("reloading %s: %s", path, plan.summary())
    if plan.need_restart:
        log.warning("reload: %s changed; that takes a restart (systemctl restart), the running settings stay",
                    ", ".join(plan.need_restart))
    if plan.sinks_changed:
        daemon.restart_sinks(new)
    if plan.vlm_changed:
        daemon.restart_vlm(new)
    if plan.batch_changed and daemon.worker is not None:
        daemon.worker.batch = new.batch  # read once per batch: the next one uses it
    if pipeline is not None:
        daemon.swap_pipeline(pipeline, {name: model_fingerprint(o) for name, o in new.models.items()}, new.models)
    for sid in plan.sources_removed + plan.sources_changed:
        daemon.remove_source(sid)
    for options in new.sources:
        if options.id in plan.sources_added or options.id in plan.sources_changed:
            daemon.add_source(options)
    # what a reload cannot change stays as it runs, so that the next reload still compares against it
    daemon.config = new.model_copy(update={name: getattr(daemon.config, name) for name in plan.need_restart})
    return True


def _build_pipeline(daemon: Daemon, new: Config, changed: list[str]) -> Any:
    """Load only the changed models (reusing the rest) and build the new pipeline off the worker thread."""
    from pipelines.runtime.base import ModelLoadError
    from pipelines.stages import Pipeline

    models = dict(daemon.models)
    for name in list(models):
        if name not in new.models:
            del models[name]
    try:
        for name in changed:
            models[name] = load_model(new.models[name], name)
        return Pipeline(new.pipeline, models, isolate_stage_errors=True)
    except (ModelLoadError, ValueError, OSError) as exc:
        log.error("reload rejected, keeping the running pipeline: %s", exc)
        return None
