"""Consensus: edit distance, plate formats, known lists, OCR text consensus and label votes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pipelines.tracking.consensus import (
    ConsensusOptions,
    KnownEntry,
    LabelVotes,
    PlateFormat,
    TextVotes,
    check_read,
    label_consensus,
    levenshtein,
    match_format,
    match_known,
    normalize_text,
    text_consensus,
)

FORMATS = [
    PlateFormat(name="uk", pattern=r"[A-Z]{2}[0-9]{2}[A-Z]{3}"),
    PlateFormat(name="fr", pattern=r"[A-Z]{2}[0-9]{3}[A-Z]{2}"),
    PlateFormat(name="nl", pattern=r"[0-9]{2}[A-Z]{3}[0-9]"),
    PlateFormat(name="de", pattern=r"[A-Z]{1,3}[A-Z]{1,2}[0-9]{1,4}"),
]
KNOWN = [
    KnownEntry(name="staff van", plates=["AB12CDE", "AB12CDF"]),
    KnownEntry(name="stolen", plates=["AB12CDX"], allow=False),
    KnownEntry(name="courier", plates=["KT-07 LMN"]),
]


def read(text: str, confidence: float = 0.9, chars: list[float] | None = None) -> dict[str, Any]:
    return {"text": text, "confidence": confidence, "char_confidences": chars or [confidence] * len(text)}


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("ABC", "", 3),
        ("AB12CDE", "AB12CDE", 0),
        ("AB12CDE", "AB12CDF", 1),
        ("AB12CDE", "B12CDE", 1),
        ("AB12CDE", "AB1 2CDE", 1),
        ("KITTEN", "SITTING", 3),
        ("XTO7LMN", "KT07LMN", 2),
    ],
)
def test_levenshtein(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance == levenshtein(b, a)


@pytest.mark.parametrize(
    ("text", "confidences", "expected"),
    [
        ("ab 12-cde", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], ("AB12CDE", [0.1, 0.2, 0.4, 0.5, 0.7, 0.8, 0.9])),
        ("KT07LMN", None, ("KT07LMN", None)),
        ("京A·12345", [1.0] * 8, ("京A12345", [1.0] * 7)),
        ("--", [0.5, 0.5], ("", [])),
        ("AB", [0.5], ("AB", None)),  # confidences that do not line up with the text are dropped
    ],
)
def test_normalize_text(text: str, confidences: list[float] | None, expected: tuple[str, Any]) -> None:
    assert normalize_text(text, confidences) == expected


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("AB12CDE", "uk"),
        ("AB123CD", "fr"),
        ("12ABC3", "nl"),
        ("BMW1234", "de"),
        ("AB12CD", None),
        ("AB12CDEF", None),
        ("ab12cde", None),
        ("", None),
    ],
)
def test_match_format(text: str, name: str | None) -> None:
    assert match_format(text, FORMATS) == name


@pytest.mark.parametrize(
    ("text", "tolerance", "expected"),
    [
        ("AB12CDE", 0, ("staff van", "AB12CDE", "allow", 0)),
        ("AB12CDZ", 1, ("stolen", "AB12CDX", "deny", 1)),  # equally near an allowed and a denied plate: deny
        ("AB12CDZ", 0, None),
        ("KT07LMN", 0, ("courier", "KT07LMN", "allow", 0)),  # known plates are normalised like the reads
        ("XT07LMM", 1, None),
        ("XT07LMM", 2, ("courier", "KT07LMN", "allow", 2)),
        ("ZZ99ZZZ", 2, None),
    ],
)
def test_match_known(text: str, tolerance: int, expected: tuple[Any, ...] | None) -> None:
    found = match_known(text, KNOWN, tolerance)
    assert (None if found is None else (found["name"], found["plate"], found["list"], found["distance"])) == expected


@pytest.mark.parametrize(
    ("reads", "options", "text", "settled", "agreement"),
    [
        pytest.param([read("AB12CDE")] * 3, {}, "AB12CDE", True, 1.0, id="unanimous"),
        pytest.param(
            [read("AB12CDF"), read("AB72CDE"), read("XB12CDE")],
            {},
            "AB12CDE",
            True,
            1.0,
            id="every read wrong, each in another place",
        ),
        pytest.param([read("AB12CDE")] * 3 + [read("ZZZ999")], {}, "AB12CDE", True, 0.75, id="outlier cluster"),
        pytest.param([read("AB12CDE")] * 2, {}, "AB12CDE", False, 1.0, id="below min_reads"),
        pytest.param([read("AB12CDE")] * 2, {"min_reads": 2}, "AB12CDE", True, 1.0, id="min_reads 2"),
        pytest.param(
            [read("AB12CDE", 0.8)] * 2 + [read("QQ99QQQ", 0.8)] * 2,
            {},
            "AB12CDE",
            False,
            0.5,
            id="split vote below min_agreement",
        ),
        pytest.param(
            [read("AB12CDE", 0.9)] * 2 + [read("QQ99QQQ", 0.3)] * 2,
            {},
            "AB12CDE",
            True,
            0.75,
            id="confidence weights the split",
        ),
        pytest.param([read("")] * 5 + [read("AB12CDE")] * 3, {}, "AB12CDE", True, 1.0, id="empty reads ignored"),
        pytest.param([read("ab 12 cde")] * 3, {}, "AB12CDE", True, 1.0, id="normalised"),
        pytest.param([read("ab 12 cde")] * 3, {"normalize": False}, "ab 12 cde", True, 1.0, id="raw text"),
        pytest.param(
            [read("AB12CD", 0.99)] * 3 + [read("AB12CDE", 0.9)] * 2,
            {},
            "AB12CD",
            True,
            1.0,
            id="hidden last char read consistently",
        ),
        pytest.param(
            [read("AB12CD", 0.99)] * 3 + [read("AB12CDE", 0.9)] * 2,
            {"formats": FORMATS},
            "AB12CDE",
            True,
            1.0,
            id="format picks the full-length vote",
        ),
        pytest.param(
            [read("CDE", 0.95)] * 5 + [read("AB12CDE", 0.9)] * 3,
            {},
            "CDE",
            True,
            4.75 / 7.45,
            id="entering plate read short most often",
        ),
        pytest.param(
            [read("CDE", 0.95)] * 5 + [read("AB12CDE", 0.9)] * 3,
            {"formats": FORMATS},
            "AB12CDE",
            True,
            1.0,
            id="format prefers the full reads of an entering plate; the short ones agree",
        ),
        pytest.param(
            [read("CDE", 0.95)] * 5 + [read("XY34ZQW", 0.9)] * 3,
            {"formats": FORMATS},
            "XY34ZQW",
            False,
            2.7 / 7.45,
            id="format prefers a valid read; other short ones disagree",
        ),
        pytest.param(
            [read("AB12CDE")] * 3 + [read("XY99ZZZ")] * 2,
            {"text_method": "position"},
            "AB12CDE",
            True,
            0.6,
            id="position vote over all reads",
        ),
        pytest.param(
            [read("AB12CDE", 0.9, [0.9] * 6 + [0.2]), read("AB12CDF", 0.8, [0.8] * 6 + [0.95])],
            {},
            "AB12CDF",
            False,
            1.0,
            id="character confidences decide a position",
        ),
    ],
)
def test_text_consensus(
    reads: list[dict[str, Any]], options: dict[str, Any], text: str, settled: bool, agreement: float
) -> None:
    result = text_consensus(reads, ConsensusOptions(**options))
    assert result is not None
    assert (result["text"], result["settled"]) == (text, settled)
    assert result["agreement"] == pytest.approx(agreement)
    assert len(result["char_confidences"]) == len(text.replace(" ", "")) or not options.get("normalize", True)


@pytest.mark.parametrize(
    ("reads", "options", "text", "fmt", "flagged", "settled", "known"),
    [
        ([read("AB12CDE")] * 3, {"formats": FORMATS}, "AB12CDE", "uk", False, True, None),
        ([read("AB12C")] * 3, {"formats": FORMATS}, "AB12C", None, True, True, None),
        ([read("AB12C")] * 3, {"formats": FORMATS, "settle_requires_format": True}, "AB12C", None, True, False, None),
        ([read("AB12C")] * 3, {}, "AB12C", None, False, True, None),
        ([read("AB12CDX")] * 3, {"known": KNOWN}, "AB12CDX", None, False, True, "stolen"),
        ([read("A812CDE")] * 3, {"known": KNOWN, "formats": FORMATS}, "A812CDE", None, True, True, "staff van"),
        (
            [read("A812CDE")] * 3,
            {"known": KNOWN, "formats": FORMATS, "snap_to_known": True},
            "AB12CDE",
            "uk",
            False,
            True,
            "staff van",
        ),
    ],
)
def test_formats_and_known_lists_on_consensus(
    reads: list[dict[str, Any]],
    options: dict[str, Any],
    text: str,
    fmt: str | None,
    flagged: bool,
    settled: bool,
    known: str | None,
) -> None:
    result = text_consensus(reads, ConsensusOptions(**options))
    assert result is not None
    assert (result["text"], result["format"], result["flagged"], result["settled"]) == (text, fmt, flagged, settled)
    assert (result["known"] or {}).get("name") == known
    assert ("read_text" in result) == (result["text"] != reads[0]["text"])


def test_check_single_read() -> None:
    options = ConsensusOptions(formats=FORMATS, known=KNOWN)
    assert check_read("ab-12 cde", options) == {
        "format": "uk",
        "flagged": False,
        "known": {"name": "staff van", "plate": "AB12CDE", "list": "allow", "distance": 0},
    }
    assert check_read("??", options) == {"format": None, "flagged": True, "known": None}


def test_text_votes_keep_the_most_confident_reads() -> None:
    votes = TextVotes(max_history=3)
    for text, confidence in [("AB12CDE", 0.9), ("ZZ99ZZZ", 0.2), ("AB12CDE", 0.8), ("ZZ99ZZZ", 0.3), ("AB12CDE", 0.7)]:
        assert votes.add(read(text, confidence))
    assert not votes.add(read(""))
    assert len(votes) == 5 and [r.confidence for r in votes.reads] == pytest.approx([0.9, 0.8, 0.7])
    result = votes.result(ConsensusOptions())
    assert result is not None and result["reads"] == 5 and result["agreement"] == 1.0


@pytest.mark.parametrize(
    ("reads", "label", "agreement", "settled"),
    [
        ([{"class": "van", "class_id": 2, "confidence": 0.9}] * 3, "van", 1.0, True),
        (
            [
                {"class": "van", "class_id": 2, "confidence": 0.9},
                {"class": "car", "class_id": 1, "confidence": 0.6},
                {"class": "van", "class_id": 2, "confidence": 0.5},
            ],
            "van",
            1.4 / 2.0,
            True,
        ),
        ([{"class": "van", "class_id": 2, "confidence": 0.9}] * 2, "van", 1.0, False),
        # soft vote: "car" is never the top class but collects the most probability over the top lists
        (
            [
                {
                    "class": "van",
                    "class_id": 2,
                    "confidence": 0.5,
                    "top": [
                        {"class": "van", "class_id": 2, "confidence": 0.5},
                        {"class": "car", "class_id": 1, "confidence": 0.45},
                    ],
                },
                {
                    "class": "bus",
                    "class_id": 3,
                    "confidence": 0.5,
                    "top": [
                        {"class": "bus", "class_id": 3, "confidence": 0.5},
                        {"class": "car", "class_id": 1, "confidence": 0.45},
                    ],
                },
                {
                    "class": "car",
                    "class_id": 1,
                    "confidence": 0.4,
                    "top": [{"class": "car", "class_id": 1, "confidence": 0.4}],
                },
            ],
            "car",
            1.3 / 2.3,
            False,
        ),
    ],
)
def test_label_votes(reads: list[dict[str, Any]], label: str, agreement: float, settled: bool) -> None:
    result = label_consensus(reads, ConsensusOptions())
    assert result is not None
    assert (result["class"], result["settled"]) == (label, settled)
    assert result["agreement"] == pytest.approx(agreement)
    assert result["top"][0]["class"] == label and result["reads"] == len(reads)
    assert LabelVotes().result(ConsensusOptions()) is None


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        (PlateFormat, {"name": "bad", "pattern": "[A-Z"}, "not a valid regular expression"),
        (PlateFormat, {"name": "", "pattern": "A"}, "at least 1 character"),
        (KnownEntry, {"name": "x", "plates": []}, "at least 1 item"),
        (ConsensusOptions, {"min_agreement": 1.5}, "less than or equal to 1"),
        (ConsensusOptions, {"min_reads": 3, "unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_options_validation(model: type, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        model(**fields)
