"""Plate texts as the consensus sees them: normalisation with an unknown-character placeholder, named formats (or
presets by name) and the letter/digit class they give each position, characters OCR confuses, allow/deny lists and
which entries alert, edit distance."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.tracking.presets import PRESETS, preset

UNKNOWN = "?"  # stands for a character the reader saw but has no glyph for (a Hangul or Arabic letter)
SEPARATORS = frozenset(" \t-\u2013\u2014.,:;_'\"\u00b7\u2022")  # printed between groups: dropped
CONFUSABLE = ("VW", "O0", "I1", "B8", "S5", "Z2")  # pairs OCR reads one for the other


class PlateFormat(BaseModel):
    """One named text format, e.g. a country's plate pattern; a bare name (`uk`) is that preset."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Name reported with texts that match, e.g. 'uk'.")
    pattern: str = Field(
        ...,
        description="Regular expression the whole normalised text must match, e.g. '[A-Z]{2}[0-9]{2}[A-Z]{3}'. "
        "A position that may hold a character the reader cannot produce lists the placeholder '?' in its class, "
        "e.g. '[0-9]{2,3}[?][0-9]{4}' for Korean plates read by a model without Hangul.",
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        """`uk` or {name: uk} stands for the preset's pattern (pipelines/tracking/presets.py)."""
        if isinstance(value, str):
            return {"name": value, "pattern": _preset_pattern(value)}
        if isinstance(value, dict) and "pattern" not in value and isinstance(value.get("name"), str):
            return {**value, "pattern": _preset_pattern(value["name"])}
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern {value!r} is not a valid regular expression: {exc}") from exc
        return value

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)


class KnownEntry(BaseModel):
    """A named group of known texts (plates) on the allow or the deny list."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Who or what these texts belong to, e.g. 'delivery van'.")
    plates: list[str] = Field(..., min_length=1, description="The known texts; normalised like the reads.")
    allow: bool = Field(default=True, description="True: the entry is on the allow list; False: on the deny list.")
    alert: bool | None = Field(
        default=None,
        description="Send an `alert` message at the first read of a track that matches this entry (not when the "
        "track settles); unset: deny-list entries alert, allow-list entries do not.",
    )

    @property
    def alerts(self) -> bool:
        """Whether a match sends an alert (set explicitly, else: deny lists do)."""
        return not self.allow if self.alert is None else self.alert


def _preset_pattern(name: str) -> str:
    try:
        return preset(name)
    except KeyError:
        raise ValueError(f"format {name!r} is no preset ({', '.join(sorted(PRESETS))}); give a custom one as "
                         f"{{name: {name}, pattern: REGEX}}") from None


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalize_text(
    text: str, confidences: Sequence[float] | None = None, unknown: str | None = UNKNOWN
) -> tuple[str, list[float] | None]:
    """Upper-case letters and digits; separators dropped; any other character (what a reader without the glyph
    prints for a Hangul or Arabic letter, e.g. '+') becomes `unknown` (None drops it). Placeholders at either
    end are dropped too: there they are the plate's frame or a screw, not a character. Per-character
    confidences follow the kept characters."""
    kept: list[tuple[str, int]] = []
    for i, ch in enumerate(text):
        if ch.isalnum():
            kept.append((ch.upper(), i))
        elif unknown is not None and ch not in SEPARATORS and not ch.isspace():
            kept.append((unknown, i))
    while kept and kept[0][0] == unknown:
        kept.pop(0)
    while kept and kept[-1][0] == unknown:
        kept.pop()
    kept_conf = None
    if confidences is not None and len(confidences) == len(text):
        kept_conf = [float(confidences[i]) for _ch, i in kept]
    return "".join(ch for ch, _i in kept), kept_conf


def match_format(text: str, formats: Sequence[PlateFormat]) -> str | None:
    """Name of the first format the whole text matches, or None."""
    for fmt in formats:
        if fmt.regex.fullmatch(text):
            return fmt.name
    return None


def format_of(text: str, formats: Sequence[PlateFormat]) -> PlateFormat | None:
    """The first format the whole text matches, or None."""
    return next((fmt for fmt in formats if fmt.regex.fullmatch(text)), None)


def fits(text: str, position: int, char: str, fmt: PlateFormat) -> bool:
    """Whether `char` at `position` keeps `text` in `fmt`: the format's class at that position (letter, digit,
    placeholder...), read from the regex itself with the rest of the text as it is."""
    return fmt.regex.fullmatch(text[:position] + char + text[position + 1:]) is not None


def partners(pairs: Sequence[str] = CONFUSABLE) -> dict[str, str]:
    """Each character of a confusable pair mapped to the other one."""
    table: dict[str, str] = {}
    for pair in pairs:
        table[pair[0]], table[pair[1]] = pair[1], pair[0]
    return table


def match_known(
    text: str, entries: Sequence[KnownEntry], max_distance: int, normalize: bool = True
) -> dict[str, Any] | None:
    """The nearest known text within max_distance: {"name","plate","list","distance"}; deny wins ties."""
    best: tuple[int, int, KnownEntry, str] | None = None
    for entry in entries:
        for plate in entry.plates:
            candidate = normalize_text(plate)[0] if normalize else plate
            distance = levenshtein(text, candidate)
            rank = (distance, int(entry.allow))
            if distance <= max_distance and (best is None or rank < best[:2]):
                best = (*rank, entry, candidate)
    if best is None:
        return None
    return {"name": best[2].name, "plate": best[3], "list": "allow" if best[2].allow else "deny", "distance": best[0]}
