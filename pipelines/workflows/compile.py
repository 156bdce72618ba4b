"""compile_workflow: a checked Roboflow Workflow as a PipelineSpec (detector -> per-crop stages) plus its bindings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from pipelines.build import build_pipeline
from pipelines.models import Image, LoadedModel, ModelOptions, UnknownTypeError
from pipelines.stages import Pipeline, PipelineRun, PipelineSpec, StageSpec
from pipelines.workflows.adapters import Binding, RegistryModel, VlmAnswer, WholeImage, WholeImageRoot, bind
from pipelines.workflows.adapters import registry_kind as kind_of_entry
from pipelines.workflows.blocks import Classification, ObjectDetection, VlmAsDetector
from pipelines.workflows.filters import FilterRule
from pipelines.workflows.graph import Graph, Node, build_graph
from pipelines.workflows.serialize import Layout, serialize
from pipelines.workflows.spec import WorkflowError, parse_outline

RegistryEntry: TypeAlias = LoadedModel | ModelOptions
MODEL_ROLES = ("detect", "classify", "ocr", "vlm")
ROLE_KIND = {"detect": "detect", "classify": "classify", "ocr": "ocr"}
OCR_TYPES = "type ocr or tesseract"


@dataclass(frozen=True)
class CompiledWorkflow:
    """A workflow as the project's own pipeline: `spec` runs with `models(loaded)`; `outputs` serialises a run.

    model_ids: the registry models the pipeline calls (load these, then `build` or `models`).
    """

    spec: PipelineSpec
    bindings: Mapping[str, Binding]  # pipeline model name (= stage name) -> what serves it
    layout: Layout

    @property
    def image_input(self) -> str:
        """The name of the specification's image input (Roboflow's parent_id of a lone image)."""
        return self.layout.graph.image

    @property
    def model_ids(self) -> list[str]:
        return sorted({b.model_id for b in self.bindings.values() if isinstance(b, RegistryModel)})

    def models(self, loaded: Mapping[str, LoadedModel]) -> dict[str, LoadedModel]:
        """The models the pipeline's stages call, by pipeline model name, built on the loaded registry models."""
        return {name: bind(binding, name, loaded) for name, binding in self.bindings.items()}

    def build(self, loaded: Mapping[str, LoadedModel], isolate_stage_errors: bool = False) -> Pipeline:
        """The plain pipeline (the workflow asks for no tracking) on the loaded registry models."""
        pipeline = build_pipeline(self.spec, self.models(loaded), isolate_stage_errors)
        assert isinstance(pipeline, Pipeline)  # spec.tracking is None: build_pipeline gives a plain Pipeline
        return pipeline

    def outputs(self, run: PipelineRun, images: Sequence[Image],
                image_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The declared outputs of each image, as Roboflow's server serialises them.

        image_ids: each input image's id (parent_id of its detections); default: the input's name for a
        single image, `name.[i]` for several (Roboflow's ids for a lone image and for a list).
        """
        return serialize(self.layout, run, images, image_ids)

    def run(self, images: Sequence[Image], loaded: Mapping[str, LoadedModel]) -> list[dict[str, Any]]:
        """Build, run and serialise in one call (one-off use; a server builds once and reuses the pipeline)."""
        return self.outputs(self.build(loaded).run(images), images)


def compile_workflow(
    spec: Any, models: Mapping[str, RegistryEntry], parameters: Mapping[str, Any] | None = None, *,
    name: str = "workflow", ocr_model: str | None = None,
) -> CompiledWorkflow:
    """Check `spec` (a Roboflow Workflow specification, parsed JSON) and compile it; WorkflowError if it cannot run.

    Steps on the input image become the first stage when they are exactly one detector (an object detection
    or vlm_as_detector step); otherwise a stand-in detector that finds the whole picture is the first stage
    and those steps run as its stages. A step on `$steps.<crop>.crops` becomes a stage of the detector whose
    predictions the crop cuts, with the class and confidence rules of the filters in between as its `on` and
    `min_parent_confidence`. Each stage is named after its step, and so is the model it calls.

    models: the registry, name (a step's model_id) -> loaded model or the ModelOptions it loads from; only
    kinds are read here, nothing is loaded. parameters: values of the spec's WorkflowParameter inputs
    (defaults apply to the others). ocr_model: the registry model that serves ocr_model steps (Roboflow's
    block names none); default: the registry's only OCR model.
    """
    graph = build_graph(parse_outline(spec, parameters))
    bindings = {node.stage: binding(node, models, ocr_model) for node in graph.nodes.values()
                if node.role in MODEL_ROLES}
    root = first_stage(graph)
    children = stage_children(graph, root)
    top = [stage_spec(child, rule, children) for child, rule in children.get(None, [])]
    if root is None:
        bindings[WholeImage.name] = WholeImageRoot()
    detector = WholeImage.name if root is None else graph.nodes[root].stage
    pipeline = PipelineSpec(name=name, detector=detector, stages=top)
    layout = Layout(graph, root, stage_paths(pipeline))
    return CompiledWorkflow(pipeline, bindings, layout)


def first_stage(graph: Graph) -> str | None:
    """The step that is the pipeline's detector, or None when the whole-picture stand-in is."""
    on_image = [n for n in graph.nodes.values() if n.role in MODEL_ROLES and n.scope is None]
    if len(on_image) == 1 and on_image[0].role in ("detect", "vlm"):
        return on_image[0].name
    return None


def stage_children(graph: Graph, root: str | None) -> dict[str | None, list[tuple[Node, FilterRule]]]:
    """For each detector step (None: the first stage), the model steps run on its detections, with their rule."""
    children: dict[str | None, list[tuple[Node, FilterRule]]] = {}
    for node in graph.nodes.values():
        if node.role not in MODEL_ROLES or node.name == root:
            continue
        if node.scope is None:
            parent, rule = None, FilterRule()
        else:
            crop = graph.nodes[node.scope]
            assert crop.source is not None  # a crop step's predictions were resolved by place()
            origin, rule = graph.origin(crop.source)
            parent = None if origin.name == root else origin.name
        children.setdefault(parent, []).append((node, rule))
    return children


def stage_spec(node: Node, rule: FilterRule, children: Mapping[str | None, list[tuple[Node, FilterRule]]]) -> StageSpec:
    # min_crop_size 1: every crop with a pixel in the picture runs, as dynamic_crop crops every box it can
    return StageSpec.model_validate({
        "name": node.stage, "model": node.stage, "min_crop_size": 1, **rule.stage_fields(),
        "stages": [stage_spec(child, r, children) for child, r in children.get(node.name, [])],
    })


def stage_paths(spec: PipelineSpec) -> dict[str, str]:
    """Stage name -> its path as PipelineRun.timings_ms keys it (pipeline/stage/child...)."""
    paths: dict[str, str] = {}

    def walk(stages: Sequence[StageSpec], path: str) -> None:
        for stage in stages:
            paths[stage.name] = f"{path}/{stage.name}"
            walk(stage.stages, paths[stage.name])

    walk(spec.stages, spec.name)
    return paths


def binding(node: Node, models: Mapping[str, RegistryEntry], ocr_model: str | None) -> Binding:
    """What serves a model step: a registry model (with a detector step's settings) or the VLM answer."""
    step = node.step
    if isinstance(step, VlmAsDetector):
        classes = None if step.classes is None else tuple(step.classes)
        return VlmAnswer(step.vlm_output, step.model_type, step.task_type, classes)
    if node.role == "ocr":
        model_id = ocr_model if ocr_model is not None else only_ocr_model(node, models)
    else:
        assert isinstance(step, ObjectDetection | Classification)  # the blocks of the detect and classify roles
        model_id = step.model_id
    kind = ROLE_KIND[node.role]
    where = f"{node.where} {'(ocr_model)' if node.role == 'ocr' else 'field model_id'}"
    if model_id not in models:
        known = ", ".join(sorted(models)) or "none"
        raise WorkflowError(f"{where}: model {model_id!r} is not in the model registry (models: {known})")
    try:
        found, tunable = kind_of_entry(models[model_id])
    except UnknownTypeError as exc:
        raise WorkflowError(f"{where}: model {model_id!r}: {exc}") from None
    if found != kind:
        raise WorkflowError(f"{where}: model {model_id!r} has kind {found!r}; "
                            f"this block needs a model of kind {kind!r}")
    if isinstance(step, ObjectDetection):
        if not tunable:
            raise WorkflowError(f"{where}: model {model_id!r} takes no per-call detection settings "
                                "(confidence, iou_threshold, ...); use an edgewatch detector type")
        return RegistryModel(model_id, "detect", step.post_overrides())
    return RegistryModel(model_id, kind)


def only_ocr_model(node: Node, models: Mapping[str, RegistryEntry]) -> str:
    """The registry's one OCR model (Roboflow's OCR block names no model)."""
    found = []
    for model_id, entry in models.items():
        try:
            if kind_of_entry(entry)[0] == "ocr":
                found.append(model_id)
        except UnknownTypeError:
            continue  # a model of an unknown type is no OCR model; it fails where a step names it
    if len(found) != 1:
        listed = ", ".join(sorted(found)) or "none"
        raise WorkflowError(f"{node.where}: OCR steps run on the registry's OCR model ({OCR_TYPES}); it has "
                            f"{len(found)} ({listed}){'; choose one with ocr_model' if found else ''}")
    return found[0]
