"""Benchmarks for uat-bot, each reported as a ratio against a baseline measured in the same run.

`python -m bench` (or `make bench`) imports every module in this package whose name does not
start with an underscore, calls its `run() -> list[Row]`, and prints one table. Only loopback
traffic is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Row", "fmt_ms", "fmt_s", "percentile", "ratio"]


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, the baseline it is compared with, and figure/baseline."""

    name: str
    figure: str
    baseline: str
    ratio: float | None
    note: str = ""


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile (0-100) by the nearest-rank method: a value that was measured."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(figure: float, baseline: float) -> float | None:
    return figure / baseline if baseline > 0 else None


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s"
