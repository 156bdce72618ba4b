"""A Roboflow Workflow specification's outer shape: version, inputs, outputs, selectors, parameters, WorkflowError."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, ValidationError

INPUT_TYPES = {"WorkflowImage": "image", "InferenceImage": "image",
               "WorkflowParameter": "parameter", "InferenceParameter": "parameter"}
# Roboflow's selector grammar: names of letters, digits, "_" and "-"; "*" selects every output of a step
INPUT_SELECTOR = re.compile(r"^\$inputs\.([A-Za-z_0-9\-]+)$")
STEP_SELECTOR = re.compile(r"^\$steps\.([A-Za-z_0-9\-]+)\.([A-Za-z_0-9\-]+|\*)$")
NAME = re.compile(r"^[A-Za-z_0-9\-]+$")


class WorkflowError(ValueError):
    """A specification edgewatch cannot run: the message names the step or output and the field."""


class _Loose(BaseModel):
    # Roboflow's server ignores keys its models do not declare (pydantic's default); so do we
    model_config = ConfigDict(extra="ignore")


class ImageInput(_Loose):
    type: Literal["WorkflowImage", "InferenceImage"]
    name: str


class ParameterInput(_Loose):
    type: Literal["WorkflowParameter", "InferenceParameter"]
    name: str
    default_value: float | int | str | bool | list[Any] | dict[str, Any] | None = None


class JsonField(_Loose):
    type: Literal["JsonField"]
    name: str
    selector: str
    coordinates_system: Literal["own", "parent"] = "parent"


@dataclass(frozen=True)
class Ref:
    """A parsed selector: `$inputs.NAME` (output None) or `$steps.NAME.OUTPUT` ("*": every output)."""

    source: Literal["inputs", "steps"]
    name: str
    output: str | None
    text: str


@dataclass(frozen=True)
class Outline:
    """The parts of a specification around its steps: the image input, the parameters' values, the outputs."""

    image: str
    parameters: Mapping[str, Any]
    steps: Sequence[Mapping[str, Any]]
    outputs: Sequence[JsonField]


def is_selector(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith("$")


def parse_selector(text: str, where: str) -> Ref:
    """The reference a selector string makes; WorkflowError for anything else."""
    found = INPUT_SELECTOR.match(text)
    if found:
        return Ref("inputs", found.group(1), None, text)
    found = STEP_SELECTOR.match(text)
    if found:
        return Ref("steps", found.group(1), found.group(2), text)
    raise WorkflowError(f"{where}: {text!r} is not a selector; expected $inputs.<name> or $steps.<step>.<output>")


def parse_outline(spec: Any, parameters: Mapping[str, Any] | None = None) -> Outline:
    """Check the top level of a specification and give the image input, the parameter values and the rest."""
    if not isinstance(spec, Mapping):
        raise WorkflowError(f"a workflow specification is a JSON object, got {type(spec).__name__}")
    missing = [key for key in ("version", "inputs", "steps", "outputs") if key not in spec]
    if missing:
        raise WorkflowError(f"specification: missing {', '.join(missing)} (needs version, inputs, steps, outputs)")
    for key in ("inputs", "steps", "outputs"):
        if not isinstance(spec[key], list):
            raise WorkflowError(f"specification: {key} must be a list, got {type(spec[key]).__name__}")
    images, defaults = _inputs(spec["inputs"])
    if len(images) != 1:
        raise WorkflowError(f"inputs: edgewatch runs a workflow on one image input (WorkflowImage); "
                            f"this specification declares {len(images)}{': ' + ', '.join(images) if images else ''}")
    values = {name: (parameters or {}).get(name, default) for name, default in defaults.items()}
    steps = spec["steps"]
    for index, step in enumerate(steps):
        if not isinstance(step, Mapping):
            raise WorkflowError(f"steps[{index}]: a step is a JSON object, got {type(step).__name__}")
    return Outline(images[0], values, steps, _outputs(spec["outputs"]))


def _inputs(inputs: list[Any]) -> tuple[list[str], dict[str, Any]]:
    images: list[str] = []
    defaults: dict[str, Any] = {}
    for index, item in enumerate(inputs):
        kind = INPUT_TYPES.get(str(item.get("type"))) if isinstance(item, Mapping) else None
        if kind is None:
            got = item.get("type") if isinstance(item, Mapping) else type(item).__name__
            raise WorkflowError(f"inputs[{index}]: input type {got!r} is not supported; "
                                f"supported: {', '.join(INPUT_TYPES)}")
        parsed = _validate(ImageInput if kind == "image" else ParameterInput, item, f"inputs[{index}]")
        if not NAME.match(parsed.name):
            raise WorkflowError(f"inputs[{index}]: name {parsed.name!r} must be letters, digits, '_' or '-'")
        if parsed.name in images or parsed.name in defaults:
            raise WorkflowError(f"inputs[{index}]: two inputs are named {parsed.name!r}")
        if isinstance(parsed, ParameterInput):
            defaults[parsed.name] = parsed.default_value
        else:
            images.append(parsed.name)
    return images, defaults


def _outputs(outputs: list[Any]) -> list[JsonField]:
    fields: list[JsonField] = []
    for index, item in enumerate(outputs):
        if not isinstance(item, Mapping) or item.get("type") != "JsonField":
            got = item.get("type") if isinstance(item, Mapping) else type(item).__name__
            raise WorkflowError(f"outputs[{index}]: output type {got!r} is not supported; supported: JsonField")
        field = _validate(JsonField, item, f"outputs[{index}]")
        if any(f.name == field.name for f in fields):
            raise WorkflowError(f"outputs[{index}]: two outputs are named {field.name!r}")
        fields.append(field)
    return fields


def _validate(model: type[BaseModel], data: Mapping[str, Any], where: str) -> Any:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise WorkflowError(f"{where}: {explain(exc)}") from None


def explain(exc: ValidationError) -> str:
    """Pydantic's errors as one line: `field: message; field: message`."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")  # a validator's own ValueError says it all
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


def bind_parameters(
    step: Mapping[str, Any], refs: frozenset[str], outline: Outline, where: str, keep_none: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The step with `$inputs.<parameter>` values replaced by the parameters' values.

    Keys in `refs` keep their selectors (images, predictions). A parameter whose value is None leaves the
    field out, so the block's default applies (as a model call with None does on Roboflow's server); keys in
    `keep_none` keep None (a VLM answer that never came is an error status, not a default).
    """
    bound: dict[str, Any] = {}
    for key, value in step.items():
        if key in refs or key in ("type", "name"):
            bound[key] = value
            continue
        if key == "operations_parameters" and isinstance(value, Mapping):
            bound[key] = {k: parameter_value(v, outline, f"{where} field {key}.{k}") for k, v in value.items()}
            continue
        if not is_selector(value):
            bound[key] = value
            continue
        resolved = parameter_value(value, outline, f"{where} field {key}")
        if resolved is not None or key in keep_none:
            bound[key] = resolved
    return bound


def parameter_value(value: Any, outline: Outline, where: str) -> Any:
    """A literal as it is; a `$inputs.<parameter>` selector as the parameter's value."""
    if not is_selector(value):
        return value
    ref = parse_selector(value, where)
    if ref.source == "steps":
        raise WorkflowError(f"{where}: {value} is a step output; in edgewatch this field takes a value or a "
                            "$inputs parameter (step outputs feed only images and predictions fields)")
    if ref.name == outline.image:
        raise WorkflowError(f"{where}: {value} is the image input; this field takes a parameter value")
    if ref.name not in outline.parameters:
        declared = ", ".join([outline.image, *outline.parameters])
        raise WorkflowError(f"{where}: {value} names no declared input (declared: {declared})")
    return outline.parameters[ref.name]
