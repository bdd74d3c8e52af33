"""Every user-facing sentence and Block Kit structure the bot produces, in one place.

Tests assert against these constants and builders rather than copies of the wording.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Block = dict[str, Any]

# Errors every command can meet.
SOMETHING_WENT_WRONG = (
    "Something went wrong (ref `{ref}`). The details are in the bot's log under that reference."
)
UNKNOWN_COMMAND = "`/uat {word}` is not a command."
DID_YOU_MEAN = " Did you mean `/uat {suggestions}`?"
SEE_HELP = " Type `/uat help` to see what I can do."
BAD_QUOTING = "I could not read that: {problem}. Check your quotes and try again."
DEPLOYERS_ONLY = "Only deployers can {action}. Ask {who}."
NO_DEPLOYERS = "nobody yet: an operator sets UAT_DEPLOYERS"

HELP_HEADER = "*`/uat` — UAT environments from Slack*"
HELP_SUMMARY = "what I can do; `/uat help <command>` for one command's usage"
HELP_FOOTER = "`/uat help <command>` shows one command's usage."


def text_block(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def context_block(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def something_went_wrong(ref: str) -> str:
    return SOMETHING_WENT_WRONG.format(ref=ref)


def unknown_command(word: str, suggestions: Sequence[str]) -> str:
    text = UNKNOWN_COMMAND.format(word=word)
    if suggestions:
        text += DID_YOU_MEAN.format(suggestions="` or `/uat ".join(suggestions))
    return text + SEE_HELP


def bad_quoting(problem: str) -> str:
    return BAD_QUOTING.format(problem=problem)


def deployers_only(action: str, deployers: Iterable[str]) -> str:
    names = ", ".join(f"<@{user}>" for user in deployers) or NO_DEPLOYERS
    return DEPLOYERS_ONLY.format(action=action, who=names)


def help_overview(summaries: Iterable[tuple[str, str]]) -> str:
    lines = [HELP_HEADER]
    lines += [f"• `/uat {name}` — {summary}" for name, summary in summaries]
    lines.append(HELP_FOOTER)
    return "\n".join(lines)


def command_help(usage: str, description: str) -> str:
    return f"`{usage}`\n{description}".rstrip()


def usage_error(problem: str, usage: str) -> str:
    return f"{problem}\nUsage: `{usage}`"
