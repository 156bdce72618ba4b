"""Plate-format presets by name: each preset's valid and invalid samples, names in configs, the '?' placeholder."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.tracking.consensus import ConsensusOptions, text_consensus
from pipelines.tracking.formats import PlateFormat, match_format, normalize_text
from pipelines.tracking.presets import PRESETS, shape

# Samples are normalised plate texts (upper case, separators dropped, '?' for a character the reader cannot name).
SAMPLES: dict[str, tuple[list[str], list[str]]] = {
    "uk": (["AB12CDE", "LV68XYZ"], ["AB12CD", "A123BCD", "AB1CDEF", "12ABCDE"]),
    "de": (
        ["BMW1234", "MAB12", "HHAB1234", "BAB1E", "MUCA12H", "KÖXY99"],
        ["B01234", "BMW12345", "1BMW12", "ABCDE1234", "BMW"],
    ),
    "fr": (["AB123CD", "GH456JK"], ["AB12CD", "AO123CD", "AB123CU", "ABC123D"]),
    "it": (["AB123CD", "EX999ZZ"], ["AB1234C", "QB123CD"]),
    "es": (["1234BCD", "0000XYZ"], ["1234ABC", "123BCDF", "1234BC"]),
    "nl": (["AB1234", "12AB34", "1ABC23", "AB123C", "123AB4", "12ABC3"], ["ABC123", "1234567", "AB12", "A1B2C3"]),
    "pl": (["WA12345", "KR1234A", "WPI12345", "KRA1234"], ["WA", "WABCDEF", "W123456", "WAAB12345"]),
    "be": (["1ABC123"], ["0ABC123", "1AB123", "ABC123"]),
    "ch": (["ZH123456", "BE1"], ["ZH0123", "Z123", "ZH1234567"]),
    "us-ca": (["7ABC123", "1XYZ999"], ["0ABC123", "7AB1234", "ABC1234"]),
    "us-ny": (["ABC1234"], ["AB12345", "ABC123"]),
    "us-tx": (["JKL0001"], ["7ABC123"]),
    "kr": (["239?8072", "12?3456", "12가3456"], ["239+8072", "2398072", "1234?5678", "23?807", "AB?1234"]),
}


def test_every_preset_has_a_table() -> None:
    assert set(SAMPLES) == set(PRESETS)


@pytest.mark.parametrize(
    ("name", "text", "valid"),
    [
        (name, text, valid)
        for name, (good, bad) in SAMPLES.items()
        for valid, texts in ((True, good), (False, bad))
        for text in texts
    ],
)
def test_preset_accepts_its_plates_and_refuses_others(name: str, text: str, valid: bool) -> None:
    fmt = PlateFormat.model_validate(name)
    assert (fmt.regex.fullmatch(text) is not None) is valid, (name, text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("239+8072", "kr"),  # the reader printed '+' for the Hangul letter: normalised to '?', a Korean plate
        ("12 가 3456", "kr"),
        ("AB12 CDE", "uk"),
        ("B-MW 1234", "de"),
        ("7ABC123", "us-ca"),  # first preset listed wins: us-ca before be
    ],
)
def test_normalised_reads_match_presets(raw: str, expected: str) -> None:
    formats = [PlateFormat.model_validate(n) for n in ("uk", "de", "us-ca", "be", "kr")]
    assert match_format(normalize_text(raw)[0], formats) == expected


def test_presets_by_name_and_custom_formats_mix_in_consensus_options() -> None:
    options = ConsensusOptions.model_validate(
        {"formats": ["uk", {"name": "kr"}, {"name": "depot", "pattern": "DEPOT[0-9]{2}"}], "min_reads": 1}
    )
    assert [f.name for f in options.formats] == ["uk", "kr", "depot"]
    assert options.formats[1].pattern == PRESETS["kr"]
    result = text_consensus([{"text": "239+8072", "confidence": 0.9}], options)
    assert result is not None and (result["text"], result["format"], result["flagged"]) == ("239?8072", "kr", False)


@pytest.mark.parametrize("bad", ["xx", {"name": "atlantis"}])
def test_unknown_preset_names_the_presets(bad: object) -> None:
    with pytest.raises(ValidationError, match=r"is no preset \(be, ch, de.*pattern: REGEX"):
        ConsensusOptions.model_validate({"formats": [bad]})


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        (("LLDDLLL",), "[A-Z]{2}[0-9]{2}[A-Z]{3}"),
        (("DU",), "[0-9]{1}[?\uac00-\ud7a3]{1}"),
        (("LD", "DL"), "(?:[A-Z]{1}[0-9]{1})|(?:[0-9]{1}[A-Z]{1})"),
    ],
)
def test_shape(shapes: tuple[str, ...], expected: str) -> None:
    assert shape(*shapes) == expected


def test_shape_refuses_other_letters() -> None:
    with pytest.raises(ValueError, match="'LLX'"):
        shape("LLX")
