"""How a config's problems are found and told: every problem with its YAML path and line, in one paragraph.

The loader and the validator (daemon/config.py) collect problems here instead of raising at the first one,
so the user sees every mistake at once; messages never echo a secret or the credentials inside a URL.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from daemon.yamlsrc import LoadedYaml, Loc

_SECRET_WORDS = ("password", "secret", "token", "key")
# Durations (settings named *_s) are waited on with threading timeouts, which overflow near 9.2e9 s; no
# setting needs more than a few days, so everything above about 11 days is a typo or an attack.
MAX_DURATION_S = 1_000_000.0
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")  # credentials inside a URL


class ConfigError(ValueError):
    """An invalid config; str() is the one-paragraph message for the user."""


class ConfigErrors:
    """Collects errors from all passes so the user sees every problem at once."""

    def __init__(self, src: LoadedYaml) -> None:
        self.src = src
        self.items: list[str] = []
        self.invalid_models: set[str] = set()  # reported already: stages naming them get no second error

    def add(self, loc: Loc, message: str) -> None:
        if self.src.is_unresolved(loc):
            return  # the value is still a ${...} (validate --allow-missing-secrets): reported as a note instead
        line = self.src.line_of(loc)
        where = loc_str(loc) or "top level"
        self.items.append(f"{where}{f' (line {line})' if line else ''}: {message}")

    def add_validation(
        self, prefix: Loc, exc: ValidationError, model: type[BaseModel] | None, skip: frozenset[str] = frozenset()
    ) -> None:
        for err in exc.errors(include_url=False):
            loc = (*prefix, *err["loc"])
            if loc and loc[0] in skip:
                continue  # already reported entry by entry; an emptied list would only add noise
            self.add(loc, explain(err, loc in self.src.secret_locs, model, tuple(err["loc"])))

    def error(self) -> ConfigError | None:
        return ConfigError(f"{self.src.path}: invalid config: " + "; ".join(self.items) + ".") if self.items else None

    def raise_if_any(self) -> None:
        error = self.error()
        if error is not None:
            raise error


def number_problems(value: object, loc: Loc) -> list[tuple[Loc, str]]:
    """Every non-finite float and over-long duration (*_s) in the validated config, any plug-in's options included.

    Pydantic turns the string "1e400" into inf, so the loader's check on YAML numbers is not enough.
    """
    if isinstance(value, BaseModel):
        return [p for name, item in value for p in number_problems(item, (*loc, name))]  # its fields, with values
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in number_problems(item, (*loc, i))]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in number_problems(item, (*loc, str(key)))]
    if isinstance(value, float) and not math.isfinite(value):
        return [(loc, f"expected a finite number, got {value}")]
    name = str(loc[-1]) if loc else ""
    if isinstance(value, int | float) and name.endswith("_s") and value > MAX_DURATION_S:
        return [(loc, f"a duration of at most {MAX_DURATION_S:g} seconds, got {value:g}")]
    return []


def loc_str(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def explain(err: ErrorDetails, secret: bool, model: type[BaseModel] | None, rel_loc: Loc) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        allowed = allowed_keys(model, rel_loc[:-1])
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"unknown key {rel_loc[-1]!r}{hint}"
    if kind == "missing":
        return "required setting is missing"
    text = msg[0].lower() + msg[1:] if msg else kind
    sensitive = secret or any(w in str(rel_loc[-1] if rel_loc else "").lower() for w in _SECRET_WORDS)
    if not sensitive and "input" in err and not isinstance(err["input"], dict | list):
        text += f", got {err['input']!r}"
    return _USERINFO.sub(r"\1***@", text)


def allowed_keys(model: type[BaseModel] | None, loc: Loc) -> list[str]:
    """Walk nested pydantic models along loc to list the keys allowed there (best effort)."""
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return sorted(model.model_fields) if model is not None else []


def masked(value: object, key: str) -> object:
    """`value` with every string under a secret-sounding key replaced by *** and URL credentials hidden."""
    if isinstance(value, dict):
        return {k: masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key) for v in value]
    if isinstance(value, str) and value and any(w in key.lower() for w in _SECRET_WORDS):
        return "***"
    return _USERINFO.sub(r"\1***@", value) if isinstance(value, str) else value
