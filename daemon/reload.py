"""SIGHUP reload: what differs between the running config and the new one (a ReloadPlan), and preparing it.

`make_plan` is pure: old config + new config + the running models' fingerprints -> a plan. `prepare` does
everything that can fail (reading the YAML, loading the changed models, building the new pipeline) before
anything running is touched, so an invalid new config or a garbage model file leaves the old pipeline
running. The Daemon (daemon/app.py) applies a prepared reload; this module never looks inside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from pydantic import BaseModel

from daemon.config import Config, ConfigError, load_config, pipeline_to_build
from pipelines.build import build_pipeline
from pipelines.models import LoadedModel, ModelOptions, load_model
from pipelines.runtime.base import ModelLoadError
from pipelines.stages import PipelineLike
from pipelines.workflows.section import WorkflowPipelineSpec

log = logging.getLogger(__name__)

Fingerprint: TypeAlias = tuple[str, int | None, int | None]  # options as JSON, file size, file mtime in ns

# Listening sockets and the state directory (spool, caches) are bound at start: changing them live would
# mean a moment with neither the old nor the new one, so a reload says so and keeps the running ones.
RESTART_ONLY = ("http", "api", "state_dir")


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class PreparedReload:
    """A new config with its plan and, when the pipeline changed, the new pipeline and models, all ready."""

    config: Config
    plan: ReloadPlan
    fingerprints: dict[str, Fingerprint]
    pipeline: PipelineLike | None = None  # None: the running pipeline stays
    models: dict[str, LoadedModel] = field(default_factory=dict)  # the new pipeline's models, by name


def model_fingerprint(options: ModelOptions) -> Fingerprint:
    """A model reloads when its options or its file (size, modification time) changed."""
    path = Path(options.path)
    stat = path.stat() if path.exists() else None
    return (options.model_dump_json(), stat.st_size if stat else None, stat.st_mtime_ns if stat else None)


def fingerprints(models: Mapping[str, ModelOptions]) -> dict[str, Fingerprint]:
    return {name: model_fingerprint(options) for name, options in models.items()}


def restart_only(config: Config) -> dict[str, object]:
    """The sections of a config that only a restart changes (RESTART_ONLY), by name."""
    return {"http": config.http, "api": config.api, "state_dir": config.state_dir}


def make_plan(old: Config, new: Config, prints: Mapping[str, Fingerprint]) -> ReloadPlan:
    """What a reload from `old` to `new` restarts; `prints`: fingerprints of the models loaded now."""
    old_sources = {s.id: s.model_dump_json() for s in old.sources}
    new_sources = {s.id: s.model_dump_json() for s in new.sources}
    models_changed = [name for name, options in new.models.items() if prints.get(name) != model_fingerprint(options)]
    old_kept, new_kept = restart_only(old), restart_only(new)
    return ReloadPlan(
        sources_added=[sid for sid in new_sources if sid not in old_sources],
        sources_removed=[sid for sid in old_sources if sid not in new_sources],
        sources_changed=[sid for sid in new_sources if sid in old_sources and old_sources[sid] != new_sources[sid]],
        models_changed=models_changed,
        pipeline_changed=bool(models_changed) or _dump(old.pipeline) != _dump(new.pipeline)
        or set(old.models) != set(new.models) or _workflow(old) != _workflow(new),
        sinks_changed=[s.model_dump_json() for s in old.sinks] != [s.model_dump_json() for s in new.sinks],
        vlm_changed=[v.model_dump_json() for v in old.vlm] != [v.model_dump_json() for v in new.vlm],
        batch_changed=_dump(old.batch) != _dump(new.batch),
        need_restart=[name for name in RESTART_ONLY if _dump(old_kept[name]) != _dump(new_kept[name])],
    )


def _workflow(config: Config) -> object:
    """A workflow's compiled chain and bindings: its file or a model's settings may change under the same path."""
    return config.pipeline.compiled.key if isinstance(config.pipeline, WorkflowPipelineSpec) else None


def _dump(value: object) -> str:
    return value.model_dump_json() if isinstance(value, BaseModel) else str(value)


def load_changed_models(
    running: Mapping[str, LoadedModel], new: Mapping[str, ModelOptions], changed: Sequence[str]
) -> dict[str, LoadedModel]:
    """The new config's models: the changed ones loaded again, the others reused; gone ones left out."""
    models = {name: model for name, model in running.items() if name in new}
    for name in changed:
        models[name] = load_model(new[name], name)
    return models


def prepare(
    path: Path, running: Config, prints: Mapping[str, Fingerprint], models: Mapping[str, LoadedModel],
    load: Callable[[Path], Config] = load_config,
) -> PreparedReload | None:
    """Read the config at path and get its changes ready (off the worker thread); None (logged) on any error.

    An isolation boundary: whatever goes wrong, the running config and pipeline stay and the daemon carries on.
    load: how to read the file (the daemon's also applies the runtime overlay, daemon/control/).
    """
    global rejected_total
    try:
        return _prepare(path, running, prints, models, load)
    except _Rejected as exc:
        message = str(exc)
    except Exception as exc:  # isolation boundary: a reload must never cost the running pipeline
        log.debug("reload of %s failed", path, exc_info=True)
        message = f"unexpected {type(exc).__name__}: {exc}"
    rejected_total += 1
    log.error("reload rejected, keeping the running config and pipeline: %s", _one_line(message))
    return None


rejected_total = 0  # reloads refused since start (logged each time); the running config stayed


class _Rejected(Exception):
    """A new config or pipeline that cannot be used; str() is the reason for the log."""


def _one_line(text: str, limit: int = 2000) -> str:
    """One log line: a reason from a library can span lines (ONNX Runtime's do)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + " ..."


def _prepare(
    path: Path, running: Config, prints: Mapping[str, Fingerprint], models: Mapping[str, LoadedModel],
    load: Callable[[Path], Config],
) -> PreparedReload:
    try:
        new = load(path)
    except ConfigError as exc:
        raise _Rejected(str(exc)) from None
    plan = make_plan(running, new, prints)
    prepared = PreparedReload(new, plan, fingerprints(new.models))
    if plan.pipeline_changed:
        try:
            loaded = load_changed_models(models, new.models, plan.models_changed)
            pipeline = build_pipeline(*pipeline_to_build(new, loaded), isolate_stage_errors=True)
        except (ModelLoadError, ValueError, OSError) as exc:
            raise _Rejected(f"{path}: {exc}") from None
        prepared = PreparedReload(new, plan, prepared.fingerprints, pipeline, loaded)
    log.info("reloading %s: %s", path, plan.summary())
    if plan.need_restart:
        log.warning("reload: %s changed; that takes a restart (systemctl restart), the running settings stay",
                    ", ".join(plan.need_restart))
    return prepared
