"""Benchmarks for uat-bot, each reported as a ratio against a baseline measured in the same run.

`python -m bench` (or `make bench`) imports every module in this package whose name does not
start with an underscore, calls its `run() -> list[Row]`, and prints one table. Only loopback
traffic is used.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "AWS_ENV",
    "Row",
    "alone",
    "boto3_pointed_at",
    "compared",
    "fmt_ms",
    "fmt_s",
    "met",
    "percentile",
    "ratio",
]

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def boto3_pointed_at(url: str) -> Iterator[None]:
    """boto3's variables pointing at moto's server `url` for the duration, restored after."""
    env = {**AWS_ENV, "AWS_ENDPOINT_URL": url}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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


def met(ok: bool) -> str:
    """A note's `met:` word: "yes", or "NO" in capitals so a missed goal stands out."""
    return "yes" if ok else "NO"


def compared(
    name: str, figure: float, baseline: float, note: str = "", fmt: Callable[[float], str] = fmt_ms
) -> Row:
    """The row of a `figure` measured against its `baseline`: both shown by `fmt`, and the ratio."""
    return Row(name, fmt(figure), fmt(baseline), ratio(figure, baseline), note)


def alone(name: str, figure: str, note: str) -> Row:
    """The row of a figure that has no baseline to compare with (no ratio)."""
    return Row(name, figure, "-", None, note)
