"""The Workflow routes over real HTTP: invalid specifications as Roboflow's 4xx JSON, stored specs, batches, jobs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.api_server import Running, image_ref, serve
from tests.pipelines.workflows.specs import VLM, class_filter, classify, crop, detect, spec, statement

PHOTO = "three_buses.jpg"
BOXES = [{"type": "JsonField", "name": "boxes", "selector": "$steps.det.predictions"}]
TWO_STAGE = spec([detect(model_id="det/1"), crop(), classify(model_id="cls/1")],
                 [*BOXES, {"type": "JsonField", "name": "classes", "selector": "$steps.cls.predictions"}])


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("workflows")
    (folder / "site").mkdir()
    (folder / "site" / "boxes.json").write_text(json.dumps(spec([detect(model_id="det")], BOXES)))
    (folder / "flat.json").write_text(json.dumps({"specification": TWO_STAGE}))  # saved with its request wrapper
    (folder / "broken.json").write_text("{not json")
    return folder


@pytest.fixture(scope="module")
def api(models_dir: Path, stored: Path) -> Iterator[Running]:
    running = serve(models_dir, batch=2, workflows_dir=str(stored), max_batch=4)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def photo(media_dir: Path) -> dict[str, str]:
    return image_ref(media_dir / PHOTO)


# fmt: off
# name, specification, (step, field) named in blocks_errors (None: the error is not about one step), message part
INVALID: list[tuple[str, Any, tuple[str, str | None] | None, str]] = [
    ("unknown-block", spec([detect(model_id="det"), {"type": "roboflow_core/line_counter@v2", "name": "count"}], []),
     ("count", None), "block type 'roboflow_core/line_counter@v2' is not supported; supported: "),
    ("byte-tracker", spec([detect(model_id="det"), {"type": "roboflow_core/byte_tracker@v3", "name": "track"}], []),
     ("track", None), "tracking runs in the daemon"),
    ("selector-to-missing-step", spec([detect(model_id="det"), crop(predictions="$steps.nope.predictions")]),
     ("crop", "predictions"), "$steps.nope.predictions names no step (steps: det, crop)"),
    ("cycle", spec([class_filter("a", "$steps.b.predictions", statement("confidence", "(Number) >=", 0.5)),
                    class_filter("b", "$steps.a.predictions", statement("confidence", "(Number) >=", 0.5))]),
     None, "steps form a cycle: a -> b -> a"),
    ("classification-fed-to-crop", spec([classify(images="$inputs.image", model_id="cls/1"),
                                         crop(predictions="$steps.cls.predictions")]),
     ("crop", "predictions"), "kind mismatch: $steps.cls.predictions is classification_prediction"),
    ("model-not-served", spec([detect(model_id="vehicles/3")]),
     ("det", "model_id"), "model 'vehicles/3' is not in the model registry (models: "),
    ("model-of-wrong-kind", spec([classify(images="$inputs.image", model_id="det/1")]),
     ("cls", "model_id"), "model 'det/1' has kind 'detect'; this block needs a model of kind 'classify'"),
    ("value-out-of-range", spec([detect(model_id="det", confidence=1.5)]),
     ("det", "confidence"), "confidence: Input should be less than or equal to 1"),
    ("class-the-model-lacks", spec([detect(model_id="det", class_filter=["unicorn"])]),
     ("det", None), "unicorn"),
    ("vlm-output-literal", spec([{"type": VLM, "name": "vlm", "image": "$inputs.image", "vlm_output": "text",
                                  "classes": ["a"], "model_type": "openai", "task_type": "object-detection"}]),
     ("vlm", "vlm_output"), "expected a $inputs parameter holding the answer"),
    ("output-of-missing-step", spec([detect(model_id="det")], [{"type": "JsonField", "name": "x",
                                                                "selector": "$steps.nope.predictions"}]),
     None, "outputs[0] ('x'): $steps.nope.predictions names no step"),
    ("missing-sections", {"version": "1.0"}, None, "specification: missing inputs, steps, outputs"),
]
# fmt: on


@pytest.mark.parametrize(("case", "specification", "block", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_an_invalid_specification_is_a_400_in_roboflows_shape(api: Running, photo: dict[str, str], case: str,
                                                              specification: Any,
                                                              block: tuple[str, str | None] | None,
                                                              message: str) -> None:
    for route in ("/workflows/run", "/infer/workflows"):
        status, body = api.post(route, {"specification": specification, "inputs": {"image": photo}})
        assert status == 400, body
        assert message in body["message"]
        assert body["error_type"] == "WorkflowDefinitionError" and body["inner_error_message"] == body["message"]
        assert body["context"].startswith("workflow_compilation")
        if block is None:
            assert "blocks_errors" not in body
        else:
            (error,) = body["blocks_errors"]
            assert (error["block_id"], error["property_name"]) == block
            assert error["property_details"] == body["message"]


# fmt: off
BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("no-specification", {"inputs": {}}, 422, "specification: expected the workflow specification"),
    ("no-image", {"specification": TWO_STAGE, "inputs": {}}, 400, "image input 'image' was not given"),
    ("inputs-not-an-object", {"specification": TWO_STAGE, "inputs": []}, 400, "inputs: expected an object"),
    ("excluded-not-a-list", {"specification": TWO_STAGE, "inputs": {"image": "PHOTO"}, "excluded_fields": "boxes"},
     400, "excluded_fields: expected a list of output names"),
    ("not-an-image", {"specification": TWO_STAGE, "inputs": {"image": {"type": "base64", "value": "bm90IGFuIGltYWdl"}}},
     400, "image 0: data starting with b'not an i' is not an accepted image format"),
    ("over-max-batch", {"specification": TWO_STAGE, "inputs": {"image": ["PHOTO"] * 5}}, 413, "api.max_batch=4"),
]
# fmt: on


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_a_request_that_does_not_fit_its_workflow_is_a_4xx(api: Running, photo: dict[str, str], case: str,
                                                           body: dict[str, Any], status: int, message: str) -> None:
    body = json.loads(json.dumps(body).replace('"PHOTO"', json.dumps(photo)))
    got, answer = api.post("/workflows/run", body)
    assert got == status, answer
    assert message in answer["message"]
    if status == 400 and case != "not-an-image":  # an image error is the API's, not a workflow input error
        assert answer["error_type"] == "RuntimeInputError"


def test_stored_specifications_by_workspace_and_id(api: Running, photo: dict[str, str]) -> None:
    for route in ("/site/workflows/boxes", "/infer/workflows/site/boxes"):
        status, body = api.post(route, {"inputs": {"image": photo}})
        assert status == 200, body
        assert body["outputs"][0].keys() == {"boxes"} and body["outputs"][0]["boxes"]["predictions"]
    status, body = api.post("/any-workspace/workflows/flat", {"inputs": {"image": photo}})  # {id}.json at the top
    assert status == 200 and body["outputs"][0].keys() == {"boxes", "classes"}
    status, body = api.post("/site/workflows/missing", {"inputs": {"image": photo}})
    assert status == 404 and body["message"] == ("workflow site/missing not found: no site/missing.json or "
                                                 "missing.json in api.workflows_dir")
    status, body = api.post("/site/workflows/.hidden", {"inputs": {"image": photo}})
    assert status == 400 and "'.hidden'" in body["message"]
    status, body = api.post("/site/workflows/broken", {"inputs": {"image": photo}})
    assert status == 400 and "broken.json: not JSON" in body["message"]


def test_excluded_fields_and_image_ids_of_a_batch(api: Running, photo: dict[str, str]) -> None:
    status, body = api.post("/workflows/run", {"specification": TWO_STAGE, "inputs": {"image": [photo] * 3},
                                               "excluded_fields": ["classes"]})
    assert status == 200 and body["profiler_trace"] == []
    outputs = body["outputs"]
    assert [o.keys() for o in outputs] == [{"boxes"}] * 3
    for i, output in enumerate(outputs):
        assert {p["parent_id"] for p in output["boxes"]["predictions"]} == {f"image.[{i}]"}
    assert [len(o["boxes"]["predictions"]) for o in outputs] == [len(outputs[0]["boxes"]["predictions"])] * 3


def test_images_go_to_the_worker_in_jobs_of_at_most_one_batch(api: Running, photo: dict[str, str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    worker = api.worker
    submit = worker.submit
    jobs: list[Callable[[], Any]] = []

    def counted(fn: Callable[[], Any]) -> Future[Any]:
        jobs.append(fn)
        return submit(fn)

    monkeypatch.setattr(worker, "submit", counted)
    status, body = api.post("/workflows/run", {"specification": TWO_STAGE, "inputs": {"image": [photo] * 3}})
    assert status == 200 and len(body["outputs"]) == 3
    assert len(jobs) == 2  # 3 images with a worker batch of 2: a job of 2, then one of 1, streams between them


def test_the_api_key_guards_the_workflow_routes(models_dir: Path, media_dir: Path) -> None:
    running = serve(models_dir, api_key="wf-key-0123")
    try:
        inputs = {"image": image_ref(media_dir / PHOTO)}
        body = {"specification": spec([detect(model_id="det")], BOXES), "inputs": inputs}
        assert running.post("/workflows/run", body)[0] == 401
        # first, as inference_sdk sends it: a body over 64 KiB is not read on until its key is seen
        assert running.post("/workflows/run", {"api_key": "wf-key-0123", **body})[0] == 200
        status, answer = running.post("/site/workflows/boxes", {"api_key": "wf-key-0123"})
        assert status == 404 and "set api.workflows_dir" in answer["message"]  # none configured
    finally:
        running.stop()
