"""Give a pip-less virtual environment pip (Debian's python3 lacks ensurepip without python3-venv).

Usage: python3 -m venv --without-pip .venv && .venv/bin/python scripts/bootstrap_pip.py
Downloads pip's wheel from PyPI and runs pip from inside the wheel to install itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path


def main() -> int:
    with urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=60) as response:
        release = json.load(response)
    wheel = next(u for u in release["urls"] if u["filename"].endswith(".whl"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / wheel["filename"]
        with urllib.request.urlopen(wheel["url"], timeout=120) as response:
            path.write_bytes(response.read())
        command = [sys.executable, f"{path}/pip", "install", "--no-index", "-q", str(path)]
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
