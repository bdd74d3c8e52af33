"""Documentation generated from the code, so the README cannot drift from it.

`python -m bot.devtools.docs` rewrites the generated parts of README.md (the command reference);
tests/test_docs.py fails when they are out of date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from bot.slack.dispatch import Command, load_commands

START, END = "<!-- commands:start -->", "<!-- commands:end -->"
README = Path(__file__).resolve().parents[2] / "README.md"
CLI_TWINS = ("staging", "promote", "latest", "rollback", "images", "cleanup", "logs")
ASKS_NOTHING = ("images", "staging", "logs")  # no confirmation, so no --yes to answer it
TERMINAL_ONLY = {"logs": " [--follow]"}  # what only the terminal's twin takes


def command_help(name: str) -> str:
    """A command's help text: the same words in Slack and in the README."""
    command = load_commands()[0][name]
    return f"{command.summary}\n\n{command.description}".strip()


def terminal_usage(command: Command) -> str:
    usage = command.usage.replace("/uat ", "uat-bot ", 1) + TERMINAL_ONLY.get(command.name, "")
    return usage if command.name in ASKS_NOTHING else f"{usage} [--yes]"


def _entry(command: Command) -> str:
    lines = [f"### `{command.usage}`", "", command.summary]
    if command.description:
        lines += ["", command.description]
    if command.name in CLI_TWINS:
        lines += ["", f"From a terminal: `{terminal_usage(command)}`."]
    return "\n".join(lines)


def command_reference() -> str:
    table, _ = load_commands()
    entries = ["### `/uat help [command]`", "", "What I can do; `/uat help <command>` for one."]
    return "\n\n".join(["\n".join(entries), *(_entry(c) for c in table.values())])


def with_reference(readme: str) -> str:
    block = f"{START}\n{command_reference()}\n{END}"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(readme):
        raise ValueError(f"README.md has no {START} ... {END} section")
    return pattern.sub(lambda _: block, readme)


def main() -> int:
    README.write_text(with_reference(README.read_text()))
    print(f"updated the command reference in {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
