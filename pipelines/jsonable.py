"""The one numpy -> JSON converter: results, events and stage outputs as plain JSON values."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def to_jsonable(value: object, ndigits: int | None = None) -> object:
    """`value` with numpy arrays as lists, numpy scalars as Python numbers and mappings' keys as strings.

    Other values pass through unchanged (a JSON encoder decides whether it can write them). With `ndigits`,
    Python floats are rounded, so that published numbers stay short.
    """
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item, ndigits) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item, ndigits) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if ndigits is not None and isinstance(value, float):
        return round(value, ndigits)
    return value
