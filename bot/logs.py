"""Logging set-up, with a filter that keeps configured secrets out of every log line."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TextIO

from bot.scrub import scrub


class RedactSecrets(logging.Filter):
    """Replace each configured secret in a record's final message with `***`, and anything
    shaped like a credential (an environment's prompt token among them) with `[redacted]`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        redacted = message
        for secret in self.secrets:
            redacted = redacted.replace(secret, "***")
        redacted = scrub(redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_text:
            for secret in self.secrets:
                record.exc_text = record.exc_text.replace(secret, "***")
            record.exc_text = scrub(record.exc_text)
        return True


def configure_logging(
    secrets: Iterable[str], level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Log to stderr through the redacting filter (installed on the handler: it sees all)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # slack_sdk says at INFO each time its retry handlers retry a call; what then fails is
    # logged by the bot, once.
    logging.getLogger("slack_sdk.web.async_base_client").setLevel(max(level, logging.WARNING))


OUTSIDE_LIMIT = 200  # characters of one outside value in a log line


def outside(value: object, limit: int = OUTSIDE_LIMIT) -> str:
    """Outside text (headers, payload fields, remote errors) made safe for one log line:
    credentials replaced (bot/scrub.py), control characters escaped (a newline cannot forge a
    second line) and cut to `limit` characters."""
    text = scrub(str(value))
    cut = len(text) > limit
    escaped = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit]
    )
    return escaped + ("…" if cut else "")
