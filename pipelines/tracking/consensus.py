"""Per-track consensus: confidence-weighted label votes, OCR text consensus, plate formats, known lists."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PlateFormat(BaseModel):
    """One named text format, e.g. a country's plate pattern."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Name reported with texts that match, e.g. 'uk'.")
    pattern: str = Field(
        ..., description="Regular expression the whole normalised text must match, e.g. '[A-Z]{2}[0-9]{2}[A-Z]{3}'."
    )

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


class ConsensusOptions(BaseModel):
    """How the reads of one track are combined into one answer."""

    model_config = ConfigDict(extra="forbid")

    min_reads: int = Field(
        default=3, ge=1, description="Reads (non-empty) a track needs before its consensus is settled."
    )
    min_agreement: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="Share of the read weight that must agree before the consensus is settled (OCR: a read "
        "agrees when within cluster_max_distance of the text or a part of it, as a half-hidden plate reads).",
    )
    max_history: int = Field(default=50, ge=1, description="Reads kept per track; the lowest-confidence ones go first.")
    text_method: Literal["cluster", "position"] = Field(
        default="cluster",
        description="OCR: 'cluster' groups reads by edit distance and votes per position inside the heaviest "
        "group (with formats: the heaviest whose vote is in one); 'position' votes per position over all reads "
        "of the most common length.",
    )
    normalize: bool = Field(
        default=True, description="OCR: upper-case and keep only letters and digits before voting (plates)."
    )
    cluster_max_distance: int = Field(
        default=2, ge=0, description="OCR: reads within this edit distance of a group's first read join the group."
    )
    formats: list[PlateFormat] = Field(
        default_factory=list,
        description="OCR: named formats; the consensus reports the first that matches, or is flagged.",
    )
    settle_requires_format: bool = Field(
        default=False, description="OCR: a text that matches none of `formats` never counts as settled."
    )
    known: list[KnownEntry] = Field(default_factory=list, description="OCR: allow/deny lists of known texts.")
    known_max_distance: int = Field(default=1, ge=0, description="OCR: edit distance still counted as a known match.")
    snap_to_known: bool = Field(
        default=False,
        description="OCR: report the known text instead of the read one when they match within tolerance.",
    )


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


def normalize_text(text: str, confidences: Sequence[float] | None = None) -> tuple[str, list[float] | None]:
    """Upper-case letters and digits only; per-character confidences follow the kept characters."""
    keep = [i for i, ch in enumerate(text) if ch.isalnum()]
    kept_conf = None
    if confidences is not None and len(confidences) == len(text):
        kept_conf = [float(confidences[i]) for i in keep]
    return "".join(text[i] for i in keep).upper(), kept_conf


def match_format(text: str, formats: Sequence[PlateFormat]) -> str | None:
    """Name of the first format the whole text matches, or None."""
    for fmt in formats:
        if fmt.regex.fullmatch(text):
            return fmt.name
    return None


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


def _keep_heaviest(items: list[Any], limit: int, weight: Any) -> None:
    if len(items) > limit:
        items.sort(key=weight, reverse=True)
        del items[limit:]


class LabelVotes:
    """Confidence-weighted (soft) vote over classifier results of one track."""

    def __init__(self, max_history: int = 50) -> None:
        self.max_history = max_history
        self.count = 0  # every read added, also those max_history dropped since
        self.reads: list[dict[str, Any]] = []
        self._cached: tuple[ConsensusOptions, dict[str, Any] | None] | None = None  # events ask every frame

    def add(self, result: Mapping[str, Any]) -> bool:
        """Record one classifier result {"class","class_id","confidence"[,"top"]}; its "top" list votes.

        A result without a class ({"class": None}: the stage ran but found nothing to classify) is not counted.
        """
        entries = result.get("top") or [result]
        if any(e.get("class") is None for e in entries):
            return False
        self.reads.append({"entries": [(e["class"], e.get("class_id"), float(e["confidence"])) for e in entries]})
        self.count += 1
        self._cached = None
        _keep_heaviest(self.reads, self.max_history, lambda r: r["entries"][0][2])
        return True

    def __len__(self) -> int:
        return self.count

    def result(self, options: ConsensusOptions) -> dict[str, Any] | None:
        """Winning class with its vote share as agreement; None before the first read."""
        if self._cached is None or self._cached[0] is not options:
            self._cached = (options, self._vote(options))
        return self._cached[1]

    def _vote(self, options: ConsensusOptions) -> dict[str, Any] | None:
        if not self.reads:
            return None
        weight: dict[str, float] = defaultdict(float)
        class_ids: dict[str, Any] = {}
        for read in self.reads:
            for name, class_id, confidence in read["entries"]:
                weight[name] += confidence
                class_ids.setdefault(name, class_id)
        total = sum(weight.values()) or 1.0
        ranked = sorted(weight.items(), key=lambda kv: kv[1], reverse=True)
        winner = ranked[0][0]
        wins = [r["entries"][0][2] for r in self.reads if r["entries"][0][0] == winner]
        agreement = ranked[0][1] / total
        return {
            "class": winner,
            "class_id": class_ids[winner],
            "confidence": sum(wins) / len(wins) if wins else 0.0,
            "top": [{"class": n, "class_id": class_ids[n], "confidence": w / total} for n, w in ranked[:5]],
            "agreement": agreement,
            "reads": self.count,
            "settled": self.count >= options.min_reads and agreement >= options.min_agreement,
        }


@dataclass
class TextRead:
    """One OCR read, normalised, with its weight and per-character confidences."""

    text: str
    confidence: float
    chars: list[float] = field(default_factory=list)


def _vote_positions(reads: Sequence[TextRead], length: int) -> tuple[str, list[float]]:
    """Per-position vote over the reads of one length; returns the text and each position's vote share."""
    same = [r for r in reads if len(r.text) == length]
    text, shares = [], []
    for pos in range(length):
        votes: dict[str, float] = defaultdict(float)
        for read in same:
            votes[read.text[pos]] += read.chars[pos] if len(read.chars) == length else read.confidence
        char, weight = max(votes.items(), key=lambda kv: kv[1])
        text.append(char)
        shares.append(weight / (sum(votes.values()) or 1.0))
    return "".join(text), shares


def _vote(reads: Sequence[TextRead], formats: Sequence[PlateFormat]) -> tuple[str, list[float]]:
    """Vote over the heaviest length; with formats, the heaviest length whose vote matches one (a plate
    half hidden for many frames reads consistently short, but never in a valid format)."""
    by_length: dict[int, float] = defaultdict(float)
    for read in reads:
        by_length[len(read.text)] += read.confidence
    lengths = sorted(by_length, key=lambda n: (by_length[n], n), reverse=True)
    first = _vote_positions(reads, lengths[0])
    if formats and match_format(first[0], formats) is None:
        for length in lengths[1:]:
            candidate = _vote_positions(reads, length)
            if match_format(candidate[0], formats) is not None:
                return candidate
    return first


def _clusters(reads: Sequence[TextRead], max_distance: int) -> list[list[TextRead]]:
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


def _supports(read: str, text: str, max_distance: int) -> bool:
    """A read agrees with the consensus text when within the edit distance, or when it is a part of it (two
    characters or more): a plate entering the picture or partly hidden reads short but consistently."""
    return levenshtein(read, text) <= max_distance or (len(read) >= 2 and read in text)


def _heaviest_group(groups: list[list[TextRead]], formats: Sequence[PlateFormat]) -> list[TextRead]:
    """The heaviest group whose vote is in one of the formats, else the heaviest group.

    With formats, a plate entering the picture or half hidden is often read short for many frames in a row
    (a group of its own, heavier than the few full reads); such a vote is never in a valid format.
    """
    def weight(group: list[TextRead]) -> float:
        return sum(r.confidence for r in group)

    if formats:
        valid = [g for g in groups if match_format(_vote(g, formats)[0], formats) is not None]
        if valid:
            return max(valid, key=weight)
    return max(groups, key=weight)


class TextVotes:
    """OCR reads of one track and their consensus string."""

    def __init__(self, max_history: int = 50, normalize: bool = True) -> None:
        self.max_history = max_history
        self.normalize = normalize
        self.count = 0  # every non-empty read added, also those max_history dropped since
        self.reads: list[TextRead] = []

    def add(self, result: Mapping[str, Any]) -> bool:
        """Record one OCR result {"text","confidence","char_confidences"}; empty reads are not counted."""
        raw = str(result.get("text") or "")
        chars = result.get("char_confidences")
        if self.normalize:
            text, conf = normalize_text(raw, chars)
        else:
            text, conf = raw, [float(c) for c in chars] if chars is not None and len(chars) == len(raw) else None
        if not text:
            return False
        self.reads.append(TextRead(text, max(float(result.get("confidence") or 0.0), 1e-6), conf or []))
        self.count += 1
        _keep_heaviest(self.reads, self.max_history, lambda r: r.confidence)
        return True

    def __len__(self) -> int:
        return self.count

    def result(self, options: ConsensusOptions) -> dict[str, Any] | None:
        """Consensus text with agreement, format name or flag, known-list match; None before any read."""
        if not self.reads:
            return None
        total = sum(r.confidence for r in self.reads)
        if options.text_method == "cluster":
            group = _heaviest_group(_clusters(self.reads, options.cluster_max_distance), options.formats)
        else:
            group = list(self.reads)
        text, shares = _vote(group, options.formats)
        support = [r for r in self.reads if _supports(r.text, text, options.cluster_max_distance)]
        agreement = sum(r.confidence for r in support) / total
        exact = [r.confidence for r in group if r.text == text] or [r.confidence for r in group]
        return self._describe(text, shares, agreement, sum(exact) / len(exact), options)

    def _describe(
        self, text: str, shares: list[float], agreement: float, confidence: float, options: ConsensusOptions
    ) -> dict[str, Any]:
        known = match_known(text, options.known, options.known_max_distance, options.normalize)
        read_text = text
        if known is not None and options.snap_to_known:
            text = known["plate"]
        fmt = match_format(text, options.formats)
        settled = self.count >= options.min_reads and agreement >= options.min_agreement
        return {
            "text": text,
            "confidence": confidence,
            "char_confidences": shares,
            "agreement": agreement,
            "reads": self.count,
            "settled": settled and (fmt is not None or not options.settle_requires_format),
            "format": fmt,
            "flagged": bool(options.formats) and fmt is None,
            "known": known,
            **({"read_text": read_text} if read_text != text else {}),
        }


def text_consensus(reads: Sequence[Mapping[str, Any]], options: ConsensusOptions) -> dict[str, Any] | None:
    """One-shot consensus over a list of OCR results (the per-track accumulator, without a track)."""
    votes = TextVotes(options.max_history, options.normalize)
    for read in reads:
        votes.add(read)
    return votes.result(options)


def label_consensus(reads: Sequence[Mapping[str, Any]], options: ConsensusOptions) -> dict[str, Any] | None:
    """One-shot vote over a list of classifier results."""
    votes = LabelVotes(options.max_history)
    for read in reads:
        votes.add(read)
    return votes.result(options)


def check_read(text: str, options: ConsensusOptions) -> dict[str, Any]:
    """Format and known-list verdict for a single read: {"format","flagged","known"}."""
    norm = normalize_text(text)[0] if options.normalize else text
    fmt = match_format(norm, options.formats)
    return {
        "format": fmt,
        "flagged": bool(options.formats) and fmt is None,
        "known": match_known(norm, options.known, options.known_max_distance, options.normalize),
    }
