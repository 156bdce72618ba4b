"""Roboflow Workflow routes of the inference API: an inline or a stored specification, run on the daemon's worker.

POST /workflows/run and /infer/workflows take the specification in the body; /{workspace}/workflows/{id} and
/infer/workflows/{workspace}/{id} read it from api.workflows_dir (edgewatch fetches nothing from a cloud).
The body is what inference_sdk's run_workflow sends: `inputs` (the image input, one image or a list, and
the parameters), `excluded_fields`. The answer is Roboflow's: {"outputs": [one dict per image], ...}; a
specification edgewatch cannot run is a 400 in Roboflow's workflow error shape, naming the step and field.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from pathlib import Path
from typing import Any

from starlette.routing import Route

from daemon.web.api import ApiService
from daemon.web.models import ApiError, UnknownModelError
from daemon.web.server import RouteGroup
from pipelines.models import LoadedModel, ModelOptions, model_class
from pipelines.workflows import WorkflowError, compile_workflow
from pipelines.workflows.section import read_specification

log = logging.getLogger(__name__)

INLINE_ROUTES = ("/workflows/run", "/infer/workflows")
STORED_ROUTES = ("/{workspace}/workflows/{workflow_id}", "/infer/workflows/{workspace}/{workflow_id}")
STORED_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # no path separators, no leading dot
# where a compiler message names its step: "step 'NAME' (TYPE) field KEY: ..." or "step 'NAME' (TYPE): KEY: ..."
STEP_MESSAGE = re.compile(r"^step '(?P<step>[^']*)'(?: \((?P<type>[^)]*)\))?(?: field (?P<field>[^:\s]+))?: "
                          r"(?:(?P<loc>[\w.\-]+): )?")
COMPILE_CONTEXT = "workflow_compilation | specification_parsing"
INPUT_CONTEXT = "workflow_execution | runtime_input_validation"


class WorkflowInputError(ApiError):
    """The request's inputs do not fit its specification (Roboflow's RuntimeInputError)."""

    def body(self) -> dict[str, Any]:
        return roboflow_body(str(self), self.status, "RuntimeInputError", INPUT_CONTEXT, type(self).__name__)


class WorkflowRefused(ApiError):
    """A specification edgewatch cannot run (Roboflow's WorkflowDefinitionError), naming the step at fault."""

    def __init__(self, error: WorkflowError) -> None:
        super().__init__(str(error), 400)
        self.inner_type = type(error).__name__

    def body(self) -> dict[str, Any]:
        return roboflow_body(str(self), self.status, "WorkflowDefinitionError", COMPILE_CONTEXT, self.inner_type)


def roboflow_body(message: str, status: int, error_type: str, context: str, inner_type: str) -> dict[str, Any]:
    """A refused workflow as Roboflow's server answers: message, error type, context and the step at fault."""
    body: dict[str, Any] = {"message": message, "status": status, "error_type": error_type, "context": context,
                            "inner_error_type": inner_type, "inner_error_message": message}
    found = STEP_MESSAGE.match(message)
    if found:
        body["blocks_errors"] = [{
            "block_id": found["step"], "block_type": found["type"],
            "property_name": found["field"] or found["loc"], "property_details": message,
        }]
    return body


class Workflows:
    """Compiles each request's specification against the API's models and runs it in worker jobs."""

    def __init__(self, service: ApiService) -> None:
        self.service = service
        self.registry = service.registry
        self.inference = service.inference
        folder = service.options.workflows_dir
        self.folder = Path(folder) if folder else None

    # -- routes -----------------------------------------------------------------------------------------
    async def run_inline(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("specification")
        if not isinstance(spec, dict):
            raise ApiError("specification: expected the workflow specification (a JSON object with version, "
                           f"inputs, steps, outputs), got {type(spec).__name__}", 422)
        return await self.run(spec, body)

    async def run_stored(self, body: dict[str, Any], workspace: str, workflow_id: str) -> dict[str, Any]:
        try:
            spec = await asyncio.to_thread(self.stored, workspace, workflow_id)
        except WorkflowError as exc:
            raise WorkflowRefused(exc) from exc
        return await self.run(spec, body)

    def stored(self, workspace: str, workflow_id: str) -> Any:
        """The specification saved as {workspace}/{id}.json, else {id}.json, in api.workflows_dir."""
        if self.folder is None:
            raise UnknownModelError(f"workflow {workspace}/{workflow_id}: this server runs no stored workflows; "
                                    "set api.workflows_dir, or send the specification to /workflows/run")
        for name in (workspace, workflow_id):
            if not STORED_NAME.match(name):
                raise ApiError(f"{name!r}: a workspace or workflow id is letters, digits, '_', '-' and '.'", 400)
        root = self.folder.resolve()
        candidates = [root / workspace / f"{workflow_id}.json", root / f"{workflow_id}.json"]
        for path in candidates:
            if path.is_file():
                return unwrapped(read_specification(path))
        looked = " or ".join(str(p.relative_to(root)) for p in candidates)
        raise UnknownModelError(f"workflow {workspace}/{workflow_id} not found: no {looked} in api.workflows_dir")

    async def run(self, spec: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """Compile, check the inputs, run in worker jobs; a WorkflowError anywhere is the client's 400."""
        try:
            return await self._run(spec, body)
        except WorkflowError as exc:
            raise WorkflowRefused(exc) from exc

    async def _run(self, spec: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("inputs", {})
        if not isinstance(inputs, dict):
            raise WorkflowInputError(f"inputs: expected an object of input name -> value, got {type(inputs).__name__}")
        excluded = excluded_fields(body.get("excluded_fields"))
        models, aliases, ocr_model = self.registry_view()
        compiled = compile_workflow(spec, models, inputs, ocr_model=ocr_model)
        name = compiled.image_input
        if inputs.get(name) is None:
            raise WorkflowInputError(f"inputs: the specification's image input {name!r} was not given; send "
                                     f"inputs.{name} (run_workflow(images={{{name!r}: ...}}))")
        loaded = {model_id: await self.model(aliases.get(model_id, model_id)) for model_id in compiled.model_ids}
        pipeline = compiled.build(loaded)  # a class filter naming classes the model lacks raises WorkflowError
        images, _ = await self.inference.images(inputs[name], f"inputs.{name}")
        ids = [name] if len(images) == 1 else [f"{name}.[{i}]" for i in range(len(images))]
        outputs: list[dict[str, Any]] = []
        chunk = self.inference.max_images  # one worker job per worker batch: streams keep their turns between
        for start in range(0, len(images), chunk):
            part = images[start : start + chunk]
            run = await self.inference.run_job(functools.partial(pipeline.run, part))
            outputs += await asyncio.to_thread(compiled.outputs, run, part, ids[start : start + chunk])
        kept = [{key: value for key, value in output.items() if key not in excluded} for output in outputs]
        return {"outputs": kept, "profiler_trace": []}

    # -- models -----------------------------------------------------------------------------------------
    def registry_view(self) -> tuple[dict[str, LoadedModel | ModelOptions], dict[str, str], str | None]:
        """The models a step's model_id may name, the model id behind each alias, and the model for OCR steps.

        A model_id is an API model id (vehicles/1, api.models) or the name under models: of a model the API
        serves; models added by path (/model/add) count too. OCR steps use the first configured OCR model,
        as the OCR routes do.
        """
        known = dict(self.registry.known)
        options = self.registry.model_options
        models: dict[str, LoadedModel | ModelOptions] = {mid: options[name] for mid, name in known.items()}
        aliases: dict[str, str] = {}
        for mid, name in known.items():
            if name not in models:
                aliases[name] = mid
                models[name] = options[name]
        for described in self.registry.describe()["models"]:
            entry = self.registry.loaded(described["model_id"])
            if entry is not None and entry.from_file:
                models[entry.model_id] = entry.model
        ocr = self.registry.configured_of(lambda o: model_class(o.type).kind == "ocr")
        return models, aliases, ocr[0] if ocr else None

    async def model(self, model_id: str) -> LoadedModel:
        entry = self.registry.loaded(model_id)
        if entry is None:  # loading takes a while: off the event loop
            entry = await asyncio.to_thread(self.registry.get, model_id)
        model: LoadedModel = entry.model
        return model


def unwrapped(spec: Any) -> Any:
    """A stored definition, also when saved inside its request ({"specification": {...}})."""
    inner = spec.get("specification") if isinstance(spec, dict) and "steps" not in spec else None
    return inner if isinstance(inner, dict) else spec


def excluded_fields(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WorkflowInputError(f"excluded_fields: expected a list of output names, got {value!r}")
    return frozenset(value)


def workflow_routes(service: ApiService) -> RouteGroup:
    """The workflow run routes inference_sdk's run_workflow calls (inline and stored, current and legacy)."""
    workflows = Workflows(service)
    inline = service.endpoint(workflows.run_inline, queued=True)
    stored = service.endpoint(workflows.run_stored, queued=True)
    routes = [*(Route(path, inline, methods=["POST"]) for path in INLINE_ROUTES),
              *(Route(path, stored, methods=["POST"]) for path in STORED_ROUTES)]
    return RouteGroup("workflows", routes)
