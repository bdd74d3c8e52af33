"""A stand-in for the Claude Code CLI in the container tests: prints stream-json like the real one.

    fake_claude.py [--log FILE] -p PROMPT --output-format stream-json --verbose

Anything else on the command line is refused (exit 2), so a test that passes proves the server
calls the agent exactly that way. The prompt's first word picks what it does:

    (anything else)      succeed; the result is the whole prompt, verbatim
    fake:fail            an `is_error` result, "boom" on stderr, exit 1
    fake:crash           "segfault" on stderr, exit 3, no result line
    fake:slow SECONDS    sleep, then succeed
    fake:hang PIDFILE    start a child (same process group), write "<pid> <child pid>" to PIDFILE,
                         then sleep for ten minutes
    fake:orphan PIDFILE  start a grandchild (same process group, its parent gone, its output not
                         the agent's) that sleeps for ten minutes, write its pid to PIDFILE, succeed
    fake:commit NAME     commit the file NAME in the working directory, leave dirty.txt uncommitted
    fake:env NAME        the result is the value of the environment variable NAME, or "<unset>"
    fake:long LINES      say `long_lines(LINES)`, one assistant message each, then succeed

--log FILE appends the prompt (as one JSON string per line) when the run starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

COST_USD = 0.0123
DURATION_MS = 1234
USAGE = {"input_tokens": 10, "output_tokens": 20}
GIT_IDENTITY = ["-c", "user.name=Fake Agent", "-c", "user.email=fake-agent@example.com"]


def long_lines(count: int) -> list[str]:
    """What `fake:long COUNT` says: numbered lines, with characters that take 2 to 4 bytes."""
    tail = "x" * 15
    return [f"line {i:05d} of the long output: Grüße, naïve café, 😀 {tail}" for i in range(count)]


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def say(text: str) -> None:
    emit({"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}})


def finish(result: str, *, is_error: bool = False) -> None:
    emit(
        {
            "type": "result",
            "subtype": "error_during_execution" if is_error else "success",
            "is_error": is_error,
            "result": result,
            "total_cost_usd": COST_USD,
            "duration_ms": DURATION_MS,
            "usage": USAGE,
        }
    )


def parse(argv: list[str]) -> tuple[str, Path | None]:
    log: Path | None = None
    if argv[:1] == ["--log"]:
        log, argv = Path(argv[1]), argv[2:]
    if (
        len(argv) != 5
        or argv[0] != "-p"
        or argv[2:]
        != [
            "--output-format",
            "stream-json",
            "--verbose",
        ]
    ):
        sys.stderr.write(f"fake_claude: unexpected arguments {argv!r}\n")
        sys.exit(2)
    return argv[1], log


def main() -> int:
    prompt, log = parse(sys.argv[1:])
    if log is not None:
        with log.open("a", encoding="utf-8") as out:
            out.write(json.dumps(prompt) + "\n")
    words = prompt.split()
    mode = words[0] if words and words[0].startswith("fake:") else "fake:echo"
    arg = words[1] if len(words) > 1 else ""
    emit({"type": "system", "subtype": "init", "session_id": "fake-session", "cwd": os.getcwd()})
    say(f"Working on it ({mode}).")
    emit(
        {
            "type": "assistant",
            "message": {"content": [{"type": "tool_use", "name": "Bash", "input": {}}]},
        }
    )
    if mode == "fake:fail":
        say("Something broke.")
        sys.stderr.write("boom\n")
        finish("It did not work.", is_error=True)
        return 1
    if mode == "fake:crash":
        sys.stderr.write("segfault\n")
        return 3
    if mode == "fake:slow":
        time.sleep(float(arg or "0.3"))
    elif mode == "fake:hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        pidfile = Path(arg)
        pidfile.with_suffix(".tmp").write_text(f"{os.getpid()} {child.pid}\n")
        pidfile.with_suffix(".tmp").replace(pidfile)
        say("Hanging now.")
        time.sleep(600)
    elif mode == "fake:orphan":
        sleeper = "import time; time.sleep(600)"
        spawn = (
            "import subprocess, sys; "
            f"p = subprocess.Popen([sys.executable, '-c', {sleeper!r}], "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"
        )
        grandchild = subprocess.run(
            [sys.executable, "-c", spawn], capture_output=True, text=True, check=True
        ).stdout.strip()
        Path(arg).write_text(f"{grandchild}\n")
    elif mode == "fake:commit":
        Path(arg).write_text("committed by the fake agent\n")
        subprocess.run(["git", *GIT_IDENTITY, "add", arg], check=True)
        subprocess.run(["git", *GIT_IDENTITY, "commit", "-q", "-m", f"Add {arg}"], check=True)
        Path("dirty.txt").write_text("not committed\n")
    elif mode == "fake:long":
        for line in long_lines(int(arg)):
            say(line)
    elif mode == "fake:env":
        finish(os.environ.get(arg, "<unset>"))
        return 0
    say("All done.")
    finish(prompt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
