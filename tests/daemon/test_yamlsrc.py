"""YAML loading with line numbers and ${...} substitution."""

from __future__ import annotations

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
