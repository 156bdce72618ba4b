"""Per-track consensus: confidence-weighted label votes, OCR text consensus, plate formats, known lists."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.tracking.formats import (
    CONFUSABLE,
    UNKNOWN,
    KnownEntry,
    PlateFormat,
    match_format,
    match_known,
    normalize_text,
    partners,
)
from pipelines.tracking.formats import levenshtein as levenshtein  # part of this module's API
from pipelines.tracking.textvote import TextRead, VoteRules, clusters, heaviest_group, supports, vote

__all__ = [
    "ConsensusOptions", "KnownEntry", "LabelVotes", "PlateFormat", "TextRead", "TextVotes", "check_read",
    "label_consensus", "levenshtein", "match_format", "match_known", "normalize_text", "text_consensus",
]


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
        "agrees when within cluster_max_distance of the text or a part of it, as a half-hidden plate reads; "
        "and at every position the winning character must hold this share of the weighted vote).",
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
    confusable: list[str] = Field(
        default_factory=lambda: list(CONFUSABLE),
        description="OCR: pairs of characters the reader mistakes for each other (two characters each).",
    )
    confusable_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="OCR, with formats: how much a read of a character a format cannot have at a position counts "
        "for its confusable partner (0 read as O where a digit belongs). 0: only characters some read gave can win.",
    )
    unknown_character: str | None = Field(
        default=UNKNOWN,
        description="OCR: what a character that is neither letter, digit nor separator becomes (what a reader "
        "prints for a glyph it has not got, e.g. a Hangul letter); formats may allow it at a position. "
        "null drops such characters.",
    )

    @field_validator("confusable")
    @classmethod
    def _pairs(cls, value: list[str]) -> list[str]:
        bad = [pair for pair in value if len(pair) != 2 or pair[0] == pair[1]]
        if bad:
            raise ValueError(f"confusable pairs must be two different characters each, got {bad}")
        return value

    @field_validator("unknown_character")
    @classmethod
    def _placeholder(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value.isalnum()):
            raise ValueError(f"unknown_character must be one character that is not a letter or digit, got {value!r}")
        return value

    def vote_rules(self) -> VoteRules:
        """What the OCR vote needs of these options."""
        return VoteRules(tuple(self.formats), partners(self.confusable), self.confusable_weight)


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


class TextVotes:
    """OCR reads of one track and their consensus string."""

    def __init__(self, max_history: int = 50, normalize: bool = True, unknown: str | None = UNKNOWN) -> None:
        self.max_history = max_history
        self.normalize = normalize
        self.unknown = unknown
        self.count = 0  # every non-empty read added, also those max_history dropped since
        self.whole = 0  # those of them that were not partial
        self.reads: list[TextRead] = []

    def add(self, result: Mapping[str, Any], partial: bool = False) -> bool:
        """Record one OCR result {"text","confidence","char_confidences"}; empty reads are not counted.

        partial: the crop touched the picture's edge. Partial reads vote only until the track has min_reads
        whole ones, and never count towards min_reads: a plate leaving the picture reads its last character
        half cut (U as I) and would otherwise settle on it."""
        raw = str(result.get("text") or "")
        chars = result.get("char_confidences")
        if self.normalize:
            text, conf = normalize_text(raw, chars, self.unknown)
        else:
            text, conf = raw, [float(c) for c in chars] if chars is not None and len(chars) == len(raw) else None
        if not text:
            return False
        self.reads.append(TextRead(text, max(float(result.get("confidence") or 0.0), 1e-6), conf or [], partial))
        self.count += 1
        self.whole += not partial
        _keep_heaviest(self.reads, self.max_history, lambda r: r.confidence)
        return True

    def merge(self, other: TextVotes) -> None:
        """Take in another track's reads (the same vehicle, tracked twice): the most confident are kept."""
        self.reads.extend(other.reads)
        self.count += other.count
        self.whole += other.whole
        _keep_heaviest(self.reads, self.max_history, lambda r: r.confidence)

    def __len__(self) -> int:
        return self.count

    def result(self, options: ConsensusOptions) -> dict[str, Any] | None:
        """Consensus text with agreement, format name or flag, known-list match; None before any read."""
        if not self.reads:
            return None
        rules = options.vote_rules()
        whole = [r for r in self.reads if not r.partial]
        reads = whole if len(whole) >= options.min_reads else self.reads
        total = sum(r.confidence for r in reads)
        if options.text_method == "cluster":
            group = heaviest_group(clusters(reads, options.cluster_max_distance), rules)
        else:
            group = list(reads)
        voted = vote(group, rules)
        support = [r for r in reads if supports(r.text, voted.text, options.cluster_max_distance)]
        agreement = sum(r.confidence for r in support) / total
        exact = [r.confidence for r in group if r.text == voted.text] or [r.confidence for r in group]
        # the weighted vote must be as decisive as the reads: a position the reads split on does not settle
        decisive = min(voted.shares, default=0.0) >= options.min_agreement - 1e-9
        return self._describe(voted.text, voted.shares, agreement, sum(exact) / len(exact), decisive, options)

    def _describe(
        self, text: str, shares: list[float], agreement: float, confidence: float, decisive: bool,
        options: ConsensusOptions,
    ) -> dict[str, Any]:
        known = match_known(text, options.known, options.known_max_distance, options.normalize)
        read_text = text
        if known is not None and options.snap_to_known:
            text = known["plate"]
        fmt = match_format(text, options.formats)
        settled = self.whole >= options.min_reads and agreement >= options.min_agreement and decisive
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
    votes = TextVotes(options.max_history, options.normalize, options.unknown_character)
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
    norm = normalize_text(text, unknown=options.unknown_character)[0] if options.normalize else text
    fmt = match_format(norm, options.formats)
    return {
        "format": fmt,
        "flagged": bool(options.formats) and fmt is None,
        "known": match_known(norm, options.known, options.known_max_distance, options.normalize),
    }
