"""Percentiles, ratios, and results as JSON.

Two percentile methods, each kept where it was first used so that numbers stay comparable with earlier
runs: `percentiles` interpolates linearly between the closest ranks (numpy's default; http_bench),
`nearest_rank` returns a measured value (delivery_bench). Results are frozen dataclasses; `to_json`
writes any of them (nested dataclasses, mappings, tuples; NaN becomes null).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

NAN = math.nan


def percentiles(values: Sequence[float], *qs: float) -> tuple[float, ...]:
    """The qs-th percentiles (0..100), interpolated linearly (numpy's default); NaN for no values."""
    if not values:
        return tuple(NAN for _ in qs)
    return tuple(float(x) for x in np.percentile(values, qs))


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return NAN
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def ratio(a: float, b: float) -> float:
    """a / b; NaN where b is 0 (nothing measured) rather than an exception in the middle of a report."""
    return a / b if b else NAN


def mean2(a: float, b: float) -> float:
    """The mean of a measurement taken before and one taken after."""
    return (a + b) / 2


def drift(before: float, after: float) -> float:
    """How much a limit measured before and after differs: |before - after| / their mean."""
    return ratio(abs(before - after), mean2(before, after))


def jsonable(value: object) -> Any:
    """Frozen dataclasses (fields only, not properties), mappings (keys as strings), sequences, paths,
    datetimes and numbers as plain JSON values; NaN and infinities as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"no JSON for {type(value).__name__}")


def to_json(result: object) -> str:
    return json.dumps(jsonable(result), allow_nan=False) + "\n"


def write_json(result: object, path: Path) -> None:
    path.write_text(to_json(result))
