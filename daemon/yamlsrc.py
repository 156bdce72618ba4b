"""YAML loading that remembers line numbers, and ${...} substitution from the environment and secret files.

Substitution forms (in any string value):
  ${VAR}                 environment variable (error if unset)
  ${VAR:-default}        environment variable with a default
  ${file:/path/to/file}  the file's contents, trailing newline stripped (secrets); relative: to the YAML file
  ${cred:name}           $CREDENTIALS_DIRECTORY/name, systemd's LoadCredential= (secrets)
  ${package:pkg/rel/path} a file shipped inside an installed Python package (e.g. PP-OCR models)
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from daemon.yamlbound import LIMITS, BoundError, check_scalar, compose_bounded, decode_utf8, read_bounded

Loc = tuple[str | int, ...]

_VAR = re.compile(r"\$\{([^}]*)\}")


class YamlError(ValueError):
    """A YAML file that cannot be read, parsed or substituted; the message is ready for the user."""


class UnresolvedReference(YamlError):
    """A well-formed ${...} whose value is not available here (unset variable, no credentials, unreadable secret).

    `edgewatch validate` can report these as notes and check the rest: a secret may only exist under the unit.
    """


@dataclass
class LoadedYaml:
    """Parsed data plus where each value came from, so errors can name the line."""

    path: Path
    data: object
    lines: dict[Loc, int] = field(default_factory=dict)
    secret_locs: set[Loc] = field(default_factory=set)  # values that came from ${...}: never echo them
    # With load_yaml(..., allow_unresolved=True): each value left with an unresolved ${...} -> why, per reference.
    unresolved: dict[Loc, list[str]] = field(default_factory=dict)
    allow_unresolved: bool = False

    def is_unresolved(self, loc: Loc) -> bool:
        """loc, or a value it lies under, kept an unresolved ${...}: its checks are meaningless."""
        return any(loc[:cut] in self.unresolved for cut in range(len(loc), -1, -1))

    def line_of(self, loc: Loc) -> int | None:
        """Line of the deepest known ancestor of loc (pydantic locations can be deeper than the YAML)."""
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.lines:
                return self.lines[loc[:cut]]
        return None


def load_yaml(path: str | Path, env: Mapping[str, str] | None = None, allow_unresolved: bool = False) -> LoadedYaml:
    """Parse and substitute; allow_unresolved keeps unavailable ${...} as written and records them in .unresolved."""
    path = Path(path)
    try:
        text = decode_utf8(read_bounded(path, LIMITS.file_bytes, "the config file"), path)
        node, loader = compose_bounded(text, path)
    except OSError as exc:
        raise YamlError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    except BoundError as exc:
        raise YamlError(str(exc)) from None
    loaded = LoadedYaml(path, None, allow_unresolved=allow_unresolved)
    if node is None:
        loaded.data = {}
        return loaded
    loaded.data = _Converter(loaded, os.environ if env is None else env, loader).convert(node, ())
    return loaded


class _Converter:
    """Node graph -> plain data with line numbers; the composer already bounded its depth and expanded size."""

    def __init__(self, out: LoadedYaml, env: Mapping[str, str], loader: yaml.SafeLoader) -> None:
        self.out, self.env, self.loader = out, env, loader

    def convert(self, node: yaml.Node, loc: Loc) -> object:
        out = self.out
        out.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[str, object] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in result:
                    raise YamlError(f"{out.path} (line {key_node.start_mark.line + 1}): duplicate key {key!r}.")
                out.lines[(*loc, key)] = key_node.start_mark.line + 1
                result[key] = self.convert(value_node, (*loc, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(child, (*loc, i)) for i, child in enumerate(node.value)]
        value = self.loader.construct_object(node, deep=True)  # typed scalar: int, bool, null...
        if isinstance(value, str) and "${" in value:
            out.secret_locs.add(loc)
            value = _substitute(value, loc, out, self.env)
        problem = check_scalar(value)
        if problem is not None:
            where = ".".join(str(part) for part in loc) or "top level"
            raise YamlError(f"{out.path} (line {out.lines[loc]}): {where}: {problem}.")
        return value


def _substitute(value: str, loc: Loc, out: LoadedYaml, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        where = f"{out.path} (line {out.lines[loc]})"
        try:
            return resolve_reference(match.group(1), env, out.path.parent, where=where)
        except UnresolvedReference as exc:
            if not out.allow_unresolved:
                raise
            out.unresolved.setdefault(loc, []).append(str(exc))
            return match.group(0)  # kept as written: checks on this value are skipped, the note says why

    return _VAR.sub(replace, value)


def resolve_reference(ref: str, env: Mapping[str, str], base_dir: Path, where: str) -> str:
    """Resolve the inside of one ${...}; a relative ${file:} is relative to base_dir (the YAML file's folder).

    Errors name the reference, never the secret's value.
    """
    scheme, sep, rest = ref.partition(":")
    if sep and scheme == "file":
        return _read_secret(base_dir / rest, where, ref)
    if sep and scheme == "cred":
        cred_dir = env.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise UnresolvedReference(
                f"{where}: ${{{ref}}} needs $CREDENTIALS_DIRECTORY (set by systemd LoadCredential=).")
        return _read_secret(Path(cred_dir) / rest, where, ref)
    if sep and scheme == "package":
        return str(_package_file(rest, where, ref))
    name, _, default = ref.partition(":-")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise YamlError(f"{where}: ${{{ref}}} is not a valid reference; expected ${{VAR}}, ${{VAR:-default}}, "
                        "${file:PATH}, ${cred:NAME} or ${package:PKG/PATH}.")
    if name in env:
        return str(env[name])
    if ":-" in ref:
        return default
    raise UnresolvedReference(f"{where}: environment variable {name} is not set (used as ${{{ref}}}).")


def _read_secret(path: Path, where: str, ref: str) -> str:
    """A secret file's text: a regular file of at most LIMITS.secret_bytes (never a FIFO or /dev/zero)."""
    try:
        data = read_bounded(path, LIMITS.secret_bytes, f"${{{ref}}}")
    except OSError as exc:
        raise UnresolvedReference(f"{where}: cannot read ${{{ref}}}: {exc.strerror or exc}.") from exc
    except BoundError as exc:
        raise YamlError(f"{where}: {exc}") from None
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise YamlError(f"{where}: ${{{ref}}} is not valid UTF-8 (byte offset {exc.start}).") from None


def _package_file(rest: str, where: str, ref: str) -> Path:
    package, _, rel = rest.partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise YamlError(f"{where}: ${{{ref}}}: Python package {package!r} is not installed.")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.exists():
        raise YamlError(f"{where}: ${{{ref}}}: {rel} is not inside package {package!r}.")
    return path
