"""The pipeline config: pydantic models for the YAML, plug-in option resolution and one-paragraph errors.

Validation runs in two passes so that each plug-in owns its options: the top level is checked here, then
each source, sink and model entry is checked by the Options model of the class its `type:` names
(daemon/registry.py). Every error names the YAML path and line and says what was expected.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon import registry
from daemon.configproblems import ConfigError, ConfigErrors, masked, number_problems
from daemon.service.httpoptions import ApiOptions, HttpOptions
from daemon.service.uioptions import UiOptions, check_ui
from daemon.sinks.base import SinkOptions
from daemon.sources.base import SourceOptions
from daemon.vlm.stage import VlmStageOptions, check_vlm_options
from daemon.yamlsrc import LoadedYaml, Loc, YamlError, load_yaml
from pipelines.models import LoadedModel, ModelOptions, UnknownTypeError
from pipelines.stages import PipelineSpec, StageSpec
from pipelines.workflows import WorkflowError
from pipelines.workflows.section import TrackingError, WorkflowPipelineSpec

# Every setting that names a file or folder, as a key path in which "*" is each item of a list or mapping
# (plus each stage's match: gallery, at any depth). Relative values are made relative to the config file's
# folder before validation, so a config means the same from any working directory; absolute paths and URLs
# stay as written. ffmpeg's `input` is an argument for ffmpeg (a device, a URL, a filter graph) and stays too.
CONFIG_PATHS: tuple[str, ...] = (
    "state_dir",
    "api.model_dirs.*",
    "models.*.path", "models.*.labels_file", "models.*.charset_file", "models.*.tokenizer", "models.*.text_path",
    "models.*.runtime.trt_cache_dir",
    "sources.*.path", "sources.*.folder",
    "sinks.*.path", "sinks.*.dir", "sinks.*.spool.path",
    "sinks.*.tls.ca_file", "sinks.*.tls.cert_file", "sinks.*.tls.key_file",
    "pipeline.workflow", "api.workflows_dir",
)
_STAGE_PATHS = ("match.folder", "match.cache_dir")
_PLUGIN_LISTS: tuple[tuple[str, registry.Kind], ...] = (("sources", "source"), ("sinks", "sink"))


MAX_PIPELINE_NAME = 128  # the name is in every payload and MQTT topic


def default_state_dir() -> str:
    """state_dir when the config leaves it out: $EDGEWATCH_STATE_DIR (systemd sets it), else var."""
    return os.environ.get("EDGEWATCH_STATE_DIR", "var")


class BatchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_size: int = Field(4, ge=1, le=256, description="Most frames the worker runs through the pipeline at once.")
    timeout_ms: float = Field(
        10.0, ge=0, le=10_000, description="How long the worker waits to fill a batch after its first frame."
    )


class Config(BaseModel):
    """A whole daemon: what to watch, what to run on it, where to publish."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(1, ge=1, le=1, description="Config format version; only 1 exists.")
    pipeline: PipelineSpec | WorkflowPipelineSpec = Field(
        ..., description="The model chain: a first-stage detector and second stages per crop, or a Roboflow "
        "Workflow specification file (`workflow:`) compiled into one.",
    )
    models: dict[str, ModelOptions] = Field(..., description="Models by name; stages refer to these names.")
    sources: list[SourceOptions] = Field(..., min_length=1, description="Cameras, files and folders to watch.")
    sinks: list[SinkOptions] = Field(default_factory=list, description="Where results go: mqtt, jsonl.")
    batch: BatchOptions = Field(default_factory=BatchOptions, description="Cross-stream batching.")
    shutdown_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="Bound on an orderly shutdown, in seconds (at most an hour)."
    )
    state_dir: str = Field(
        default_factory=default_state_dir,
        description="Writable directory for spools and caches; unset: $EDGEWATCH_STATE_DIR, else var. "
        "In a config file, relative to that file.",
    )
    stats_interval_s: float = Field(
        30.0, ge=0, description="Seconds between retained stats messages to the sinks; 0 turns them off."
    )
    status_interval_s: float = Field(
        0.0, ge=0, description="Seconds between live status lines on stderr; 0 turns them off."
    )
    keep_frame_buffers: bool = Field(
        True, description="glibc only: keep freed frame buffers for the next frame instead of returning them to "
        "the kernel and faulting them in again (fewer page faults per frame; memory stays at its high-water mark).",
    )
    http: HttpOptions = Field(default_factory=HttpOptions, description="Health and metrics endpoint.")
    api: ApiOptions = Field(default_factory=ApiOptions, description="Roboflow-compatible inference HTTP API.")
    ui: UiOptions = Field(default_factory=UiOptions, description="Web UI pages and live view on the http: server.")
    vlm: list[VlmStageOptions] = Field(
        default_factory=list,
        description="VLM stages: frames or crops sent, rate limited and off the video path, to OpenAI-compatible "
        "chat endpoints; their answers are published as results of pipeline <pipeline>/vlm:<name>.",
    )


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read, substitute and validate a config file; raises ConfigError with a one-paragraph message."""
    return read_config(path, env)[0]


def read_config(path: str | Path, env: dict[str, str] | None = None) -> tuple[Config, LoadedYaml]:
    """load_config, plus the parsed YAML whose line numbers later checks (daemon/preflight.py) name."""
    try:
        src = load_yaml(path, env)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    return validate_config(src), src


def problems_error(src: LoadedYaml, problems: Sequence[tuple[Loc, str]]) -> ConfigError | None:
    """Problems found after validation (at their YAML paths) as one ConfigError in the usual form; None if none."""
    errors = ConfigErrors(src)
    for loc, message in problems:
        errors.add(loc, message)
    return errors.error()


def check_config(path: str | Path, env: dict[str, str] | None = None) -> tuple[Config, list[str]]:
    """Validate with unavailable ${VAR}/${cred:}/${file:} kept as notes (one per reference) instead of errors.

    Every other setting is still checked; values that kept a ${...} skip their own checks.
    """
    config, notes, _src = check_config_source(path, env)
    return config, notes


def check_config_source(
    path: str | Path, env: dict[str, str] | None = None
) -> tuple[Config, list[str], LoadedYaml]:
    """check_config, plus the parsed YAML (its lines, and which values kept a ${...})."""
    try:
        src = load_yaml(path, env, allow_unresolved=True)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    notes = [note for notes in src.unresolved.values() for note in notes]
    try:
        config = validate_config(src)
    except ConfigError as exc:
        raise ConfigError(str(exc) + "".join(f" Also: {note}" for note in notes)) from None
    return config, notes, src


def effective_config(config: Config) -> dict[str, object]:
    """The validated config with defaults filled in, as plain data, with every secret masked (for printing)."""
    data = config.model_dump(mode="json", serialize_as_any=True)  # serialize_as_any: each plug-in's own options
    shown = masked(data, "")
    assert isinstance(shown, dict)
    return shown


def load_pipeline_section(path: str | Path) -> tuple[dict[str, ModelOptions], PipelineSpec]:
    """Only `models:` and `pipeline:` of a file (for `edgewatch two-stage`), with the same checks and errors.

    Secrets of the other sections (camera and broker passwords) need not resolve: they are not used.
    """
    try:
        src = load_yaml(path, allow_unresolved=True)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    needed = [note for loc, notes in src.unresolved.items() if loc[:1] in (("models",), ("pipeline",))
              for note in notes]
    if needed:
        raise ConfigError(" ".join(needed))
    errors = ConfigErrors(src)
    data = src.data if isinstance(src.data, dict) else {}
    for key in ("models", "pipeline"):
        if key not in data:
            errors.add((key,), "required setting is missing")
    errors.raise_if_any()
    resolve_config_paths(data, src.path.parent)
    models = _plugins_by_name(data["models"], errors)
    spec = _pipeline_spec(data["pipeline"], errors)
    errors.raise_if_any()
    assert spec is not None  # raise_if_any() raised otherwise
    return models, spec


def pipeline_to_build(config: Config, models: Mapping[str, LoadedModel]) -> tuple[PipelineSpec, dict[str, LoadedModel]]:
    """The spec and models pipelines.build runs for this config: `pipeline:` on the loaded models, or the
    workflow compiled at load on the models its steps call (named after the steps)."""
    if isinstance(config.pipeline, WorkflowPipelineSpec):
        compiled = config.pipeline.compiled
        return compiled.spec, compiled.models(models)
    return config.pipeline, dict(models)


def validate_config(src: LoadedYaml) -> Config:
    errors = ConfigErrors(src)
    if not isinstance(src.data, dict):
        errors.add((), f"expected a mapping of settings, got {type(src.data).__name__}")
        errors.raise_if_any()
    data = dict(src.data) if isinstance(src.data, dict) else {}
    data.setdefault("state_dir", default_state_dir())  # a relative default is beside the config file too
    resolve_config_paths(data, src.path.parent)
    if "models" in data:
        data["models"] = _plugins_by_name(data["models"], errors)
    for section, kind in _PLUGIN_LISTS:
        if section in data:
            data[section] = _plugins_in_list(data[section], section, kind, errors)
    if isinstance(data.get("pipeline"), dict) and "workflow" in data["pipeline"]:
        data["pipeline"] = _workflow_spec(data["pipeline"], data.get("models"), errors)
    elif data.get("pipeline") is not None:
        data["pipeline"] = _pipeline_spec(data["pipeline"], errors)
    reported = frozenset(str(item.partition("[")[0].partition(".")[0].partition(" ")[0]) for item in errors.items)
    config = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors.add_validation((), exc, Config, skip=reported)
    if config is not None:
        _check_semantics(config, errors)
    errors.raise_if_any()
    assert config is not None
    return config


def resolve_config_paths(data: object, base_dir: Path) -> None:
    """Make every path that CONFIG_PATHS names in raw (unvalidated) config data relative to base_dir, in place."""
    for key_path in CONFIG_PATHS:
        _resolve_at(data, key_path.split("."), base_dir)
    if isinstance(data, dict):
        _resolve_stage_paths(data.get("pipeline"), base_dir)


def _resolve_stage_paths(spec: object, base_dir: Path) -> None:
    """Stages nest to any depth (stages: under a stage), so their match: paths are found by walking them."""
    stages = spec.get("stages") if isinstance(spec, dict) else None
    for stage in stages if isinstance(stages, list) else []:
        for key_path in _STAGE_PATHS:
            _resolve_at(stage, key_path.split("."), base_dir)
        _resolve_stage_paths(stage, base_dir)


def _resolve_at(node: object, keys: Sequence[str], base_dir: Path) -> object:
    """node, with the value(s) at keys made relative to base_dir; shapes that do not fit are left to validation."""
    if not keys:
        return _relative_to(base_dir, node)
    head, rest = keys[0], keys[1:]
    if isinstance(node, dict):
        for key in list(node) if head == "*" else [head] if head in node else []:
            node[key] = _resolve_at(node[key], rest, base_dir)
    elif isinstance(node, list) and head == "*":
        node[:] = [_resolve_at(item, rest, base_dir) for item in node]
    return node


def _relative_to(base_dir: Path, value: object) -> object:
    if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
        return str(base_dir / value)
    return value


def _plugin(entry: object, loc: Loc, kind: registry.Kind, errors: ConfigErrors) -> BaseModel | None:
    """One source, sink or model entry, validated by the Options of the plug-in its `type:` names."""
    if not isinstance(entry, dict):
        errors.add(loc, f"expected a mapping with a 'type:' key, got {type(entry).__name__}")
        return None
    type_name = entry.get("type")
    if type_name is None:
        errors.add(loc, f"missing 'type:'; expected one of: {', '.join(registry.names(kind))}")
        return None
    try:
        options_model = registry.resolve(kind, str(type_name)).Options
    except UnknownTypeError as exc:
        errors.add((*loc, "type"), str(exc))
        return None
    try:
        return options_model.model_validate(entry)
    except ValidationError as exc:
        errors.add_validation(loc, exc, options_model)
        return None


def _plugins_in_list(section: object, name: str, kind: registry.Kind, errors: ConfigErrors) -> list[BaseModel]:
    if not isinstance(section, list):
        errors.add((name,), f"expected a list of {kind} entries, got {type(section).__name__}")
        return []
    built = [_plugin(entry, (name, i), kind, errors) for i, entry in enumerate(section)]
    return [b for b in built if b is not None]


def _plugins_by_name(section: object, errors: ConfigErrors) -> dict[str, ModelOptions]:
    """The models: mapping; each model's file must exist."""
    if not isinstance(section, dict):
        errors.add(("models",), f"expected a mapping of model name -> settings, got {type(section).__name__}")
        return {}
    models: dict[str, ModelOptions] = {}
    for name, entry in section.items():
        options = _plugin(entry, ("models", name), "model", errors)
        if not isinstance(options, ModelOptions):
            errors.invalid_models.add(str(name))
            continue
        if not Path(options.path).is_file():
            errors.add(("models", name, "path"), f"model file {options.path} does not exist")
        models[name] = options
    return models


def _pipeline_spec(section: object, errors: ConfigErrors) -> PipelineSpec | None:
    try:
        return PipelineSpec.model_validate(section)
    except ValidationError as exc:
        errors.add_validation(("pipeline",), exc, PipelineSpec)
        return None


def _workflow_spec(section: dict[str, object], models: object, errors: ConfigErrors) -> WorkflowPipelineSpec | None:
    """A `pipeline: {workflow: ...}` section, its file compiled against the models (errors at its `workflow:` line)."""
    try:
        spec = WorkflowPipelineSpec.model_validate(section)
    except ValidationError as exc:
        errors.add_validation(("pipeline",), exc, WorkflowPipelineSpec)
        return None
    try:
        spec.compile(models if isinstance(models, dict) else {})
    except WorkflowError as exc:
        errors.add(("pipeline", "tracking" if isinstance(exc, TrackingError) else "workflow"), str(exc))
        return None
    return spec


def _check_semantics(config: Config, errors: ConfigErrors) -> None:
    for section, ids in (("sources", [s.id for s in config.sources]), ("sinks", [s.id for s in config.sinks])):
        counts = Counter(ids)
        for i, item_id in enumerate(ids):
            if counts[item_id] > 1:
                errors.add((section, i, "id"), f"duplicate id {item_id!r}; each entry needs its own id")
    _check_stage_models(config, errors)
    _check_zone_sources(config, errors)
    _check_vlm(config, errors)
    if len(config.pipeline.name) > MAX_PIPELINE_NAME:
        errors.add(("pipeline", "name"), f"at most {MAX_PIPELINE_NAME} characters, got {len(config.pipeline.name)}")
    for loc, message in number_problems(config, ()):
        errors.add(loc, message)
    ui_secret = ("ui", "token") in errors.src.secret_locs
    for path, message in check_ui(config.ui, config.http.enabled, config.http.host, ui_secret):
        errors.add(tuple(path.split(".")), message)


def _check_zone_sources(config: Config, errors: ConfigErrors) -> None:
    """A zone under a source id that does not exist would silently never trigger."""
    tracking = config.pipeline.tracking
    zones = tracking.events.zones if tracking is not None else {}
    known = {s.id for s in config.sources}
    for source_id in zones:
        if source_id not in known:
            errors.add(("pipeline", "tracking", "events", "zones", source_id),
                       f"zones for unknown source {source_id!r}; sources are: {', '.join(sorted(known))}")


def _check_stage_models(config: Config, errors: ConfigErrors) -> None:
    """Every model a stage names must exist and be of a kind that fits its place in the chain."""
    spec = config.pipeline
    if isinstance(spec, WorkflowPipelineSpec):
        return  # compiling the workflow checked its steps' models
    _check_model_ref(config, spec.detector, ("pipeline", "detector"), {"detect"}, errors)

    def walk(stages: list[StageSpec], loc: Loc) -> None:
        for i, stage in enumerate(stages):
            here = (*loc, "stages", i)
            _check_model_ref(config, stage.model, (*here, "model"), None, errors)
            walk(stage.stages, here)

    walk(spec.stages, ("pipeline",))
    _check_match_stages(config, spec.stages, ("pipeline",), errors)


def _check_match_stages(config: Config, stages: list[StageSpec], loc: Loc, errors: ConfigErrors) -> None:
    """A stage's match: needs an embed model (whose vectors it compares) and an existing gallery folder."""
    for i, stage in enumerate(stages):
        here = (*loc, "stages", i)
        if stage.match is not None and stage.model in config.models:
            kind = registry.resolve("model", config.models[stage.model].type).kind
            if kind != "embed":
                errors.add((*here, "match"), f"match: needs an embed model; {stage.model!r} is a {kind} model")
            if not Path(stage.match.folder).is_dir():
                errors.add((*here, "match", "folder"), f"gallery folder {stage.match.folder} does not exist")
        _check_match_stages(config, stage.stages, here, errors)


def _check_vlm(config: Config, errors: ConfigErrors) -> None:
    for loc, message in check_vlm_options(config.vlm, [s.id for s in config.sources]):
        errors.add(("vlm", *loc), message)
    for i, stage in enumerate(config.vlm):
        if stage.api_key is not None and ("vlm", i, "api_key") not in errors.src.secret_locs:
            errors.add(("vlm", i, "api_key"), "write the key as ${cred:NAME}, ${file:PATH} or ${ENV}, not in the file")


def _check_model_ref(config: Config, name: str, loc: Loc, kinds: set[str] | None, errors: ConfigErrors) -> None:
    if name in errors.invalid_models:
        return  # its own entry's error says what is wrong; "unknown model" here would be false
    if name not in config.models:
        known = ", ".join(sorted(config.models)) or "none defined"
        errors.add(loc, f"unknown model {name!r}; models defined under models: are: {known}")
        return
    kind = registry.resolve("model", config.models[name].type).kind
    if kinds is not None and kind not in kinds:
        errors.add(loc, f"model {name!r} is a {kind} model; this position needs a {' or '.join(sorted(kinds))} model")
