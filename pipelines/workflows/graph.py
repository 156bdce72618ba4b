"""A workflow's steps as a checked graph: selectors resolved, kinds matched, no cycle, each step's picture known."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.stages import RESERVED_NAMES
from pipelines.workflows.blocks import DETECTIONS, IMAGE, Block, DetectionsFilter, Step, block_of, validate_step
from pipelines.workflows.filters import FilterRule, parse_filter
from pipelines.workflows.spec import (
    NAME,
    JsonField,
    Outline,
    Ref,
    WorkflowError,
    bind_parameters,
    is_selector,
    parse_selector,
)

STAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")  # pipelines.stages.StageSpec's name pattern
PREDICTION_SOURCES = ("detect", "vlm", "filter")


@dataclass
class Node:
    """One step: its block and checked fields, its stage name, the picture it runs on and what it reads.

    scope: None when the step runs on the input image, else the dynamic_crop step whose crops it reads
    (a crop step's own scope is the picture it cuts from). source: the step whose predictions a crop or
    filter step reads. rule: a filter step's own rule.
    """

    name: str
    block: Block
    step: Step
    stage: str
    refs: dict[str, Ref] = field(default_factory=dict)
    scope: str | None = None
    source: str | None = None
    rule: FilterRule = field(default_factory=FilterRule)

    @property
    def role(self) -> str:
        return self.block.role

    @property
    def where(self) -> str:
        return f"step {self.name!r} ({self.step.type})"


@dataclass(frozen=True)
class Graph:
    """The checked steps in an order where every step comes after the steps it reads."""

    image: str
    parameters: Mapping[str, Any]
    nodes: Mapping[str, Node]
    outputs: list[JsonField]

    def origin(self, name: str) -> tuple[Node, FilterRule]:
        """The model step whose detections `name` (a model, filter or crop step's source) stands for, and the
        rule of the filters on the way."""
        node, rule = self.nodes[name], FilterRule()
        while node.role == "filter":
            assert node.source is not None  # every filter was given its source by place()
            rule = rule.both(node.rule)
            node = self.nodes[node.source]
        return node, rule


def build_graph(outline: Outline) -> Graph:
    nodes: dict[str, Node] = {}
    stages: set[str] = set()
    for index, raw in enumerate(outline.steps):
        name, block = block_of(raw, index)
        if name in nodes:
            raise WorkflowError(f"steps[{index}]: two steps are named {name!r}")
        if not NAME.match(name):
            raise WorkflowError(f"steps[{index}]: step name {name!r} must be letters, digits, '_' or '-'")
        node = _node(name, block, raw, outline, stage_name(name, stages))
        stages.add(node.stage)
        nodes[name] = node
    ordered = {name: nodes[name] for name in topological(nodes)}
    graph = Graph(outline.image, outline.parameters, ordered, list(outline.outputs))
    for node in ordered.values():
        place(graph, node)
    for index, output in enumerate(graph.outputs):
        check_output(graph, output, index)
    return graph


def stage_name(name: str, taken: set[str]) -> str:
    """A pipeline stage name for a step: its own when StageSpec accepts it, else a prefixed one."""
    stage = name if STAGE_NAME.match(name) and name not in RESERVED_NAMES else f"step_{name}"
    base, n = stage, 2
    while stage in taken:
        stage, n = f"{base}_{n}", n + 1
    return stage


def _node(name: str, block: Block, raw: Mapping[str, Any], outline: Outline, stage: str) -> Node:
    where = f"step {name!r} ({raw.get('type')})"
    for key in block.parameter_only:
        value = raw.get(key)
        ref = parse_selector(value, f"{where} field {key}") if is_selector(value) else None
        if ref is None or ref.source != "inputs":
            raise WorkflowError(f"{where} field {key}: expected a $inputs parameter holding the answer "
                                f"(edgewatch runs no language model as a step), got {value!r}")
    step = validate_step(block, bind_parameters(raw, block.ref_keys, outline, where, block.parameter_only))
    node = Node(name, block, step, stage)
    values = step.model_dump()
    for key in block.refs:
        text = values[key]
        if not is_selector(text):
            raise WorkflowError(f"{where} field {key}: expected a selector ($inputs.<name> or "
                                f"$steps.<step>.<output>), got {text!r}")
        node.refs[key] = parse_selector(text, f"{where} field {key}")
    if isinstance(step, DetectionsFilter):
        node.rule = parse_filter(step.operations, step.operations_parameters, where)
    return node


def topological(nodes: Mapping[str, Node]) -> list[str]:
    """Step names, each after the steps it reads; WorkflowError naming the cycle when there is one."""
    done: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            cycle = [*path[path.index(name):], name]
            raise WorkflowError(f"steps form a cycle: {' -> '.join(cycle)}")
        state[name] = "open"
        node = nodes[name]
        for key, ref in node.refs.items():
            if ref.source == "steps":
                if ref.name not in nodes:
                    known = ", ".join(nodes) or "none"
                    raise WorkflowError(f"{node.where} field {key}: {ref.text} names no step (steps: {known})")
                visit(ref.name, [*path, name])
        state[name] = "done"
        done.append(name)

    for name in nodes:
        visit(name, [])
    return done


def place(graph: Graph, node: Node) -> None:
    """Check the node's selectors' kinds and set the picture it runs on (scope) and what it reads (source)."""
    image_ref = node.refs.get("images") or node.refs.get("image")
    if image_ref is not None:
        node.scope = picture(graph, node, "images" if "images" in node.refs else "image", image_ref)
    if "predictions" in node.refs:
        node.source = prediction_source(graph, node, node.refs["predictions"])
        made_on = graph.origin(node.source)[0].scope
        if node.role == "filter":
            node.scope = made_on
        elif made_on != node.scope:
            raise WorkflowError(f"{node.where}: images {node.refs['images'].text} and predictions "
                                f"{node.refs['predictions'].text} are of different pictures "
                                f"({describe(node.scope)} vs {describe(made_on)})")
    if node.role == "vlm" and node.scope is not None:
        raise WorkflowError(f"{node.where} field image: vlm_as_detector runs on the input image in edgewatch "
                            f"(its answer is one parameter), got {node.refs['image'].text}")


def describe(scope: str | None) -> str:
    return "the input image" if scope is None else f"crops of step {scope!r}"


def output_kind(graph: Graph, ref: Ref, where: str) -> str:
    """The Roboflow kind a step selector gives (the step exists and was checked by topological())."""
    node = graph.nodes[ref.name]
    if ref.output is None or ref.output not in node.block.outputs:
        outputs = ", ".join(node.block.outputs)
        raise WorkflowError(f"{where}: {ref.text}: step {ref.name!r} has no output {ref.output!r} "
                            f"(outputs: {outputs}{', *' if where.startswith('outputs') else ''})")
    return node.block.outputs[ref.output]


def picture(graph: Graph, node: Node, key: str, ref: Ref) -> str | None:
    """The scope an images field selects: None for the image input, else the dynamic_crop step named."""
    if ref.source == "inputs":
        if ref.name != graph.image:
            what = "a parameter" if ref.name in graph.parameters else "no declared input"
            raise WorkflowError(f"{node.where} field {key}: {ref.text} is {what}; expected an image "
                                f"($inputs.{graph.image} or $steps.<dynamic_crop>.crops)")
        return None
    kind = output_kind(graph, ref, f"{node.where} field {key}")
    if kind != IMAGE:
        raise WorkflowError(f"{node.where} field {key}: kind mismatch: {ref.text} is {kind}; expected image "
                            f"($inputs.{graph.image} or $steps.<dynamic_crop>.crops)")
    return ref.name


def prediction_source(graph: Graph, node: Node, ref: Ref) -> str:
    """The step a predictions field reads: an object detection, vlm_as_detector or detections_filter step."""
    if ref.source == "inputs":
        raise WorkflowError(f"{node.where} field predictions: {ref.text} is an input; expected "
                            f"{DETECTIONS} from a step ($steps.<step>.predictions)")
    kind = output_kind(graph, ref, f"{node.where} field predictions")
    if kind != DETECTIONS:
        raise WorkflowError(f"{node.where} field predictions: kind mismatch: {ref.text} is {kind}; "
                            f"expected {DETECTIONS}")
    source = graph.nodes[ref.name]
    if source.role not in PREDICTION_SOURCES:
        raise WorkflowError(f"{node.where} field predictions: edgewatch crops and filters the predictions of "
                            f"object detection, vlm_as_detector and detections_filter steps; {ref.text} comes "
                            f"from a {source.step.type} step")
    return ref.name


def check_output(graph: Graph, output: JsonField, index: int) -> None:
    where = f"outputs[{index}] ({output.name!r})"
    ref = parse_selector(output.selector, where)
    if ref.source == "inputs":
        if ref.name not in graph.parameters:
            what = "the image input; image outputs are not supported" if ref.name == graph.image \
                else "no declared input"
            raise WorkflowError(f"{where}: {ref.text} is {what}")
        return
    if ref.name not in graph.nodes:
        known = ", ".join(graph.nodes) or "none"
        raise WorkflowError(f"{where}: {ref.text} names no step (steps: {known})")
    if ref.output != "*":
        output_kind(graph, ref, where)
