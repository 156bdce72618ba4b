"""edgewatch pipelines: pure compute, numpy image in, supervision.Detections out.

The Roboflow-style one-shot helpers are importable from here (`from pipelines import two_stage`); they are
loaded on first use so that `import pipelines.models` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "two_stage": "pipelines.oneshot",
    "two_stage_ocr": "pipelines.oneshot",
    "infer": "pipelines.oneshot",
    "infer_on_stream": "pipelines.oneshot",
    "clip_compare": "pipelines.embed.similarity",
    "clip_similarity": "pipelines.embed.similarity",
    "parse_vlm_output": "pipelines.vlm",
    "load_model": "pipelines.models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
