"""The runtime overlay: cameras added, removed or switched over MQTT or HTTP, kept in <state_dir>/overlay.json.

The YAML stays the source of truth: at every load (start, SIGHUP) the overlay is applied on top of it.
Added entries are validated again with the same source Options as YAML entries; one that no longer
validates, or whose id the YAML now has too, is skipped with a warning (the YAML wins). A removed id
hides the YAML camera of that id. `enabled: false` cameras are kept aside (not captured); `detect: false`
ones are captured but not run through the pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon import registry
from daemon.config import Config, resolve_config_paths
from daemon.control.errors import ControlError, FieldError
from daemon.sources.base import SourceOptions
from daemon.yamlsrc import YamlError, resolve_reference
from pipelines.models import UnknownTypeError

log = logging.getLogger(__name__)

OVERLAY_FILE = "overlay.json"
_REFERENCE = re.compile(r"\$\{([^}]*)\}")  # a ${...} reference, as in the YAML


class OverlayError(ValueError):
    """overlay.json exists but cannot be used; the message names the file and what is wrong."""


class Overlay(BaseModel):
    """What runtime control changed, relative to the YAML."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    added: list[dict[str, Any]] = Field(default_factory=list, description="Source entries added at runtime.")
    removed: list[str] = Field(default_factory=list, description="Ids of YAML sources removed at runtime.")
    detect: dict[str, bool] = Field(default_factory=dict, description="Cameras whose inference is switched.")
    enabled: dict[str, bool] = Field(default_factory=dict, description="Cameras whose capture is switched.")

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.detect or self.enabled)


def overlay_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / OVERLAY_FILE


def read_overlay(path: Path) -> Overlay:
    """The overlay at path; an empty one when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Overlay()
    except OSError as exc:
        raise OverlayError(f"{path}: cannot read the runtime overlay: {exc.strerror}") from None
    try:
        return Overlay.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        raise OverlayError(f"{path}: not a valid runtime overlay ({where}: {first['msg']}); fix or delete the "
                           "file (it only holds changes made over MQTT or HTTP)") from None


def write_overlay(path: Path, overlay: Overlay) -> None:
    """Atomically (write, fsync, rename), readable by the owner only: added entries may carry camera URLs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(overlay.model_dump(), indent=2, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def validate_source(entry: Mapping[str, Any], base_dir: Path, env: Mapping[str, str] | None = None
                    ) -> tuple[SourceOptions, dict[str, Any]]:
    """One source entry checked as a YAML `sources:` item is: (options, the entry to keep in the overlay).

    ${VAR}, ${cred:NAME} and ${file:PATH} are substituted as in the YAML, for the check only: the kept entry
    holds the references, not the secrets, and is substituted again at every load. Relative paths are made
    relative to base_dir (the config file's folder). Raises ControlError(422) naming every wrong field.
    """
    env = os.environ if env is None else env
    kept = _with_paths(dict(entry), base_dir)
    kept.update({k: v for k, v in entry.items() if isinstance(v, str) and "${" in v})  # resolved at each load
    data = _with_paths(_substituted(dict(entry), (), base_dir, env), base_dir)
    type_name = data.get("type")
    if not isinstance(type_name, str):
        expected = ", ".join(registry.names("source"))
        raise ControlError(422, "invalid source", [FieldError("type", f"missing or not text; expected one of: "
                                                                      f"{expected}")])
    try:
        options_model = registry.resolve("source", type_name).Options
    except UnknownTypeError as exc:
        raise ControlError(422, "invalid source", [FieldError("type", str(exc))]) from None
    try:
        options = options_model.model_validate(data)
    except ValidationError as exc:
        raise ControlError(422, "invalid source", field_errors(exc)) from None
    return options, kept


def _with_paths(entry: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    wrapped = {"sources": [entry]}
    resolve_config_paths(wrapped, base_dir)
    return dict(wrapped["sources"][0])


def _substituted(value: Any, loc: tuple[str | int, ...], base_dir: Path, env: Mapping[str, str]) -> Any:
    """value with every ${...} in its strings resolved (daemon/yamlsrc.py's rules); 422 naming the field if not."""
    if isinstance(value, dict):
        return {k: _substituted(v, (*loc, str(k)), base_dir, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_substituted(v, (*loc, i), base_dir, env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    where = ".".join(str(part) for part in loc)
    try:
        return _REFERENCE.sub(lambda m: resolve_reference(m.group(1), env, base_dir, where=where), value)
    except YamlError as exc:  # UnresolvedReference too; the message names the reference, never a secret
        raise ControlError(422, "invalid source", [FieldError(where, str(exc))]) from None


def field_errors(exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(part) for part in err["loc"])
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required setting is missing"
        else:
            message = err["msg"]
        out.append(FieldError(where, message))
    return out


@dataclass
class Applied:
    """A config with the overlay applied: the running sources in `config`, switched-off ones aside."""

    config: Config
    disabled: dict[str, SourceOptions] = field(default_factory=dict)
    added: set[str] = field(default_factory=set)  # ids that come from the overlay, not the YAML
    problems: list[str] = field(default_factory=list)


def apply_overlay(config: Config, overlay: Overlay, base_dir: Path) -> Applied:
    """The YAML config with the overlay on top (pure: nothing starts or is written)."""
    removed = set(overlay.removed)
    sources = [s for s in config.sources if s.id not in removed]
    applied = Applied(config)
    for entry in overlay.added:
        options = _added_source(entry, base_dir, {s.id for s in sources}, applied.problems)
        if options is not None:
            sources.append(options)
            applied.added.add(options.id)
    running = []
    for options in sources:
        if overlay.enabled.get(options.id, True):
            running.append(options)
        else:
            applied.disabled[options.id] = options
    applied.config = config.model_copy(update={"sources": running})
    return applied


def _added_source(entry: Mapping[str, Any], base_dir: Path, taken: set[str], problems: list[str]
                  ) -> SourceOptions | None:
    sid = entry.get("id")
    if sid in taken:
        problems.append(f"overlay: camera {sid!r} is in the YAML now; the YAML entry is used")
        return None
    try:
        options, _ = validate_source(entry, base_dir)
    except ControlError as exc:
        problems.append(f"overlay: camera {sid!r} skipped, its entry no longer validates: {exc.describe()}")
        return None
    return options


def describe_overlay(overlay: Overlay, path: Path) -> list[str]:
    """One note per kind of change, for `edgewatch validate --show-effective`."""
    if overlay.empty:
        return []
    notes = [f"runtime overlay {path} applied (YAML + changes made over MQTT/HTTP):"]
    parts: Sequence[tuple[str, list[str]]] = (
        ("added", [str(e.get("id")) for e in overlay.added]), ("removed", overlay.removed),
        ("capture off (enabled OFF)", [k for k, on in overlay.enabled.items() if not on]),
        ("inference off (detect OFF)", [k for k, on in overlay.detect.items() if not on]),
    )
    notes += [f"  {what}: {', '.join(ids)}" for what, ids in parts if ids]
    return notes


def effective_with_overlay(config: Config) -> tuple[Config, list[str]]:
    """What the daemon would run for a validated YAML config: the overlay in its state_dir applied, and notes."""
    path = overlay_path(config.state_dir)
    overlay = read_overlay(path)
    base_dir = Path.cwd()
    applied = apply_overlay(config, overlay, base_dir)
    return applied.config, describe_overlay(overlay, path) + applied.problems
