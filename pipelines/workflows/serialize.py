"""A compiled workflow's run as Roboflow's server returns it: one dict per image, keyed by output name."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
import supervision as sv

from pipelines.crops import CropOptions, crop_detection
from pipelines.labels import class_names
from pipelines.models import Image
from pipelines.stages import PipelineRun
from pipelines.workflows.adapters import VLM_KEY
from pipelines.workflows.graph import Graph, Node
from pipelines.workflows.spec import JsonField

ID_KEY = "workflow.detection_id"  # data key of the detection ids; "." never occurs in a stage name
PLAIN_CROP = CropOptions()


@dataclass(frozen=True)
class Layout:
    """What serialisation needs of a compiled workflow: the graph, the first-stage step, stages' timing keys."""

    graph: Graph
    root: str | None  # the step that is the pipeline's detector; None: the whole-picture stand-in
    paths: Mapping[str, str]  # stage name -> its PipelineRun.timings_ms key


@dataclass(frozen=True)
class Picture:
    """A picture a step ran on: an input image, or the crop of row `row` of `holder` (boxes in image pixels).

    holder.data[stage][row] holds the results of the steps that ran on the picture (holder is None for an
    input image whose only step is the pipeline's detector). xyxy: the picture in input-image pixels.
    """

    image: int
    key: tuple[int, ...]
    id: str
    xyxy: tuple[int, int, int, int]
    holder: sv.Detections | None = None
    row: int = 0
    parent: Picture | None = None

    @property
    def size(self) -> dict[str, int]:
        return {"width": self.xyxy[2] - self.xyxy[0], "height": self.xyxy[3] - self.xyxy[1]}


def serialize(layout: Layout, run: PipelineRun, images: Sequence[Image],
              image_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Each image's declared outputs.

    Detections are Roboflow's prediction dicts (centre x, y, width, height, confidence, class_id, class,
    detection_id, parent_id) under {"image": {width, height}, "predictions": [...]}. A step that runs on
    crops gives a list with one value per crop (nested one level per crop step). With coordinates_system
    "parent" (the default) boxes are in input-image pixels and parent_id is the image's id; with "own" they
    are in the pixels of the picture the step ran on, parent_id is the cropped detection's id, with
    parent_origin, root_parent_id and root_parent_origin. An OCR step's `predictions` is the read picture's
    box, class "text" (the recogniser reads one line and finds no word boxes).
    """
    if image_ids is None:
        name = layout.graph.image
        image_ids = [name] if len(images) == 1 else [f"{name}.[{i}]" for i in range(len(images))]
    if len(image_ids) != len(images) or len(run.detections) != len(images):
        raise ValueError(f"{len(images)} images, {len(image_ids)} ids and {len(run.detections)} results differ")
    writer = Writer(layout, run, images, image_ids)
    return [{output.name: writer.output(output, i) for output in layout.graph.outputs} for i in range(len(images))]


def leaves(tree: Any, fn: Callable[[Picture], Any]) -> Any:
    """fn applied to every picture of a nested list of pictures, keeping the nesting."""
    return [leaves(item, fn) for item in tree] if isinstance(tree, list) else fn(tree)


class Writer:
    """Serialises one run; caches each step's outputs per picture so ids agree between outputs."""

    def __init__(self, layout: Layout, run: PipelineRun, images: Sequence[Image], image_ids: Sequence[str]) -> None:
        self.layout = layout
        self.graph = layout.graph
        self.run = run
        self.images = images
        self.ids = list(image_ids)
        self.cache: dict[tuple[str, tuple[int, ...], bool], dict[str, Any]] = {}

    def output(self, output: JsonField, image: int) -> Any:
        selector = output.selector
        name, _, rest = selector.removeprefix("$steps.").partition(".")
        if selector.startswith("$inputs."):
            return self.graph.parameters[selector.removeprefix("$inputs.")]
        node = self.graph.nodes[name]
        scope = node.name if node.role == "crop" else node.scope
        own = output.coordinates_system == "own"

        def value(picture: Picture) -> Any:
            values = self.values(node, picture, own)
            return values if rest == "*" else values[rest]

        return leaves(self.pictures(scope, image), value)

    # -- pictures -------------------------------------------------------------------------------------------
    def pictures(self, scope: str | None, image: int) -> Any:
        """The input image (scope None), or a nested list of the crops of a dynamic_crop step."""
        if scope is None:
            h, w = self.images[image].shape[:2]
            holder = None if self.layout.root is not None else self.run.detections[image]
            return Picture(image, (image,), self.ids[image], (0, 0, int(w), int(h)), holder)
        crop = self.graph.nodes[scope]
        assert crop.source is not None  # every crop step reads predictions (checked by the graph)
        origin, rule = self.graph.origin(crop.source)

        def crops(picture: Picture) -> list[Picture]:
            detections = self.detections(origin, picture)
            if detections is None:
                return []
            ids = self.detection_ids(detections)
            return [Picture(picture.image, (*picture.key, int(j)), str(ids[j]), crop_box(detections, int(j)),
                            detections, int(j), picture) for j in np.flatnonzero(rule.mask(detections))]

        return leaves(self.pictures(crop.scope, image), crops)

    def result(self, node: Node, picture: Picture) -> Any:
        """What a model step gave on a picture (None: it did not run there)."""
        if node.name == self.layout.root:
            return self.run.detections[picture.image]
        assert picture.holder is not None  # only the first-stage step runs on an input image without a holder
        return picture.holder.data[node.stage][picture.row]

    def detections(self, node: Node, picture: Picture) -> sv.Detections | None:
        found = self.result(node, picture)
        return found if isinstance(found, sv.Detections) else None

    def detection_ids(self, detections: sv.Detections) -> npt.NDArray[Any]:
        if ID_KEY not in detections.data:
            detections.data[ID_KEY] = np.array([str(uuid.uuid4()) for _ in range(len(detections))], dtype=object)
        return np.asarray(detections.data[ID_KEY])

    # -- step outputs -----------------------------------------------------------------------------------------
    def values(self, node: Node, picture: Picture, own: bool) -> dict[str, Any]:
        key = (node.name, picture.key, own)
        if key not in self.cache:
            self.cache[key] = self.compute(node, picture, own)
        return self.cache[key]

    def compute(self, node: Node, picture: Picture, own: bool) -> dict[str, Any]:
        step, role = node.step, node.role
        model_id = {"model_id": step.model_dump()["model_id"]} if "model_id" in node.block.outputs else {}
        if role in ("detect", "vlm", "filter"):
            origin, rule = self.graph.origin(node.name)
            found = self.detections(origin, picture)
            if found is not None:
                self.detection_ids(found)  # before the mask copies it: crops of `found` use the same ids
            kept = None if found is None else rows(found, rule.mask(found))
            predictions = None if kept is None else self.boxes(kept, picture, own)
            if role == "filter":
                return {"predictions": predictions}
            if role == "vlm":
                meta = (found.metadata.get(VLM_KEY) if found is not None else None) or {}
                failed = bool(meta.get("error_status", True))
                return {"error_status": failed, "predictions": None if failed else predictions,
                        "inference_id": meta.get("inference_id") or str(uuid.uuid4())}
            return {"inference_id": str(uuid.uuid4()), "predictions": predictions, **model_id}
        if role == "classify":
            found = self.result(node, picture)
            return {"predictions": None if found is None else self.classification(node, found, picture),
                    "inference_id": str(uuid.uuid4()), **model_id}
        if role == "ocr":
            return self.ocr(self.result(node, picture), picture, own)
        return self.crop(picture, own)

    def boxes(self, detections: sv.Detections, picture: Picture, own: bool) -> dict[str, Any]:
        """Roboflow's serialised detections found on `picture` (own: in its pixels and lineage)."""
        ids = self.detection_ids(detections)
        names = class_names(detections).tolist()
        dx, dy = (picture.xyxy[0], picture.xyxy[1]) if own else (0, 0)
        lineage = self.lineage(picture) if own and picture.parent is not None else {}
        keypoints = detections.data.get("keypoints")
        out = []
        for j in range(len(detections)):
            x1, y1, x2, y2 = (float(v) for v in detections.xyxy[j])
            x1, y1, x2, y2 = x1 - dx, y1 - dy, x2 - dx, y2 - dy
            item: dict[str, Any] = {
                "width": x2 - x1, "height": y2 - y1, "x": x1 + (x2 - x1) / 2, "y": y1 + (y2 - y1) / 2,
                "confidence": 1.0 if detections.confidence is None else float(detections.confidence[j]),
                "class_id": 0 if detections.class_id is None else int(detections.class_id[j]),
            }
            if detections.tracker_id is not None:
                item["tracker_id"] = int(detections.tracker_id[j])
            item.update({"class": names[j], "detection_id": str(ids[j]),
                         "parent_id": picture.id if own else self.ids[picture.image], **lineage})
            if keypoints is not None:
                item["keypoints"] = [{"x": float(px) - dx, "y": float(py) - dy, "confidence": 1.0,
                                      "class_id": k, "class": str(k)}
                                     for k, (px, py) in enumerate(np.asarray(keypoints[j]).reshape(-1, 2))]
            out.append(item)
        size = picture.size if own else self.root_size(picture.image)
        return {"image": size, "predictions": out}

    def root_size(self, image: int) -> dict[str, int]:
        h, w = self.images[image].shape[:2]
        return {"width": int(w), "height": int(h)}

    def lineage(self, picture: Picture) -> dict[str, Any]:
        """parent_origin, root_parent_id and root_parent_origin of what was found on a crop."""
        parent = picture.parent
        assert parent is not None  # only crops have a lineage
        x, y = picture.xyxy[0], picture.xyxy[1]
        return {
            "parent_origin": {"offset_x": x - parent.xyxy[0], "offset_y": y - parent.xyxy[1], **parent.size},
            "root_parent_id": self.ids[picture.image],
            "root_parent_origin": {"offset_x": x, "offset_y": y, **self.root_size(picture.image)},
        }

    def classification(self, node: Node, result: Mapping[str, Any], picture: Picture) -> dict[str, Any]:
        """Roboflow's classification response: single-label (predictions best first, top) or multi-label."""
        entries = [{"class": str(t["class"]), "class_id": int(t["class_id"]), "confidence": float(t["confidence"])}
                   for t in result.get("top") or [result]]
        head = {"inference_id": str(uuid.uuid4()),
                "time": self.run.timings_ms.get(self.layout.paths.get(node.stage, ""), 0.0) / 1000.0,
                "image": picture.size}
        tail = {"prediction_type": "classification", "parent_id": picture.id, "root_parent_id": self.ids[picture.image]}
        if "classes" not in result:
            return {**head, "predictions": entries, "top": str(result["class"]),
                    "confidence": float(result["confidence"]), **tail}
        return {**head, "predictions": {e["class"]: {"confidence": e["confidence"], "class_id": e["class_id"]}
                                        for e in entries},
                "predicted_classes": [str(c["class"]) for c in result["classes"]], **tail}

    def ocr(self, reading: Mapping[str, Any] | None, picture: Picture, own: bool) -> dict[str, Any]:
        text = "" if reading is None else str(reading.get("text") or "")
        box = sv.Detections.empty()
        if text and reading is not None:
            box = sv.Detections(xyxy=np.array([picture.xyxy], dtype=np.float32),
                                confidence=np.array([float(reading.get("confidence") or 0.0)], dtype=np.float32),
                                class_id=np.zeros(1, dtype=int), data={"class_name": np.array(["text"])})
        return {"result": text, "predictions": self.boxes(box, picture, own), "parent_id": picture.id,
                "root_parent_id": self.ids[picture.image], "prediction_type": "ocr"}

    def crop(self, picture: Picture, own: bool) -> dict[str, Any]:
        """A dynamic_crop step's outputs for one crop: the picture (base64 JPEG) and the detection it shows."""
        assert picture.holder is not None and picture.parent is not None  # a crop picture
        pixels = crop_detection(self.images[picture.image], picture.holder, picture.row, 0, PLAIN_CROP).image
        ok, encoded = cv2.imencode(".jpg", pixels)
        if not ok:
            raise ValueError(f"cannot encode crop {picture.id} as JPEG")
        lineage = self.lineage(picture)
        image = {"type": "base64", "value": base64.b64encode(encoded.tobytes()).decode("ascii"),
                 "video_metadata": None, "parent_id": picture.id, "parent_origin": lineage["parent_origin"],
                 "root_parent_id": lineage["root_parent_id"], "root_parent_origin": lineage["root_parent_origin"]}
        return {"crops": image, "predictions": self.boxes(rows(picture.holder, [picture.row]), picture, own)}


def crop_box(detections: sv.Detections, row: int) -> tuple[int, int, int, int]:
    """The crop of a detection in input-image pixels, as pipelines.crops.crop_box cuts it without padding."""
    x1, y1, x2, y2 = (int(v) for v in np.round(np.asarray(detections.xyxy[row], dtype=np.float64)))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def rows(detections: sv.Detections, index: Any) -> sv.Detections:
    """The detections at a mask or a list of rows (supervision types its indexing loosely)."""
    return cast(sv.Detections, detections[index])
