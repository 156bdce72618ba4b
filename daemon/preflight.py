"""What `run` checks before the first frame, and `edgewatch validate` with it, so that "valid" means "runs".

Every model loads and fits the stage it is given to (a garbage ONNX file, a classifier as the detector, a
detector as a classify stage, a missing labels_file), the pipeline builds on them, and the http:/api:
addresses can be listened on together. Each problem names its YAML path and line.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from daemon.config import Config, ConfigError, pipeline_to_build, problems_error
from daemon.web.app import listeners
from daemon.web.server import listen
from daemon.yamlsrc import LoadedYaml, Loc
from pipelines.build import build_pipeline
from pipelines.detect.base import DetectorOptions
from pipelines.models import LoadedModel, load_model

log = logging.getLogger(__name__)

Problem = tuple[Loc, str]


@dataclass
class PreflightReport:
    """What the checks found; `models` are the loaded ones (empty with load_models=False)."""

    problems: list[Problem] = field(default_factory=list)
    models: dict[str, LoadedModel] = field(default_factory=dict)
    seconds: float = 0.0

    def error(self, src: LoadedYaml) -> ConfigError | None:
        return problems_error(src, self.problems)


def preflight(config: Config, src: LoadedYaml, load_models: bool = True, ports: bool = True) -> PreflightReport:
    """Run the checks; nothing is started and every socket opened here is closed again."""
    start = time.monotonic()
    report = PreflightReport(problems=static_problems(config, src))
    if ports:
        report.problems += port_problems(config, src)
    if load_models:
        report.models, problems = load_problems(config, src)
        report.problems += problems
    report.seconds = time.monotonic() - start
    return report


def static_problems(config: Config, src: LoadedYaml) -> list[Problem]:
    """Checks that need no model loaded (kept for validate --no-load): a detector's input_size must be positive."""
    problems: list[Problem] = []
    for name, options in config.models.items():
        size = options.input_size if isinstance(options, DetectorOptions) else None
        if size is not None and min(size) <= 0 and not src.is_unresolved(("models", name, "input_size")):
            problems.append((("models", name, "input_size"), f"expected a positive [width, height], got {list(size)}"))
    return problems


def port_problems(config: Config, src: LoadedYaml) -> list[Problem]:
    """Listen on every configured address at once, as start does (two overlapping ones conflict), then close."""
    if any(src.is_unresolved((section, key)) for section in ("http", "api") for key in ("host", "port")):
        return []  # validate --allow-missing-secrets: the address is not known here
    with ExitStack() as sockets:
        for listener in listeners(config.http, config.api):
            try:
                sockets.enter_context(listen(listener.option, listener.host, listener.port))
            except OSError as exc:  # ListenError: "http: cannot listen on HOST:PORT: Address already in use"
                return [(("api" if listener.api else "http", "port"), str(exc))]
    return []


def load_problems(config: Config, src: LoadedYaml) -> tuple[dict[str, LoadedModel], list[Problem]]:
    """Load each model (its own errors at models.NAME), then build the pipeline on them (errors at pipeline)."""
    models: dict[str, LoadedModel] = {}
    problems: list[Problem] = []
    for name, options in config.models.items():
        if any(loc[:2] == ("models", name) for loc in src.unresolved) or src.is_unresolved(("models", name)):
            continue  # validate --allow-missing-secrets: a setting of this model kept its ${...}
        try:
            models[name] = load_model(options, name)
        except (ValueError, OSError) as exc:  # ModelLoadError is a ValueError
            problems.append((("models", name), _flat(exc)))
    if problems or len(models) < len(config.models):
        return models, problems  # the pipeline needs every model; their own errors say why not
    try:
        build_pipeline(*pipeline_to_build(config, models), isolate_stage_errors=True)
    except (ValueError, OSError) as exc:
        problems.append((("pipeline",), _flat(exc)))
    return models, problems


def _flat(exc: BaseException) -> str:
    """One line: ONNX Runtime's reasons can span several."""
    return " ".join(str(exc).split())


def check(config: Config, src: LoadedYaml, load_models: bool = True, ports: bool = True) -> PreflightReport:
    """preflight() as one ConfigError (all problems, with lines), else its report: `run` starts on the models
    it loaded instead of loading each twice."""
    report = preflight(config, src, load_models, ports)
    error = report.error(src)
    if error is not None:
        raise error
    return report
