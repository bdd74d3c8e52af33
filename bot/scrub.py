"""Credentials out of text: the environments' prompt tokens, the bot's own secrets, and anything
shaped like a GitHub, Slack, AWS or Anthropic credential, an `Authorization:` value or a URL's
password, each replaced by `MARKER`.

`scrub` (the patterns) runs inside the escaping boundary (bot/gateway_text.py `escape`, which every
piece of outside text passes through on its way to Slack) and on logged outside values
(bot/logs.py `outside`); a `Scrubber` adds the configured secrets and runs where messages, views,
acknowledgements and files leave the bot (bot/slack/chat.py `ScrubbedChat`, the response_url
replies). Long text is scrubbed whole before it is split, so a credential cut in two at a split
point is still found.

The container's prompt server uses the same marker and patterns for its /status and output file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

MARKER: Final = "[redacted]"

# An environment's prompt token (bot/prompt_tokens.py): `uatp_` and 43 urlsafe base64 characters.
PROMPT_TOKEN: Final = re.compile(r"uatp_[A-Za-z0-9_-]{20,}")

# (pattern, replacement): the replacement keeps what names the credential, drops its value. No
# word boundaries: a token glued to the word before it (`tokenghp_…`) is still a token.
PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (PROMPT_TOKEN, MARKER),
    # GitHub: ghp_ (personal), gho_ (OAuth), ghu_ (user-to-server), ghs_ (server-to-server),
    # ghr_ (refresh) + 36 base62; fine-grained PATs github_pat_ + 82 [A-Za-z0-9_].
    # https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/
    # https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/about-authentication-to-github#githubs-token-formats
    (re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"), MARKER),
    (re.compile(r"github_pat_[A-Za-z0-9_]{20,}"), MARKER),
    # Slack: xoxb- (bot), xoxp- (user), xoxa- / xoxr- (workspace access / refresh), xapp- (app).
    # https://api.slack.com/authentication/token-types
    (re.compile(r"xox[bpar]-[A-Za-z0-9-]{10,}"), MARKER),
    (re.compile(r"xapp-[A-Za-z0-9-]{10,}"), MARKER),
    # AWS access key ids: AKIA (long-term) / ASIA (temporary) + 16 upper-case letters and digits.
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-unique-ids
    (re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}"), MARKER),
    # The secret access key as the credentials/config files and the environment name it.
    # https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-files.html
    (
        re.compile(r"(?i)(aws_secret_access_key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{16,}"),
        r"\1" + MARKER,
    ),
    # Anthropic API keys: sk-ant- (e.g. sk-ant-api03-…).
    # https://docs.anthropic.com/en/api/getting-started#authentication
    (re.compile(r"sk-ant-[A-Za-z0-9_-]{10,}"), MARKER),
    # An Authorization header's credentials, after its scheme (Bearer, Basic, token, …).
    # https://www.rfc-editor.org/rfc/rfc9110#name-authorization
    (
        re.compile(
            r"(?i)((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
            r"(?:(?:bearer|basic|token|digest|negotiate)\s+)?)[^\s\"'<>&,;]+"
        ),
        r"\1" + MARKER,
    ),
    # A URL's userinfo with a password: scheme://user:password@host.
    # https://www.rfc-editor.org/rfc/rfc3986#section-3.2.1
    # (The look-behind starts a scheme only where a run of scheme characters starts, and the user
    # part holds no colon: without both, a long run of letters takes quadratic time.)
    (
        re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*://)[^\s/?#@<>|:]+:[^\s/?#@<>|]+@"),
        r"\1" + MARKER + "@",
    ),
)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each of `secrets` and every credential-shaped part replaced by MARKER."""
    for secret in secrets:
        text = text.replace(secret, MARKER)
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class Scrubber:
    """`scrub` with the bot's configured secrets (the master prompt token among them)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so a secret that contains another is replaced whole
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def text(self, text: str) -> str:
        return scrub(text, self.secrets)

    def value(self, value: Any) -> Any:
        """Every string in a JSON-like value (Block Kit blocks, a view) scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value
