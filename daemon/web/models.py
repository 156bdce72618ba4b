"""The inference API's model registry: model_id -> configured model, loading and unloading, task types."""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from daemon.config import ApiOptions
from pipelines.models import MODEL_TYPES, ModelOptions, UnknownTypeError, load_model
from pipelines.runtime.base import ModelLoadError

log = logging.getLogger(__name__)

# Roboflow's task type per model kind; the client refuses tasks it has no image route for.
TASK_TYPES: dict[str, str] = {
    "detect": "object-detection",
    "classify": "classification",
    "ocr": "ocr",
    "embed": "embedding",
}


class ApiError(Exception):
    """A request the API refuses; `status` is the HTTP status and str() the message for the client."""

    status = 400

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.headers = headers  # e.g. Retry-After on a 503

    def body(self) -> dict[str, Any]:
        """The JSON the client gets: {"message", "status"} as Roboflow's server answers."""
        return {"message": str(self), "status": self.status}


class UnknownModelError(ApiError):
    status = 404


class WrongTaskError(ApiError):
    status = 400


@dataclass
class ApiModel:
    """One loaded model as the API serves it."""

    model_id: str
    name: str  # the name under models:, or the file path for models added by path
    model: Any
    kind: str
    shared: bool  # the daemon's own instance (unloading only drops the API's reference)
    from_file: bool = False  # added by path from api.model_dirs, not from the config
    extras: dict[Hashable, Any] = field(default_factory=dict)  # per-model helpers built lazily (coalescers)

    @property
    def task_type(self) -> str:
        return TASK_TYPES.get(self.kind, self.kind)

    def describe(self, batch_size: int) -> dict[str, Any]:
        wh = getattr(self.model, "input_wh", None)
        return {
            "model_id": self.model_id,
            "task_type": self.task_type,
            "batch_size": batch_size,
            "input_height": int(wh[1]) if wh else None,
            "input_width": int(wh[0]) if wh else None,
        }


def model_ids(options: ApiOptions, model_options: Mapping[str, ModelOptions]) -> dict[str, str]:
    """model_id -> configured model name: ApiOptions.models, or every model as NAME/1 when that is empty."""
    if not options.models:
        return {f"{name}/1": name for name in model_options}
    unknown = {mid: name for mid, name in options.models.items() if name not in model_options}
    if unknown:
        known = ", ".join(sorted(model_options)) or "none"
        raise ValueError(f"api.models maps {unknown} to models that are not under models: (defined: {known})")
    return dict(options.models)


class ModelRegistry:
    """Which models the API knows (config, model_dirs) and which are loaded; thread-safe."""

    def __init__(
        self,
        options: ApiOptions,
        daemon_models: Mapping[str, Any],
        model_options: Mapping[str, ModelOptions],
        batch_size: int,
    ) -> None:
        self.options = options
        self.daemon_models = dict(daemon_models)
        self.model_options = dict(model_options)
        self.batch_size = batch_size
        self.known = model_ids(options, model_options)
        self._loaded: dict[str, ApiModel] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}

    # -- queries ----------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        with self._lock:
            entries = list(self._loaded.values())
        return {"models": [e.describe(self.batch_size) for e in entries]}

    def loaded(self, model_id: str) -> ApiModel | None:
        with self._lock:
            return self._loaded.get(model_id)

    def configured_of(self, predicate: Any) -> list[str]:
        """Configured model ids whose options satisfy predicate(options), in config order."""
        return [mid for mid, name in self.known.items() if predicate(self.model_options[name])]

    # -- loading ----------------------------------------------------------------------------------------
    def get(self, model_id: str) -> ApiModel:
        """The loaded model, loading a configured one on first use (as Roboflow's server does)."""
        entry = self.loaded(model_id)
        if entry is not None:
            return entry
        if model_id not in self.known:
            raise self._unknown(model_id)
        return self.add(model_id)

    def add(self, model_id: Any, model_type: str | None = None) -> ApiModel:
        """Load `model_id` (a configured id, or a file under model_dirs with its type); idempotent."""
        if not isinstance(model_id, str) or not model_id.strip():
            raise ApiError("model_id is missing or empty; expected e.g. " + self._example())
        # an unknown id fails here, before it gets a lock of its own
        file = None if model_id in self.known else self._path_model(model_id, model_type)
        with self._lock:
            lock = self._load_locks.setdefault(model_id, threading.Lock())
        with lock:  # one load per id at a time; concurrent callers wait and share the result
            entry = self.loaded(model_id)
            if entry is None:
                entry = self._load(model_id, file)
                with self._lock:
                    self._loaded[model_id] = entry
                log.info("api: loaded model %s (%s, %s)", model_id, entry.name, entry.task_type)
        return entry

    def _load(self, model_id: str, file: tuple[Path, str] | None) -> ApiModel:
        if file is None:
            name = self.known[model_id]
            if name in self.daemon_models:
                model = self.daemon_models[name]
                return ApiModel(model_id, name, model, str(model.kind), shared=True)
            model = self._build(self.model_options[name], name, model_id)
            return ApiModel(model_id, name, model, str(model.kind), shared=False)
        path, type_name = file
        model = self._build({"type": type_name, "path": str(path)}, path.stem, model_id)
        return ApiModel(model_id, str(path), model, str(model.kind), shared=False, from_file=True)

    def _build(self, spec: ModelOptions | Mapping[str, Any], name: str, model_id: str) -> Any:
        try:
            return load_model(spec, name)
        except (ModelLoadError, UnknownTypeError, ValidationError, OSError) as exc:
            raise ApiError(f"model {model_id}: cannot load: {_one_line(exc)}", status=422) from None

    def _path_model(self, model_id: str, model_type: str | None) -> tuple[Path, str]:
        """A model file given by path: only inside model_dirs, and only with a known model type."""
        if model_type is None and ":" in model_id:
            prefix, _, rest = model_id.partition(":")
            if prefix in MODEL_TYPES:
                model_type, model_id = prefix, rest
        if not self.options.model_dirs:
            raise self._unknown(model_id)
        path = _inside_dirs(model_id, self.options.model_dirs)
        if path is None:
            raise UnknownModelError(
                f"model {model_id!r} is neither configured nor a model file inside api.model_dirs; "
                f"configured: {self._example()}"
            )
        if model_type not in MODEL_TYPES:
            raise ApiError(
                f"model file {model_id!r} needs its type: send model_type (or model_id TYPE:PATH) with one of "
                f"{', '.join(MODEL_TYPES)}; got {model_type!r}"
            )
        return path, model_type

    def update(self, daemon_models: Mapping[str, Any], model_options: Mapping[str, ModelOptions]) -> None:
        """After a config reload: serve the daemon's new models; loaded entries whose model changed are dropped."""
        known = model_ids(self.options, model_options)
        with self._lock:
            old_options = self.model_options
            self.daemon_models, self.model_options, self.known = dict(daemon_models), dict(model_options), known
            for model_id, entry in list(self._loaded.items()):
                if entry.from_file:
                    continue
                name = entry.name
                stale = known.get(model_id) != name or (
                    self.daemon_models.get(name) is not entry.model if entry.shared
                    else name in self.daemon_models or old_options.get(name) != self.model_options.get(name)
                )
                if stale:
                    del self._loaded[model_id]
                    log.info("api: model %s changed with the config; it reloads on next use", model_id)

    # -- unloading --------------------------------------------------------------------------------------
    def remove(self, model_id: str) -> None:
        with self._lock:
            entry = self._loaded.pop(model_id, None)
        if entry is None and model_id not in self.known:
            raise UnknownModelError(f"model {model_id!r} is not loaded; loaded: {self._loaded_ids()}")
        if entry is not None:
            log.info("api: unloaded model %s", model_id)

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()
        log.info("api: unloaded all models")

    # -- messages ---------------------------------------------------------------------------------------
    def _unknown(self, model_id: str) -> UnknownModelError:
        return UnknownModelError(f"unknown model_id {model_id!r}; this server knows: {self._example()}")

    def _example(self) -> str:
        return ", ".join(sorted(self.known)) or "no models (add some under models: or api.models)"

    def _loaded_ids(self) -> str:
        with self._lock:
            return ", ".join(sorted(self._loaded)) or "none"


def _inside_dirs(relative: str, dirs: list[str]) -> Path | None:
    """The existing file `relative` names inside one of `dirs` (symlinks resolved), else None."""
    for folder in dirs:
        root = Path(folder).resolve()
        candidate = (root / relative).resolve()
        if candidate.is_file() and candidate.is_relative_to(root):
            return candidate
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
