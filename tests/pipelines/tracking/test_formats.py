"""Plate texts: the unknown-character placeholder, position classes read from a format, confusable partners."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.tracking.consensus import ConsensusOptions, check_read, text_consensus
from pipelines.tracking.formats import CONFUSABLE, KnownEntry, PlateFormat, fits, format_of, normalize_text, partners

UK = PlateFormat(name="uk", pattern=r"[A-Z]{2}[0-9]{2}[A-Z]{3}")
KR = PlateFormat(name="kr", pattern=r"[0-9]{2,3}[?][0-9]{4}")


@pytest.mark.parametrize(
    ("text", "unknown", "expected"),
    [
        ("239+8072", "?", "239?8072"),  # the reader printed '+' for a Hangul letter it has no glyph for
        ("239+8072", None, "2398072"),  # the old way: dropped, and the plate matches no format
        ("12 가 3456", "?", "12가3456"),  # a reader that has the glyph keeps it (a letter)
        ("AB-12.CD:E", "?", "AB12CDE"),  # separators go
        ("[KRW 301]", "?", "KRW301"),  # the plate's frame at either end is no character
        ("(+AB12CDE|", "?", "AB12CDE"),
        ("AB12|CDE", "?", "AB12?CDE"),  # in the middle it is a character the reader could not name
        ("++", "?", ""),
        ("ab12*cde", "#", "AB12#CDE"),
    ],
)
def test_normalize_keeps_unreadable_characters_as_a_placeholder(text: str, unknown: str | None, expected: str) -> None:
    assert normalize_text(text, unknown=unknown)[0] == expected


def test_placeholder_keeps_its_confidence() -> None:
    assert normalize_text("[2+9]", [0.1, 0.9, 0.4, 0.8, 0.2]) == ("2?9", [0.9, 0.4, 0.8])


@pytest.mark.parametrize(
    ("text", "position", "char", "fmt", "expected"),
    [
        ("AB12CDE", 1, "8", UK, False),  # a letter position
        ("AB12CDE", 2, "I", UK, False),  # a digit position
        ("AB12CDE", 2, "7", UK, True),
        ("239?8072", 3, "?", KR, True),
        ("239?8072", 3, "7", KR, False),
        ("39?8072", 2, "?", KR, True),  # two leading digits are a kr plate too
    ],
)
def test_position_class_comes_from_the_format(text: str, position: int, char: str, fmt: PlateFormat,
                                              expected: bool) -> None:
    assert fits(text, position, char, fmt) is expected


def test_partners_go_both_ways() -> None:
    table = partners()
    assert len(table) == 2 * len(CONFUSABLE)
    assert all(table[table[c]] == c for c in table) and table["0"] == "O" and table["W"] == "V"


@pytest.mark.parametrize(
    ("reads", "options", "fmt", "flagged"),
    [
        (["239+8072"] * 3, {"formats": [UK, KR]}, "kr", False),
        (["239+8072"] * 3, {"formats": [UK, KR], "unknown_character": None}, None, True),  # 2398072: in none
        (["AB12CDE"] * 3, {"formats": [UK, KR]}, "uk", False),
    ],
)
def test_korean_plate_with_a_missing_glyph_matches_its_format(
    reads: list[str], options: dict[str, Any], fmt: str | None, flagged: bool
) -> None:
    result = text_consensus([{"text": t, "confidence": 0.9} for t in reads], ConsensusOptions(**options))
    assert result is not None and (result["format"], result["flagged"], result["settled"]) == (fmt, flagged, True)
    assert check_read(reads[0], ConsensusOptions(**options))["format"] == fmt
    assert format_of(result["text"], options["formats"]) == (KR if fmt == "kr" else UK if fmt else None)


@pytest.mark.parametrize(
    ("entry", "alerts"),
    [
        ({"name": "stolen", "plates": ["AB12CDE"], "allow": False}, True),  # deny lists alert by default
        ({"name": "staff", "plates": ["AB12CDE"]}, False),
        ({"name": "vip", "plates": ["AB12CDE"], "alert": True}, True),  # an allow-list entry may alert too
        ({"name": "known bad, quiet", "plates": ["AB12CDE"], "allow": False, "alert": False}, False),
    ],
)
def test_which_known_entries_alert(entry: dict[str, Any], alerts: bool) -> None:
    assert KnownEntry.model_validate(entry).alerts is alerts
