"""The OCR vote: log-odds weights, format position classes, confusable partners, decisive positions, merging."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from pipelines.tracking.consensus import ConsensusOptions, PlateFormat, TextVotes, text_consensus
from pipelines.tracking.textvote import TextRead, VoteRules, evidence, vote, vote_length

UK = PlateFormat(name="uk", pattern=r"[A-Z]{2}[0-9]{2}[A-Z]{3}")
EU = PlateFormat(name="eu", pattern=r"[A-Z]{2}[0-9]{3}[A-Z]{2}")
US = PlateFormat(name="us", pattern=r"[0-9][A-Z]{3}[0-9]{3}")
KR = PlateFormat(name="kr", pattern=r"[0-9]{2,3}[?][0-9]{4}")


def read(text: str, confidence: float = 0.9, chars: list[float] | None = None) -> dict[str, Any]:
    return {"text": text, "confidence": confidence, "char_confidences": chars or [confidence] * len(text)}


def at(text: str, position: int, confidence: float, rest: float = 0.99) -> dict[str, Any]:
    """A read whose character at `position` has `confidence` and every other one `rest`."""
    chars = [rest] * len(text)
    chars[position] = confidence
    return read(text, sum(chars) / len(chars), chars)


@pytest.mark.parametrize(
    ("confidence", "weight"),
    [(0.999, math.log(999)), (0.95, math.log(19)), (0.6, math.log(1.5)), (1.0, math.log(999)), (2.0, math.log(999))],
)
def test_evidence_is_log_odds_capped(confidence: float, weight: float) -> None:
    assert evidence(confidence) == pytest.approx(weight)


@pytest.mark.parametrize("confidence", [0.5, 0.3, 0.0, -1.0])
def test_evidence_at_or_below_even_odds_is_next_to_nothing(confidence: float) -> None:
    assert 0.0 <= evidence(confidence) < 0.001


@pytest.mark.parametrize(
    ("reads", "options", "text"),
    [
        pytest.param(
            [at("AB12CVE", 5, 0.95)] * 2 + [at("AB12CWE", 5, 0.6)] * 4, {}, "AB12CVE",
            id="V/W: two confident reads outweigh four weak ones (a linear sum would not: 1.9 < 2.4)",
        ),
        pytest.param(
            [at("AB12CVE", 5, 0.95)] * 2 + [at("AB12CWE", 5, 0.97)] * 4, {}, "AB12CWE",
            id="V/W: a confident majority still wins",
        ),
        pytest.param(
            [read("A812CDE")] * 3 + [read("AB12CDE", 0.8)], {"formats": [UK]}, "AB12CDE",
            id="B/8: a letter position prefers the letter some read gave",
        ),
        pytest.param(
            [read("A812CDE")] * 3 + [read("AB12CDE", 0.8)], {}, "A812CDE", id="B/8: without formats the majority",
        ),
        pytest.param(
            [read("ABI2CDE")] * 3 + [read("AB12CDE", 0.8)], {"formats": [UK]}, "AB12CDE",
            id="I/1: a digit position prefers the digit",
        ),
        pytest.param(
            [read("AB1ZCDE")] * 3 + [read("AB12CDE", 0.8)], {"formats": [UK]}, "AB12CDE", id="Z/2: digit position",
        ),
        pytest.param(
            [read("AB12CD5")] * 3 + [read("AB12CDS", 0.8)], {"formats": [UK]}, "AB12CDS", id="S/5: letter position",
        ),
        pytest.param(
            [read("AB153CD")] * 2 + [read("AB1S3CD", 0.95)] * 3, {"formats": [UK, EU]}, "AB153CD",
            id="S/5: a confident majority of letters where every format has a digit",
        ),
        pytest.param(
            [read("RNOOWUW")] * 5, {"formats": [UK], "confusable_weight": 0.5}, "RN00WUW",
            id="O/0: every read has O where digits belong; the partner weight lets 0 win",
        ),
        pytest.param(
            [read("RNOOWUW")] * 5, {"formats": [UK]}, "RNOOWUW",
            id="O/0: without a partner weight only read characters can win (flagged)",
        ),
        pytest.param(
            [read("0DMM448")] * 4, {"formats": [UK, US], "confusable_weight": 0.5}, "0DMM448",
            id="O/0: already in a format (us), nothing to correct",
        ),
        pytest.param(
            [read("ODMM448")] * 4, {"formats": [UK, US], "confusable_weight": 0.5}, "0DMM448",
            id="O/0: a letter where the us format has its first digit",
        ),
        pytest.param(
            [read("239+8072")] * 3, {"formats": [UK, KR]}, "239?8072", id="a glyph the reader has not got: kr format",
        ),
    ],
)
def test_confusion_aware_vote(reads: list[dict[str, Any]], options: dict[str, Any], text: str) -> None:
    result = text_consensus(reads, ConsensusOptions(**options))
    assert result is not None and result["text"] == text


@pytest.mark.parametrize(
    ("reads", "options", "settled", "min_share"),
    [
        pytest.param([read("AB12CDE")] * 4, {}, True, 1.0, id="unanimous"),
        pytest.param(
            [at("AB12CVE", 5, 0.95)] * 2 + [at("AB12CWE", 5, 0.95)] * 2, {}, False, 0.5,
            id="a position split evenly: every read agrees within one edit, but the vote is not decisive",
        ),
        pytest.param(
            [at("AB12CVE", 5, 0.99)] * 3 + [at("AB12CWE", 5, 0.7)] * 2, {}, True,
            3 * math.log(99) / (3 * math.log(99) + 2 * math.log(0.7 / 0.3)), id="a decisive weighted vote",
        ),
        pytest.param(
            [read("RNOOWUW")] * 5, {"formats": [UK], "confusable_weight": 0.5}, True, 1.0,
            id="letters where the format has digits leave the digit the only candidate there",
        ),
        pytest.param(
            [read("RN00WUW")] * 3 + [read("RNO0WUW")] * 2, {"formats": [UK]}, True, 1.0,
            id="a read the format cannot have at a position does not dilute it",
        ),
    ],
)
def test_min_agreement_is_measured_on_the_weighted_vote(
    reads: list[dict[str, Any]], options: dict[str, Any], settled: bool, min_share: float
) -> None:
    result = text_consensus(reads, ConsensusOptions(**options))
    assert result is not None
    assert result["settled"] is settled and result["agreement"] == pytest.approx(1.0)
    assert min(result["char_confidences"]) == pytest.approx(min_share)


def test_vote_keeps_the_heaviest_length_unless_another_is_in_a_format() -> None:
    reads = [TextRead("AB12CD", 0.99)] * 3 + [TextRead("AB12CDE", 0.9)] * 2
    assert vote(reads, VoteRules()).text == "AB12CD"
    voted = vote(reads, VoteRules(formats=(UK,)))
    assert (voted.text, voted.fmt) == ("AB12CDE", "uk")


def test_shares_count_only_reads_of_the_length() -> None:
    reads = [TextRead("AB", 0.9), TextRead("AC", 0.9), TextRead("ABC", 0.9)]
    voted = vote_length(reads, 2, VoteRules())
    assert voted.text == "AB" and voted.shares == pytest.approx([1.0, 0.5]) and voted.fmt is None


def test_merged_votes_keep_every_read_up_to_the_history() -> None:
    one, two = TextVotes(max_history=4), TextVotes(max_history=4)
    for confidence in (0.9, 0.5, 0.7):
        one.add(read("AB12CDE", confidence))
        two.add(read("AB12CDF", confidence - 0.05))
    one.merge(two)
    assert len(one) == 6 and [r.confidence for r in one.reads] == pytest.approx([0.9, 0.85, 0.7, 0.65])
    result = one.result(ConsensusOptions())
    assert result is not None and result["text"] == "AB12CDE" and result["reads"] == 6


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"confusable": ["VWX"]}, "two different characters"),
        ({"confusable": ["OO"]}, "two different characters"),
        ({"unknown_character": "X"}, "not a letter or digit"),
        ({"unknown_character": "??"}, "not a letter or digit"),
        ({"confusable_weight": 1.5}, "less than or equal to 1"),
    ],
)
def test_vote_options_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ConsensusOptions(**fields)
