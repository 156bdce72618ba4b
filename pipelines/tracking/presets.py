"""Named plate-format presets (`formats: [uk, de, kr]`): a country's plate pattern over normalised text.

Patterns apply to text as the consensus sees it (pipelines/tracking/formats.py normalize_text): upper case,
separators dropped, a character the reader has no glyph for kept as '?'. Shapes are written with L (letter),
D (digit), U (a character the reader may not be able to name: '?' or a Hangul letter) and literal regex for
the rest, so each preset reads like the plates it describes.
"""

from __future__ import annotations

import re

_LETTER = "[A-Z]"
_DIGIT = "[0-9]"
_UNKNOWN = "[?\uac00-\ud7a3]"  # the placeholder, or a Hangul syllable for a reader that has the glyphs
_SHAPE_CLASSES = {"L": _LETTER, "D": _DIGIT, "U": _UNKNOWN}


def shape(*shapes: str) -> str:
    """Regex for plates of any of the shapes, e.g. shape("LLDDLLL") -> '[A-Z]{2}[0-9]{2}[A-Z]{3}'."""
    parts = []
    for text in shapes:
        runs = re.findall(r"L+|D+|U+", text)
        if "".join(runs) != text:
            raise ValueError(f"plate shape {text!r}: expected only the letters L, D and U")
        parts.append("".join(f"{_SHAPE_CLASSES[run[0]]}{{{len(run)}}}" for run in runs))
    return parts[0] if len(parts) == 1 else "|".join(f"(?:{p})" for p in parts)


# Letters some countries leave out because they read like digits or each other (why a position class narrows).
_FR_IT_LETTER = "[A-HJ-NPR-TV-Z]"  # no I, O, Q, U
_ES_LETTER = "[B-DF-HJ-NPR-TV-Z]"  # consonants only, no Ñ or Q

PRESETS: dict[str, str] = {
    # United Kingdom since 2001: AB12 CDE (area, age, random)
    "uk": shape("LLDDLLL"),
    # Germany: 1-3 letter district, 1-2 letters, 1-4 digits (no leading 0), E (electric) or H (historic);
    # at most 8 characters before the suffix
    "de": r"(?=[A-ZÄÖÜ0-9]{3,8}[EH]?$)[A-ZÄÖÜ]{1,3}[A-Z]{1,2}[1-9][0-9]{0,3}[EH]?",
    # France (SIV, since 2009): AB-123-CD
    "fr": f"{_FR_IT_LETTER}{{2}}[0-9]{{3}}{_FR_IT_LETTER}{{2}}",
    # Italy (since 1994): AB 123 CD
    "it": f"{_FR_IT_LETTER}{{2}}[0-9]{{3}}{_FR_IT_LETTER}{{2}}",
    # Spain (since 2000): 1234 BCD
    "es": f"[0-9]{{4}}{_ES_LETTER}{{3}}",
    # Netherlands: the six-character side codes 4 to 14 (XX-99-99 ... 999-XX-9)
    "nl": shape(
        "LLDDDD",
        "DDDDLL",
        "DDLLDD",
        "LLDDLL",
        "LLLLDD",
        "DDLLLL",
        "DDLLLD",
        "DLLLDD",
        "LLDDDL",
        "LDDDLL",
        "LLLDDL",
        "LDDLLL",
        "DLLDDD",
        "DDDLLD",
    ),
    # Poland: 2-letter district + 5 characters, or 3-letter district + 4 or 5; at least one digit after it
    "pl": r"[A-Z]{2}(?=[A-Z0-9]*[0-9])[A-Z0-9]{5}|[A-Z]{3}(?=[A-Z0-9]*[0-9])[A-Z0-9]{4,5}",
    # Belgium (since 2010): 1-ABC-123
    "be": r"[1-9][A-Z]{3}[0-9]{3}",
    # Switzerland: canton + up to 6 digits
    "ch": r"[A-Z]{2}[1-9][0-9]{0,5}",
    # California (since 1980): 7ABC123
    "us-ca": r"[1-9][A-Z]{3}[0-9]{3}",
    # New York and Texas (current series): ABC1234
    "us-ny": shape("LLLDDDD"),
    "us-tx": shape("LLLDDDD"),
    # South Korea: 2-3 digits, a Hangul letter (the placeholder '?' for a reader without Hangul), 4 digits
    "kr": f"[0-9]{{2,3}}{_UNKNOWN}[0-9]{{4}}",
}


def preset(name: str) -> str:
    """The pattern of a named preset; KeyError naming the presets there are."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown plate format preset {name!r}; presets: {', '.join(sorted(PRESETS))}") from None
