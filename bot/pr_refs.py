"""How people name a pull request in a command, including the ways Slack pastes one.

Accepted: `PR-42` (any case), `#42`, `42`, `owner/repo#42`, a PR's URL
(`https://github.com/owner/repo/pull/42`, GitHub Enterprise hosts too, with or without a trailing
`/files`, query or fragment), and that URL as Slack sends a pasted or formatted link:
`<https://github.com/owner/repo/pull/42>` or `<https://github.com/owner/repo/pull/42|#42>` (the
label is ignored: the URL says which PR). Anything else is not a PR reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REF = 500  # longer than any URL a person pastes for a PR
_OWNER = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})"
_NAME = r"[A-Za-z0-9._-]{1,100}"
_NUMBER = r"(?P<number>[0-9]{1,9})"
_SHORT = re.compile(rf"(?:(?P<repo>{_OWNER}/{_NAME})#|PR-|#)?{_NUMBER}", re.IGNORECASE)
_URL = re.compile(
    rf"https?://[A-Za-z0-9.-]{{1,253}}(?::[0-9]{{1,5}})?/(?P<repo>{_OWNER}/{_NAME})/pull/{_NUMBER}"
    r"(?:[/?#][^\s<>|]*)?"
)
_SLACK_LINK = re.compile(r"<(?P<url>[^<>|\s]+)(?:\|[^<>]*)?>")
_LEADING_LABELLED_LINK = re.compile(r"\A(\s*)<(https?://[^<>|\s]+/pull/[0-9]+[^<>|\s]*)\|[^<>]*>")


@dataclass(frozen=True)
class PrRef:
    """A PR as a person named it: its number, and its repository when they said which."""

    number: int
    repo: str | None = None


def parse(ref: str) -> PrRef | None:
    """The PR that `ref` names, or None when it names none (see the module docstring)."""
    ref = ref.strip()
    if len(ref) > MAX_REF:
        return None
    link = _SLACK_LINK.fullmatch(ref)
    if link:
        ref = link["url"]
    match = _URL.fullmatch(ref) or (None if link else _SHORT.fullmatch(ref))
    if match is None:
        return None
    number = int(match["number"])
    if number == 0:
        return None
    return PrRef(number, match["repo"])


def drop_leading_label(text: str) -> str:
    """A command's text whose first word is a Slack link to a PR, without the link's label
    (`<url|#42 Fix it> …` -> `<url> …`), so that spaces in a label do not split the PR argument
    into several words. The rest of the text (a prompt's prose) is left as written."""
    return _LEADING_LABELLED_LINK.sub(r"\1<\2>", text, count=1)
