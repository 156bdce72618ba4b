"""Drives edgewatch's inference API with Roboflow's unchanged `inference_sdk` client (run by the SDK's own venv).

Usage: python sdk_driver.py API_URL SCENARIO PARAMS_JSON; prints one JSON object (what the client returned)
on its last stdout line. This file imports nothing from edgewatch: it runs where inference-sdk is installed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import cv2
from inference_sdk import InferenceConfiguration, InferenceHTTPClient
from inference_sdk.http.errors import HTTPCallErrorError, HTTPClientError


def _ids(registered: Any) -> list[str]:
    return [m.model_id for m in registered.models]


def _error(call: Callable[[], Any]) -> dict[str, Any]:
    try:
        call()
    except HTTPCallErrorError as exc:
        return {"status": exc.status_code, "message": exc.api_message}
    except HTTPClientError as exc:  # refused by the client itself, before any request
        return {"status": None, "message": f"{type(exc).__name__}: {exc}"}
    return {"status": 200, "message": None}


def info(client: InferenceHTTPClient, p: dict[str, Any]) -> dict[str, Any]:
    server = client.get_server_info()
    return {"name": server.name, "version": server.version, "uuid": server.uuid}


def models(client: InferenceHTTPClient, p: dict[str, Any]) -> dict[str, Any]:
    model_id = p["model_id"]
    out: dict[str, Any] = {"initial": _ids(client.list_loaded_models())}
    loaded = client.load_model(model_id)
    out["after_load"] = _ids(loaded)
    out["description"] = next(m.to_dict() for m in loaded.models if m.model_id == model_id)
    out["listed"] = _ids(client.list_loaded_models())
    out["after_unload"] = _ids(client.unload_model(model_id))
    client.load_model(model_id)
    out["after_clear"] = _ids(client.unload_all_models())
    out["unknown_load"] = _error(lambda: client.load_model("no-such-model/9"))
    return out


def infer(client: InferenceHTTPClient, p: dict[str, Any]) -> dict[str, Any]:
    model_id = p["model_id"]
    out: dict[str, Any] = {"path": client.infer(p["path"], model_id=model_id)}
    out["array"] = client.infer(cv2.imread(p["path"]), model_id=model_id)
    client.configure(InferenceConfiguration(max_batch_size=2, max_concurrent_requests=2))
    out["list"] = client.infer(list(p["paths"]), model_id=model_id)
    client.configure(InferenceConfiguration())
    out["folder"] = {str(ref): pred for ref, _frame, pred in client.infer_on_stream(p["folder"], model_id=model_id)}
    out["video"] = [pred for _ref, _frame, pred in client.infer_on_stream(p["video"], model_id=model_id)]
    with client.use_configuration(InferenceConfiguration(confidence_threshold=0.8)):
        out["confident"] = client.infer(p["path"], model_id=model_id)
    out["after_configuration"] = client.infer(p["path"], model_id=model_id)
    drawn = InferenceConfiguration(visualize_predictions=True, output_visualisation_format="numpy")
    with client.use_configuration(drawn):
        out["visualization_shape"] = list(client.infer(p["path"], model_id=model_id)["visualization"].shape)
    return out


def classify(client: InferenceHTTPClient, p: dict[str, Any]) -> dict[str, Any]:
    return {"single": client.infer(p["path"], model_id=p["model_id"]),
            "batch": client.infer([p["path"], p["path"]], model_id=p["model_id"])}


def ocr(client: InferenceHTTPClient, p: dict[str, Any]) -> dict[str, Any]:
    return {
        "doctr": client.ocr_image(p["path"]),
        "boxes": client.ocr_image(p["path"], generate_bounding_boxes=True),
        "pp_ocr_line": client.ocr_image(p["line"], model="pp_ocr", version="none-small"),
    }


def clip(client: InferenceHTTPClient, p: dict[str, Any]) -> dict[str, Any]:
    return {
        "image": client.get_clip_image_embeddings(p["path"]),
        "images": client.get_clip_image_embeddings([p["path"], p["other"]]),
        "text": client.get_clip_text_embeddings(["a red car", "a bus"]),
        "compare_text": client.clip_compare(subject=p["path"], prompt=["a red car", "a bus"]),
        "compare_image": client.clip_compare(subject=p["path"], prompt=[p["path"], p["other"]], prompt_type="image"),
        "compare_dict": client.clip_compare(subject="a bus", subject_type="text",
                                            prompt={"car": "a car", "bus": "a bus"}),
    }


def errors(client: InferenceHTTPClient, p: dict[str, Any]) -> dict[str, Any]:
    model_id = p["model_id"]
    return {
        "unknown_model": _error(lambda: client.infer(p["path"], model_id="no-such-model/1")),
        "not_an_image": _error(lambda: client.infer(p["not_image"], model_id=model_id)),
        "ocr_model_via_infer": _error(lambda: client.infer(p["path"], model_id=p["reader"])),
        "still_serving": len(client.infer(p["path"], model_id=model_id)["predictions"]),
    }


def auth(client: InferenceHTTPClient, p: dict[str, Any]) -> dict[str, Any]:
    url = p["api_url"]
    both = InferenceConfiguration(api_key_transport="both")
    good = InferenceHTTPClient(api_url=url, api_key=p["key"]).configure(both)
    header_only = InferenceHTTPClient(api_url=url, api_key=p["key"]).configure(
        InferenceConfiguration(api_key_transport="header"))
    legacy = InferenceHTTPClient(api_url=url, api_key=p["key"]).configure(
        InferenceConfiguration(api_key_transport="legacy"))
    wrong = InferenceHTTPClient(api_url=url, api_key="not-the-key").configure(both)
    return {
        "info_without_key": client.get_server_info().name,
        "no_key": _error(lambda: client.list_loaded_models()),
        "wrong_key": _error(lambda: wrong.infer(p["path"], model_id=p["model_id"])),
        "good_key": len(good.infer(p["path"], model_id=p["model_id"])["predictions"]),
        "header_only": len(header_only.infer(p["path"], model_id=p["model_id"])["predictions"]),
        "legacy": len(legacy.infer(p["path"], model_id=p["model_id"])["predictions"]),
        "unload_with_header": _ids(good.unload_model(p["model_id"])),
    }


def load(client: InferenceHTTPClient, p: dict[str, Any]) -> dict[str, Any]:
    """infer() in a loop from start_at (epoch seconds) for duration_s; every call's latency and any error."""
    time.sleep(max(0.0, p["start_at"] - time.time()))
    deadline = p["start_at"] + p["duration_s"]
    latencies, errors, i = [], [], 0
    while time.time() < deadline:
        t0 = time.perf_counter()
        try:
            client.infer(p["paths"][i % len(p["paths"])], model_id=p["model_id"])
        except HTTPClientError as exc:
            errors.append(str(exc)[:300])
        latencies.append((time.perf_counter() - t0) * 1000.0)
        i += 1
    return {"latencies_ms": latencies, "errors": errors}


def workflow(client: InferenceHTTPClient, p: dict[str, Any]) -> dict[str, Any]:
    """run_workflow with an inline and a stored specification, one image and a batch, current and legacy routes."""
    spec, paths, stored = p["spec"], p["paths"], {"workspace_name": p["workspace"], "workflow_id": p["workflow_id"]}
    return {
        "batch": client.run_workflow(specification=spec, images={"image": paths}),
        "single": client.run_workflow(specification=spec, images={"image": paths[0]}),
        "excluded": client.run_workflow(specification=spec, images={"image": paths[0]}, excluded_fields=["classes"]),
        "legacy": client.infer_from_workflow(specification=spec, images={"image": paths[0]}),
        "stored": client.run_workflow(**stored, images={"image": paths}),
        "stored_legacy": client.infer_from_workflow(workspace_name=p["workspace"], workflow_name=p["workflow_id"],
                                                    images={"image": paths[0]}),
        "stored_missing": _error(lambda: client.run_workflow(workspace_name=p["workspace"], workflow_id="no-such",
                                                             images={"image": paths[0]})),
        "invalid": _error(lambda: client.run_workflow(specification=p["invalid"], images={"image": paths[0]})),
    }


def workflow_cases(client: InferenceHTTPClient, p: dict[str, Any]) -> dict[str, Any]:
    """run_workflow once per case (a specification and its parameters); an HTTP error is kept, not raised."""
    out: dict[str, Any] = {}
    for name, case in p["cases"].items():
        try:
            out[name] = client.run_workflow(specification=case["spec"], images={"image": p["path"]},
                                            parameters=case["parameters"])
        except HTTPCallErrorError as exc:
            out[name] = {"status": exc.status_code, "message": exc.api_message}
    return out


SCENARIOS: dict[str, Callable[[InferenceHTTPClient, dict[str, Any]], dict[str, Any]]] = {
    f.__name__: f for f in (info, models, infer, classify, ocr, clip, errors, auth, load, workflow, workflow_cases)
}


def main() -> int:
    api_url, scenario, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    client = InferenceHTTPClient(api_url=api_url, api_key=params.get("client_key"))
    result = SCENARIOS[scenario](client, {**params, "api_url": api_url})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
