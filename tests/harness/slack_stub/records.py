"""What the stub records and remembers: calls, response_url posts, files, injected faults."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Call:
    """One HTTP call the stub received on ``/api/<method>``.

    ``params`` merges query string and body (form or JSON) with ``blocks``/``attachments``/
    ``view``/``metadata``/``files`` decoded from JSON strings. ``response`` is the JSON the stub
    answered (None when a fault was injected); ``failed_status`` is the HTTP status of an
    injected fault.
    """

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    failed_status: int | None = None
    response: dict[str, Any] | None = None
    at: float = field(default_factory=time.time)  # when the stub received it

    @property
    def ok(self) -> bool:
        """Whether the stub answered ``{"ok": true, ...}``."""
        return self.response is not None and self.response.get("ok") is True

    @property
    def error(self) -> str | None:
        """The Slack error name the stub answered, if any."""
        if self.response is None:
            return None
        err = self.response.get("error")
        return err if isinstance(err, str) else None


@dataclass
class Response:
    """One POST to a ``response_url`` issued by :meth:`SlackStub.new_response_url`.

    ``error`` is None when the stub accepted the payload (HTTP 200 "ok"); otherwise it is the
    error body Slack would send (e.g. ``invalid_blocks``, ``no_text``). ``failed_status`` is set
    when a fault was injected with ``stub.fail("response_url")``.
    """

    url_id: str
    body: dict[str, Any]
    headers: dict[str, str]
    error: str | None = None
    errors: list[str] = field(default_factory=list)
    failed_status: int | None = None
    at: float = field(default_factory=time.time)  # when the stub received it


@dataclass
class StubFile:
    """A file issued by ``files.getUploadURLExternal`` (one entry of :attr:`SlackStub.files`).

    ``content`` is the bytes POSTed to the upload URL (``uploaded`` tells an empty upload from
    none). ``completed`` is set by ``files.completeUploadExternal``, which also sets ``title``
    and, when it shared the file, ``channel``, ``thread_ts`` (the thread root) and
    ``message_ts`` (the message carrying the file; the first one when shared to several
    channels).
    """

    id: str
    name: str
    title: str
    length: int
    content: bytes = b""
    channel: str | None = None
    thread_ts: str | None = None
    message_ts: str | None = None
    completed: bool = False
    uploaded: bool = False


@dataclass
class Fault:
    method: str | None
    status: int
    retry_after: int | None
    remaining: int
    # An ambiguous failure: the call is carried out (a message is stored) before the fault is
    # answered, after `delay_s` (past the client's timeout, it never sees the answer).
    after_storing: bool = False
    delay_s: float = 0.0
    until: float | None = None  # a window (time.monotonic()): every matching call until then


@dataclass
class ResponseTarget:
    channel: str | None
    message_ts: str | None


@dataclass
class UserGroup:
    """A user group usergroups.users.list answers for (see `SlackStub.add_usergroup`)."""

    users: list[str] = field(default_factory=list)
    disabled: bool = False


@dataclass
class StubChannel:
    """A conversation the workspace has (see `SlackStub.add_channel`).

    ``member`` is whether the bot is in it; ``members`` who else is (None: everyone, as in a
    workspace's default channel); a ``private`` channel needs ``groups:history`` to read and is
    invisible (``channel_not_found``) to a bot outside it; an ``archived`` one takes no posts.
    """

    id: str
    private: bool = False
    archived: bool = False
    member: bool = True
    members: set[str] | None = None
