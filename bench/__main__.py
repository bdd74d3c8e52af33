"""Run every benchmark module in `bench/` and print one table (`make bench`)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback

import bench
from bench import Row

HEADERS = ("benchmark", "figure", "baseline", "ratio", "note")


def modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules(bench.__path__)
        if not info.name.startswith("_") and not info.ispkg
    )


def run_module(name: str) -> list[Row]:
    started = time.monotonic()
    print(f"running bench.{name} ...", file=sys.stderr, flush=True)
    try:
        module = importlib.import_module(f"bench.{name}")
        rows: list[Row] = module.run()
    except Exception as exc:
        traceback.print_exc()
        rows = [Row(name, "-", "-", None, f"benchmark failed: {type(exc).__name__}: {exc}")]
    print(f"bench.{name} took {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[Row]) -> str:
    cells = [HEADERS] + [
        (
            row.name,
            row.figure,
            row.baseline,
            "-" if row.ratio is None else f"{row.ratio:.2f}x",
            row.note,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]
    right = {3}  # the ratio column reads best right-aligned

    def render(line: tuple[str, ...]) -> str:
        parts = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        return " | ".join(parts).rstrip()

    rule = "-+-".join("-" * width for width in widths)
    return "\n".join([render(cells[0]), rule, *(render(line) for line in cells[1:])])


def main() -> int:
    started = time.monotonic()
    rows: list[Row] = []
    for name in modules():
        rows += run_module(name)
    print(table(rows))
    print(f"\ntotal {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
