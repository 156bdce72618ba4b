"""Hostile values in an otherwise valid config (issue 16 items 8, 13): refused at validation, naming field and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config
from tests.daemon.test_config import BASE, replace, write

CASES = [
    # pydantic reads the string "1e400" as inf; the shutdown's thread waits overflowed on it (OverflowError)
    ("inf shutdown", BASE + "shutdown_timeout_s: 1e400\n", "shutdown_timeout_s (line 27)", "or equal to 3600"),
    ("huge shutdown", BASE + "shutdown_timeout_s: 1.0e+300\n", "(line 27): shutdown_timeout_s", "must be within"),
    ("nan interval", BASE + "stats_interval_s: nan\n", "stats_interval_s (line 27)", "got 'nan'"),
    ("inf interval", BASE + "stats_interval_s: 1e400\n", "stats_interval_s (line 27)", "a finite number, got inf"),
    ("inf plug-in duration", replace("    type: jsonl\n", "    type: jsonl\n    flush_interval_s: 1e400\n"),
     "sinks[0].flush_interval_s (line 22)", "expected a finite number, got inf"),
    ("huge plug-in duration", replace("    type: jsonl\n", "    type: jsonl\n    flush_interval_s: 1e9\n"),
     "sinks[0].flush_interval_s (line 22)", "a duration of at most 1e+06 seconds"),
    ("long pipeline name", replace("name: p\n", "name: " + "p" * 200 + "\n"), "pipeline.name (line 10)",
     "at most 128 characters, got 200"),
    ("10 MB pipeline name", replace("name: p\n", "name: ${{EW_BIG}}\n"), "(line 10): pipeline.name",
     "a string of 10485760 characters"),
    ("huge max_detections", replace("    type: yolox\n", "    type: yolox\n    max_detections: 1" + "0" * 30 + "\n"),
     "(line 4): models.det.max_detections", "numbers must be within"),
]


@pytest.mark.parametrize(("case", "text", "where", "words"), CASES, ids=[c[0] for c in CASES])
def test_hostile_values_are_refused_with_field_and_line(
    tmp_path: Path, models_dir: Path, case: str, text: str, where: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={"EW_BIG": "p" * 10 * 1024 * 1024})
    message = str(info.value)
    assert where in message and words in message and "\n" not in message, message[:500]


def test_a_bad_model_entry_is_one_error_not_two(tmp_path: Path, models_dir: Path) -> None:
    text = replace("    type: yolox\n", "    type: yolox\n    confidence_threshold: 7\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    message = str(info.value)
    assert "models.det.confidence_threshold (line 4)" in message
    assert "unknown model" not in message and len(re.findall(r"\(line \d+\)", message)) == 1, message
