"""The README's two commands with a Python too old for uat-bot: one line, at once, nothing built."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.bot import ROOT


def _old_python(tmp_path: Path) -> Path:
    """A Python 3.9: pyenv's when the machine has it, else this one made to report 3.9."""
    for candidate in sorted(Path.home().glob(".pyenv/versions/3.9.*/bin/python3")):
        return candidate
    fake = tmp_path / "python3.9"
    fake.write_text(
        "#!/bin/sh\n"
        '[ "$1" = -c ] || exit 2\n'
        f"exec {sys.executable} -c \"import sys; sys.version_info = (3, 9, 18, 'final', 0); "
        'exec(sys.argv[1])" "$2"\n'
    )
    fake.chmod(0o755)
    return fake


def _make(tmp_path: Path, goal: str, python: str) -> tuple[subprocess.CompletedProcess[str], float]:
    if shutil.which("make") is None:
        pytest.fail("make is not installed (the README's commands need it)")
    started = time.monotonic()
    run = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            f"PYTHON={python}",
            f"VENV={tmp_path / 'venv'}",
            goal,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    return run, time.monotonic() - started


@pytest.mark.parametrize("goal", ["run", "test"])
def test_an_old_python_stops_make_with_one_line_naming_both_versions(
    tmp_path: Path, goal: str
) -> None:
    python = _old_python(tmp_path)
    run, took = _make(tmp_path, goal, str(python))
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert f"{python} is Python 3.9" in lines[0]
    assert "needs Python 3.11 or newer" in lines[0]
    assert f"make PYTHON=python3.12 {goal}" in lines[0]
    assert run.stdout == ""
    assert took < 10
    assert not (tmp_path / "venv").exists(), "nothing is installed for a Python that cannot run it"


def test_a_missing_python_is_named(tmp_path: Path) -> None:
    run, _ = _make(tmp_path, "test", "python3-that-is-not-here")
    assert run.returncode != 0
    [line] = run.stderr.strip().splitlines()
    assert line.endswith(
        "*** python3-that-is-not-here not found; uat-bot needs Python 3.11 or newer"
        " (point make at another one: make PYTHON=python3.12 test).  Stop."
    )
