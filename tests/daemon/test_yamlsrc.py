"""YAML loading with line numbers and ${...} substitution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.yamlsrc import YamlError, load_yaml


def load(tmp_path: Path, text: str, env: dict[str, str]) -> object:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_yaml(path, env)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("a: ${X}", {"X": "1"}, {"a": "1"}),
        ("a: ${X:-dflt}", {}, {"a": "dflt"}),
        ("a: ${X:-dflt}", {"X": "set"}, {"a": "set"}),
        ("a: pre-${X}-post", {"X": "mid"}, {"a": "pre-mid-post"}),
        ("a: 5", {}, {"a": 5}),
        ("a: [1, true, null]", {}, {"a": [1, True, None]}),
    ],
)
def test_substitution(tmp_path: Path, text: str, env: dict[str, str], expected: object) -> None:
    assert load(tmp_path, text, env).data == expected  # type: ignore[attr-defined]


def test_file_cred_and_package_references(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("pw\n")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mqtt").write_text("cpw")
    text = f"a: ${{file:{tmp_path}/secret}}\nb: ${{cred:mqtt}}\nc: ${{package:yaml/__init__.py}}\n"
    loaded = load(tmp_path, text, {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    data = loaded.data  # type: ignore[attr-defined]
    assert data["a"] == "pw" and data["b"] == "cpw" and Path(data["c"]).name == "__init__.py"
    assert ("a",) in loaded.secret_locs  # type: ignore[attr-defined]


def test_a_relative_secret_file_is_relative_to_the_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pw").write_text("beside\n")
    monkeypatch.chdir("/")
    assert load(tmp_path, "a: ${file:secrets/pw}\n", {}).data == {"a": "beside"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "env", "words"),
    [
        ("x: 1\na: ${NOPE}", {}, "line 2): environment variable NOPE is not set"),
        ("a: ${cred:x}", {}, "CREDENTIALS_DIRECTORY"),
        ("a: ${package:no_such_pkg_zz/x}", {}, "not installed"),
        ("a: ${package:yaml/missing.bin}", {}, "not inside package"),
        ("a: ${bad ref}", {}, "not a valid reference"),
        ("a: 1\na: 2", {}, "duplicate key 'a'"),
        ("a: [1,", {}, "not valid YAML"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, text: str, env: dict[str, str], words: str) -> None:
    with pytest.raises(YamlError) as info:
        load(tmp_path, text, env)
    assert words in str(info.value) and "c.yaml" in str(info.value)


def test_line_numbers_are_recorded(tmp_path: Path) -> None:
    loaded = load(tmp_path, "a:\n  b:\n    - x\n    - y: 1\n", {})
    assert loaded.line_of(("a", "b", 1, "y")) == 4  # type: ignore[attr-defined]
    assert loaded.line_of(("a", "b", 1, "y", "deeper")) == 4  # type: ignore[attr-defined]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match="cannot read"):
        load_yaml(tmp_path / "absent.yaml")


def test_allow_unresolved_keeps_the_reference_and_records_why(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb: ${cred:pw}\nc: x-${NOPE}\nd: ${file:absent}\ne: ${OK}\n")
    loaded = load_yaml(path, {"OK": "yes"}, allow_unresolved=True)
    assert loaded.data == {"a": 1, "b": "${cred:pw}", "c": "x-${NOPE}", "d": "${file:absent}", "e": "yes"}
    assert set(loaded.unresolved) == {("b",), ("c",), ("d",)}
    assert "CREDENTIALS_DIRECTORY" in loaded.unresolved[("b",)][0] and "NOPE" in loaded.unresolved[("c",)][0]
    assert loaded.is_unresolved(("b", "deeper")) and not loaded.is_unresolved(("e",))


def test_allow_unresolved_still_rejects_bad_syntax_and_missing_packages(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    for text in ("a: ${bad ref}", "a: ${package:no_such_pkg_zz/x}"):
        path.write_text(text)
        with pytest.raises(YamlError):
            load_yaml(path, {}, allow_unresolved=True)


# -- hostile files (issue 16 items 1 and 8): each a one-line YamlError naming the file, quickly, in bounded memory --

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"# Kamera Stra\xdfe\nversion: 1\n", "(line 1): not valid UTF-8 at byte offset 13 (byte 0xdf)"),
        (b"version: 1\n\x89PNG\r\n\x1a\n\x00\x00", "(line 2): not valid UTF-8 at byte offset 11"),
        (b"pipeline: &s {stages: [{model: x, stages: *s}]}\n", "recursive alias"),
        (b"x: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested deeper than 48 levels"),
        ("stages:" + "".join(f"\n{'  ' * i}- stages:" for i in range(300)) + " []\n", "nested deeper than 48"),
        (BILLION_LAUGHS, "values, aliases expanded"),
        ("d0: &d0 [1]\n" + "".join(f"d{i}: &d{i} [*d{i - 1}]\n" for i in range(1, 60)), "once aliases are expanded"),
        (b"a: 1\n" + b"#" * (200 * 1024), "larger than 131072 bytes"),
        ("shutdown_timeout_s: 1.0e+400\n", "shutdown_timeout_s: numbers must be within ±1e+12 (inf is not accepted)"),
        ("a: {b: .nan}\n", "(line 1): a.b: nan is not accepted"),
        ("models: {m: {max_detections: " + "1" + "0" * 30 + "}}\n", "models.m.max_detections: numbers must be within"),
    ],
    ids=["latin1", "binary", "recursive-alias", "deep-flow", "deep-stages", "billion-laughs", "alias-depth",
         "huge-file", "inf", "nan", "huge-number"],
)
def test_hostile_files_are_one_line_errors(tmp_path: Path, content: str | bytes, words: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(YamlError) as info:
        load_yaml(path, {})
    message = str(info.value)
    assert words in message and str(path) in message and "\n" not in message


def test_an_over_long_string_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match=r"pipeline\.name: a string of 10485760 characters; at most 65536"):
        load(tmp_path, "pipeline:\n  name: ${BIG}\n", {"BIG": "n" * 10 * 1024 * 1024})


def test_aliases_within_the_limits_still_work(tmp_path: Path) -> None:
    data = load(tmp_path, "a: &p [1, 2]\nb: *p\nc: {d: *p}\n", {}).data  # type: ignore[attr-defined]
    assert data == {"a": [1, 2], "b": [1, 2], "c": {"d": [1, 2]}}


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "dir", "big"])
def test_secret_files_must_be_small_regular_files(tmp_path: Path, target: str) -> None:
    path = {"fifo": tmp_path / "fifo", "/dev/zero": Path("/dev/zero"), "dir": tmp_path, "big": tmp_path / "big"}[target]
    if target == "fifo":
        os.mkfifo(path)  # no writer: a plain open() would wait forever
    if target == "big":
        path.write_bytes(b"x" * (65 * 1024))
    with pytest.raises(YamlError) as info:
        load(tmp_path, f"a: 1\npw: ${{file:{path}}}\n", {})
    expected = "larger than 65536 bytes" if target == "big" else "must be a regular file, not a"
    assert expected in str(info.value) and "(line 2)" in str(info.value)


def test_a_fifo_as_the_config_file_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "c.yaml")
    with pytest.raises(YamlError, match="the config file must be a regular file, not a FIFO"):
        load_yaml(tmp_path / "c.yaml", {})
