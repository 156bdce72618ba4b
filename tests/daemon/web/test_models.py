"""The API's model registry: model ids from the config, shared daemon models, files only inside model_dirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.config import ApiOptions
from daemon.web.models import ApiError, ModelRegistry, UnknownModelError, model_ids
from pipelines.models import ModelOptions, load_model, model_class


def options(spec: dict[str, Any]) -> ModelOptions:
    return model_class(spec["type"]).Options.model_validate(spec)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def model_options(models_dir: Path) -> dict[str, ModelOptions]:
    return {
        "vehicles": options({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")}),
        "colour": options({"type": "classify", "path": str(models_dir / "plate_color_cls_96.onnx"),
                           "labels": ["blue", "green", "yellow"]}),
    }


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({}, {"vehicles/1": "vehicles", "colour/1": "colour"}),
        ({"cars/3": "vehicles"}, {"cars/3": "vehicles"}),
    ],
)
def test_model_ids_come_from_the_config(
    model_options: dict[str, ModelOptions], mapping: dict[str, str], expected: dict[str, str]
) -> None:
    assert model_ids(ApiOptions(models=mapping), model_options) == expected


def test_model_ids_naming_an_unknown_model_are_a_config_error(model_options: dict[str, ModelOptions]) -> None:
    with pytest.raises(ValueError, match=r"cars/3.*nope.*defined: colour, vehicles"):
        model_ids(ApiOptions(models={"cars/3": "nope"}), model_options)


def test_loads_on_demand_and_unloads(model_options: dict[str, ModelOptions]) -> None:
    registry = ModelRegistry(ApiOptions(), {}, model_options, batch_size=4)
    assert registry.describe() == {"models": []}
    entry = registry.get("vehicles/1")
    assert (entry.kind, entry.task_type, entry.shared) == ("detect", "object-detection", False)
    assert registry.get("vehicles/1") is entry  # loaded once
    assert registry.describe()["models"] == [
        {"model_id": "vehicles/1", "task_type": "object-detection", "batch_size": 4, "input_height": 416,
         "input_width": 416}
    ]
    registry.add("colour/1")
    assert [m["task_type"] for m in registry.describe()["models"]] == ["object-detection", "classification"]
    registry.remove("vehicles/1")
    assert [m["model_id"] for m in registry.describe()["models"]] == ["colour/1"]
    registry.clear()
    assert registry.describe() == {"models": []}


def test_daemon_models_are_shared_not_reloaded(model_options: dict[str, ModelOptions]) -> None:
    running = load_model(model_options["vehicles"], "vehicles")
    registry = ModelRegistry(ApiOptions(), {"vehicles": running}, model_options, batch_size=2)
    entry = registry.get("vehicles/1")
    assert entry.model is running and entry.shared
    registry.remove("vehicles/1")
    assert registry.get("vehicles/1").model is running


def test_update_after_a_reload_serves_the_new_models(model_options: dict[str, ModelOptions], models_dir: Path) -> None:
    old = load_model(model_options["vehicles"], "vehicles")
    registry = ModelRegistry(ApiOptions(model_dirs=[str(models_dir)]), {"vehicles": old}, model_options, batch_size=1)
    colour = registry.get("colour/1")
    from_file = registry.add("yolox_nano.onnx", "yolox")
    assert registry.get("vehicles/1").model is old
    new = load_model(model_options["vehicles"], "vehicles")
    registry.update({"vehicles": new}, model_options)
    assert registry.get("vehicles/1").model is new  # the reloaded instance, not the old one
    assert registry.get("colour/1") is colour  # unchanged: kept
    assert registry.loaded("yolox_nano.onnx") is from_file
    registry.update({"vehicles": new}, {"vehicles": model_options["vehicles"]})  # colour removed from the config
    assert registry.loaded("colour/1") is None
    with pytest.raises(UnknownModelError):
        registry.get("colour/1")


@pytest.mark.parametrize(
    ("model_id", "model_type", "error", "message"),
    [
        ("yolox_nano.onnx", "yolox", None, None),
        ("yolox:yolox_nano.onnx", None, None, None),
        ("yolox_nano.onnx", None, ApiError, "needs its type"),
        ("yolox_nano.onnx", "no_such_type", ApiError, "needs its type"),
        ("../media/three_buses.jpg", "yolox", UnknownModelError, "inside api.model_dirs"),
        ("/etc/hostname", "yolox", UnknownModelError, "inside api.model_dirs"),
        ("missing.onnx", "yolox", UnknownModelError, "neither configured nor a model file"),
        ("imagenet_labels.txt", "yolox", ApiError, "cannot load"),
        ("no-such/1", None, UnknownModelError, "neither configured.*configured: colour/1, vehicles/1"),
        ("", None, ApiError, "model_id is missing"),
    ],
)
def test_model_files_only_from_model_dirs(
    model_options: dict[str, ModelOptions], models_dir: Path, model_id: str, model_type: str | None,
    error: type[Exception] | None, message: str | None,
) -> None:
    registry = ModelRegistry(ApiOptions(model_dirs=[str(models_dir)]), {}, model_options, batch_size=1)
    if error is None:
        entry = registry.add(model_id, model_type)
        assert entry.kind == "detect" and Path(entry.name) == (models_dir / "yolox_nano.onnx").resolve()
        assert registry.loaded(model_id) is entry
        return
    with pytest.raises(error, match=message):
        registry.add(model_id, model_type)


def test_without_model_dirs_no_file_can_be_loaded(model_options: dict[str, ModelOptions]) -> None:
    registry = ModelRegistry(ApiOptions(), {}, model_options, batch_size=1)
    with pytest.raises(UnknownModelError) as info:
        registry.add("yolox_nano.onnx", "yolox")
    assert info.value.status == 404


def test_removing_an_unknown_model_is_404(model_options: dict[str, ModelOptions]) -> None:
    registry = ModelRegistry(ApiOptions(), {}, model_options, batch_size=1)
    registry.remove("vehicles/1")  # known but not loaded: nothing to do
    with pytest.raises(UnknownModelError, match="not loaded"):
        registry.remove("nope/1")
