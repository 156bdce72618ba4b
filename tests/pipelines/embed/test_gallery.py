"""The match step: detections' embeddings against a gallery folder, threshold, best match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv
from pydantic import ValidationError

from pipelines.embed.gallery import Gallery, GalleryOptions, best_match, match_detections
from pipelines.models import load_model
from pipelines.stages import Pipeline, PipelineSpec, match_key
from tests.fixtures.embed_models import count_runs, image_encoder, solid

RED, GREEN, BLUE = (0, 0, 230), (0, 200, 0), (230, 0, 0)


@pytest.fixture
def embedder(tmp_path: Path) -> Any:
    return load_model(
        {"type": "embed", "path": str(image_encoder(tmp_path / "enc.onnx")), "scale": 1 / 255, "mean": [0.5, 0.5, 0.5]}
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    refs = tmp_path / "refs"
    refs.mkdir()
    cv2.imwrite(str(refs / "red.png"), solid(RED))
    cv2.imwrite(str(refs / "green.jpg"), solid(GREEN))
    (refs / "readme.txt").write_text("not an image")
    return refs


def detections_with(embedder: Any, crops: list[np.ndarray | None]) -> sv.Detections:
    n = len(crops)
    dets = sv.Detections(xyxy=np.tile([0.0, 0.0, 10.0, 10.0], (n, 1)), class_id=np.zeros(n, dtype=int))
    column = np.full(n, None, dtype=object)
    for i, crop in enumerate(crops):
        if crop is not None:
            column[i] = embedder.embed([crop])[0]
    dets.data["emb"] = column
    return dets


def test_matches_above_threshold_only(embedder: Any, folder: Path) -> None:
    gallery = Gallery(GalleryOptions(folder=folder, embedding="emb", threshold=0.99), embedder)
    assert len(gallery) == 2
    dets = detections_with(embedder, [solid((0, 0, 220)), solid(BLUE), None, solid((0, 190, 10))])
    match_detections(dets, gallery)
    found = dets.data["match"]
    assert found[0]["name"] == "red" and found[0]["image"].endswith("red.png") and found[0]["similarity"] > 0.99
    assert found[1] is None and found[2] is None
    assert found[3]["name"] == "green"
    best = best_match(dets)
    assert best is not None and best["detection"] in (0, 3)
    assert best["similarity"] == max(found[0]["similarity"], found[3]["similarity"])


def test_no_embeddings_and_no_detections(embedder: Any, folder: Path) -> None:
    gallery = Gallery(GalleryOptions(folder=folder, embedding="emb", name="who"), embedder)
    plain = sv.Detections(xyxy=np.zeros((2, 4)))
    assert list(match_detections(plain, gallery).data["who"]) == [None, None]
    assert best_match(plain, "who") is None
    empty = sv.Detections.empty()
    assert len(match_detections(empty, gallery).data["who"]) == 0
    assert best_match(sv.Detections.empty()) is None


def test_embedding_size_mismatch_names_the_gallery(embedder: Any, folder: Path) -> None:
    gallery = Gallery(GalleryOptions(folder=folder, embedding="emb"), embedder)
    dets = sv.Detections(xyxy=np.zeros((1, 4)))
    column = np.empty(1, dtype=object)
    column[0] = np.ones(7, dtype=np.float32)
    dets.data["emb"] = column
    with pytest.raises(ValueError, match=r"refs.*7 values.*4"):
        match_detections(dets, gallery)


def test_reload_embeds_only_new_files_through_the_cache(embedder: Any, folder: Path, tmp_path: Path) -> None:
    options = GalleryOptions(folder=folder, embedding="emb", cache_dir=tmp_path / "cache")
    Gallery(options, embedder)
    calls = count_runs(embedder)
    gallery = Gallery(options, embedder)
    assert calls == [] and len(gallery) == 2
    cv2.imwrite(str(folder / "blue.png"), solid(BLUE))
    assert gallery.reload() == 1 and len(gallery) == 3


def test_empty_gallery_matches_nothing(embedder: Any, tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    gallery = Gallery(GalleryOptions(folder=tmp_path / "none", embedding="emb", threshold=-1.0), embedder)
    dets = match_detections(detections_with(embedder, [solid(RED)]), gallery)
    assert list(dets.data["match"]) == [None]


@pytest.mark.parametrize("field", ["threshold", "extensions", "extra"])
def test_options_are_validated(field: str, tmp_path: Path) -> None:
    bad: dict[str, Any] = {"threshold": 1.5, "extensions": [], "extra": 1}
    with pytest.raises(ValueError, match=field):
        GalleryOptions.model_validate({"folder": str(tmp_path), "embedding": "emb", field: bad[field]})


def test_reid_gallery_finds_the_reference_people_in_a_later_frame(
    models_dir: Path, media_dir: Path, tmp_path: Path
) -> None:
    capture = cv2.VideoCapture(str(media_dir / "london_street_TestV4.mp4"))
    frames = [capture.read()[1] for _ in range(9)]
    capture.release()
    detector = load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")}, name="det")
    reid = load_model({"type": "embed", "path": str(models_dir / "person_reid_0288.onnx")}, name="reid")
    first = detector.detect([frames[0]])[0]
    first = first[(first.class_id == 0) & (first.confidence > 0.5)]
    refs = tmp_path / "wanted"
    refs.mkdir()
    for k in (0, 1):  # the two people nearest the camera, as "reference photos"
        cv2.imwrite(str(refs / f"person{k}.png"), sv.crop_image(frames[0], first.xyxy[k]))
    stage = {"name": "reid", "model": "reid", "on": ["person"], "match": {"folder": str(refs), "threshold": 0.9}}
    spec = PipelineSpec.model_validate({"name": "watch", "detector": "det", "stages": [stage]})
    later = Pipeline(spec, {"det": detector, "reid": reid}).run([frames[8]]).detections[0]
    by_stage = list(later.data[match_key("reid")])
    gallery = Gallery(GalleryOptions(folder=refs, embedding="reid", threshold=0.9), reid)
    match_detections(later, gallery)
    assert by_stage == list(later.data["match"])  # the stage's match step is the standalone one
    matched = {i: m["name"] for i, m in enumerate(later.data["match"]) if m is not None}
    assert sorted(matched.values()) == ["person0", "person1"]
    for i, name in matched.items():  # each matched box is where that person stood 8 frames before
        k = int(name[-1])
        assert sv.box_iou_batch(later.xyxy[i : i + 1], first.xyxy[k : k + 1])[0, 0] > 0.5
    best = best_match(later)
    assert best is not None and best["similarity"] > 0.95


class FixedBoxes:
    """A detector (the Pipeline's detect contract) that finds the same labelled boxes in every picture."""

    kind = "detect"

    def __init__(self, boxes: list[list[float]], names: list[str]) -> None:
        self.boxes, self.names = np.array(boxes, dtype=np.float32), names

    def detect(self, images: list[np.ndarray]) -> list[sv.Detections]:
        n = len(self.names)
        return [
            sv.Detections(xyxy=self.boxes.copy(), confidence=np.full(n, 0.9), class_id=np.arange(n),
                          data={"class_name": np.array(self.names)})
            for _ in images
        ]


def scene() -> np.ndarray:
    """Grey picture with a red, a blue and a green patch at the FixedBoxes below."""
    image = np.full((100, 300, 3), 128, dtype=np.uint8)
    image[10:90, 10:90], image[10:90, 110:190], image[10:90, 210:290] = RED, BLUE, GREEN
    return image


BOXES = [[10, 10, 90, 90], [110, 10, 190, 90], [210, 10, 290, 90]]


def watch(embedder: Any, folder: Path, **stage: Any) -> Pipeline:
    look = {"name": "look", "model": "emb", "match": {"folder": str(folder), "threshold": 0.99}, **stage}
    spec = {"name": "w", "detector": "det", "stages": [look]}
    return Pipeline(spec, {"det": FixedBoxes(BOXES, ["person", "person", "dog"]), "emb": embedder})


def test_stage_match_keeps_the_best_reference_per_detection(embedder: Any, folder: Path) -> None:
    pipeline = watch(embedder, folder, on=["person"])
    assert len(pipeline.galleries["w/look"]) == 2  # loaded once, at construction
    calls = count_runs(embedder)
    [dets] = pipeline.run([scene()]).detections
    assert calls == [2]  # the two person crops; the gallery is not embedded again
    red, blue, dog = dets.data[match_key("look")]
    assert red is not None and red["name"] == "red" and red["similarity"] > 0.99
    assert blue is None and dog is None  # below the threshold; not a person
    assert dets.data["look"][2] is None
    assert dets.metadata["embed"] == {"look": {"publish_embedding": False, "match": "look.match"}}


def test_stage_without_match_has_no_match_column(embedder: Any) -> None:
    spec = {"name": "w", "detector": "det", "stages": [{"name": "look", "model": "emb", "publish_embedding": True}]}
    [dets] = Pipeline(spec, {"det": FixedBoxes(BOXES, ["a", "b", "c"]), "emb": embedder}).run([scene()]).detections
    assert match_key("look") not in dets.data
    assert dets.metadata["embed"] == {"look": {"publish_embedding": True, "match": None}}


def test_stage_match_errors_name_the_stage(embedder: Any, folder: Path, tmp_path: Path) -> None:
    detector = FixedBoxes(BOXES, ["a", "b", "c"])
    on_detector = {"name": "look", "model": "det2", "match": {"folder": str(folder)}}
    with pytest.raises(ValueError, match=r"stage w/look: match: needs an embed model; 'det2' has kind 'detect'"):
        Pipeline({"name": "w", "detector": "det", "stages": [on_detector]}, {"det": detector, "det2": detector})
    with pytest.raises(FileNotFoundError, match="absent"):
        watch(embedder, tmp_path / "absent")
    for extra in ({"embedding": "other"}, {"name": "m"}):
        stage = {"name": "look", "model": "emb", "match": {"folder": str(folder), **extra}}
        with pytest.raises(ValidationError, match="set by the stage"):
            PipelineSpec.model_validate({"detector": "det", "stages": [stage]})


def config_with_match(tmp_path: Path, match: str, model: str = "emb") -> Path:
    image_encoder(tmp_path / "enc.onnx")
    path = tmp_path / "edgewatch.yaml"
    path.write_text(
        "pipeline: {detector: det, stages: [{name: look, model: " + model + ", match: " + match + "}]}\n"
        "models: {det: {type: yolox, path: enc.onnx}, emb: {type: embed, path: enc.onnx},\n"
        "         cls: {type: classify, path: enc.onnx, labels: [a]}}\n"
        "sources: [{id: cam, type: file, path: clip.mp4}]\n"
    )
    return path


def test_config_gallery_folder_is_relative_to_the_config_file(tmp_path: Path, folder: Path) -> None:
    from daemon.config import load_config

    config = load_config(config_with_match(tmp_path, "{folder: refs, threshold: 0.8}"))
    match = config.pipeline.stages[0].match
    assert match.folder == folder and match.threshold == 0.8


@pytest.mark.parametrize(
    ("match", "model", "message"),
    [
        ("{folder: nowhere}", "emb", "pipeline.stages[0].match.folder (line 1): gallery folder"),
        ("{folder: refs}", "cls", "pipeline.stages[0].match (line 1): match: needs an embed model; 'cls' is"),
        ("{folder: refs, embedding: x}", "emb", "set by the stage"),
    ],
)
def test_config_gallery_errors(tmp_path: Path, folder: Path, match: str, model: str, message: str) -> None:
    from daemon.config import ConfigError, load_config

    with pytest.raises(ConfigError) as info:
        load_config(config_with_match(tmp_path, match, model))
    assert message in str(info.value)
