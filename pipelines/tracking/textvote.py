"""The OCR vote of one track: reads grouped by edit distance, then a per-position vote weighted by what the reader
knows about each character, kept inside the plate formats where it can be.

Weights: a character read with confidence p adds log(p / (1 - p)) to its candidate (the log-odds a naive-Bayes
reader would add; reads at or below 0.5 add next to nothing), so two reads at 0.95 (2 x 2.9) outweigh four at
0.6 (4 x 0.4): a confident minority is not outvoted by a weak majority. With formats, the vote is the
best-scoring text that is in one of them: a letter position prefers letters, a digit position digits; a read
of a character that the format cannot have there also counts, by `partner_weight`, for its confusable partner
(O for 0, S for 5, ...), so a plate whose 0s are all read as O can still come out right.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipelines.tracking.formats import PlateFormat, fits, format_of, levenshtein

MAX_CONFIDENCE = 0.999  # log-odds of a confidence of 1.0 would be infinite
WEAK = 1e-3  # weight per unit of confidence of a character read at or below 0.5: orders ties, decides nothing
MAX_TRIES = 128  # texts tried, best first, before giving up on finding one in a format


@dataclass
class TextRead:
    """One OCR read, normalised, with its weight and per-character confidences."""

    text: str
    confidence: float
    chars: list[float] = field(default_factory=list)
    partial: bool = False  # the box touched the picture's edge: part of the plate may be outside

    def char_weights(self) -> list[float]:
        """Each character's evidence: its own confidence when the reader gave one, else the read's."""
        confidences = self.chars if len(self.chars) == len(self.text) else [self.confidence] * len(self.text)
        return [evidence(p) for p in confidences]


@dataclass(frozen=True)
class VoteRules:
    """What the vote knows besides the reads: formats and the characters the reader confuses."""

    formats: Sequence[PlateFormat] = ()
    partner: Mapping[str, str] = field(default_factory=dict)
    partner_weight: float = 0.0


@dataclass(frozen=True)
class Vote:
    """The voted text, each position's share of the weight (among the characters the format allows there) and
    the format it is in (None: in none)."""

    text: str
    shares: list[float]
    fmt: str | None


def evidence(confidence: float) -> float:
    """Log-odds of a character read with this confidence being right; next to nothing at or below 0.5."""
    p = min(max(float(confidence), 0.0), MAX_CONFIDENCE)
    return math.log(p / (1.0 - p)) if p > 0.5 else WEAK * p


def position_votes(reads: Sequence[TextRead], length: int) -> list[dict[str, float]]:
    """Per position of the reads of one length: character -> summed evidence (in first-read order)."""
    votes: list[dict[str, float]] = [defaultdict(float) for _ in range(length)]
    for read in reads:
        if len(read.text) == length:
            for pos, (char, weight) in enumerate(zip(read.text, read.char_weights(), strict=True)):
                votes[pos][char] += weight
    return votes


def _ranked(votes: Mapping[str, float], rules: VoteRules) -> list[tuple[str, float]]:
    """Candidates of one position, best first: the characters read, and with a partner weight their partners."""
    scores = dict(votes)
    if rules.partner_weight > 0 and rules.formats:
        for char, weight in votes.items():
            other = rules.partner.get(char)
            if other is not None:
                scores[other] = scores.get(other, 0.0) + rules.partner_weight * weight
    return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)  # stable: first read wins a tie


def _best_in_format(
    ranked: list[list[tuple[str, float]]], formats: Sequence[PlateFormat]
) -> tuple[str, PlateFormat] | None:
    """The best-scoring text (sum of each position's share) that some format matches, tried best first."""
    totals = [sum(w for _c, w in cands) or 1.0 for cands in ranked]

    def cost(index: tuple[int, ...]) -> float:
        return sum((cands[0][1] - cands[i][1]) / total for cands, i, total in zip(ranked, index, totals, strict=True))

    start = tuple(0 for _ in ranked)
    heap, seen = [(0.0, start)], {start}
    for _ in range(MAX_TRIES):
        if not heap:
            break
        _cost, index = heapq.heappop(heap)
        text = "".join(cands[i][0] for cands, i in zip(ranked, index, strict=True))
        fmt = format_of(text, formats)
        if fmt is not None:
            return text, fmt
        for pos in range(len(index)):
            if index[pos] + 1 < len(ranked[pos]):
                step = (*index[:pos], index[pos] + 1, *index[pos + 1:])
                if step not in seen:
                    seen.add(step)
                    heapq.heappush(heap, (cost(step), step))
    return None


def _format_shares(text: str, fmt: PlateFormat, votes: list[dict[str, float]], rules: VoteRules) -> list[float]:
    """Each position's share among the characters the format allows there; a read the format cannot have at
    that position counts by partner_weight for its partner, when the partner is allowed."""
    shares = []
    for pos, counted in enumerate(votes):
        allowed = {c: w for c, w in counted.items() if fits(text, pos, c, fmt)}
        for char, weight in counted.items():
            other = rules.partner.get(char)
            if char not in allowed and other is not None and fits(text, pos, other, fmt):
                allowed[other] = allowed.get(other, 0.0) + rules.partner_weight * weight
        total = sum(allowed.values())
        shares.append(allowed.get(text[pos], 0.0) / total if total > 0 else 0.0)
    return shares


def vote_length(reads: Sequence[TextRead], length: int, rules: VoteRules) -> Vote:
    """The vote over the reads of one length: plain per-position winners, or the best text in a format."""
    votes = position_votes(reads, length)
    ranked = [_ranked(v, rules) for v in votes]
    if rules.formats:
        found = _best_in_format(ranked, rules.formats)
        if found is not None:
            text, fmt = found
            return Vote(text, _format_shares(text, fmt, votes, rules), fmt.name)
    text = "".join(max(v.items(), key=lambda kv: kv[1])[0] for v in votes)
    shares = [v[c] / (sum(v.values()) or 1.0) for v, c in zip(votes, text, strict=True)]
    return Vote(text, shares, None)


def vote(reads: Sequence[TextRead], rules: VoteRules) -> Vote:
    """Vote over the heaviest length; with formats, the heaviest length whose vote is in one (a plate half
    hidden for many frames reads consistently short, but never in a valid format)."""
    by_length: dict[int, float] = defaultdict(float)
    for read in reads:
        by_length[len(read.text)] += read.confidence
    lengths = sorted(by_length, key=lambda n: (by_length[n], n), reverse=True)
    first = vote_length(reads, lengths[0], rules)
    if rules.formats and first.fmt is None:
        for length in lengths[1:]:
            candidate = vote_length(reads, length, rules)
            if candidate.fmt is not None:
                return candidate
    return first


def clusters(reads: Sequence[TextRead], max_distance: int) -> list[list[TextRead]]:
    """Greedy grouping, heaviest read first: a read joins the first group whose seed is close enough."""
    groups: list[list[TextRead]] = []
    for read in sorted(reads, key=lambda r: r.confidence, reverse=True):
        for group in groups:
            if levenshtein(group[0].text, read.text) <= max_distance:
                group.append(read)
                break
        else:
            groups.append([read])
    return groups


def heaviest_group(groups: list[list[TextRead]], rules: VoteRules) -> list[TextRead]:
    """The heaviest group whose vote is in one of the formats, else the heaviest group.

    With formats, a plate entering the picture or half hidden is often read short for many frames in a row
    (a group of its own, heavier than the few full reads); such a vote is never in a valid format.
    """
    def weight(group: list[TextRead]) -> float:
        return sum(r.confidence for r in group)

    if rules.formats:
        valid = [g for g in groups if vote(g, rules).fmt is not None]
        if valid:
            return max(valid, key=weight)
    return max(groups, key=weight)


def supports(read: str, text: str, max_distance: int) -> bool:
    """A read agrees with the consensus text when within the edit distance, or when it is a part of it (two
    characters or more): a plate entering the picture or partly hidden reads short but consistently."""
    return levenshtein(read, text) <= max_distance or (len(read) >= 2 and read in text)
