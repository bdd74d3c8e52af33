"""The two tiers of failure: expected ones shown as written, everything else behind a ref id."""

from __future__ import annotations


class UserError(Exception):
    """An expected failure whose message tells the user what to do; shown as written."""


class ReplacingError(UserError):
    """A UserError answering a button by replacing the message the button was on (a used card,
    or the progress line it became), so nothing is left behind saying "… ing"."""


class UsageError(UserError):
    """A command was called with arguments it does not take."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(f"{message}\n{usage}")
        self.problem = message
        self.usage = usage


class ConfigError(Exception):
    """Settings are missing or invalid; every problem is listed at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"uat-bot is not configured correctly:\n{lines}")
