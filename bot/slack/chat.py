"""Where the bot's words go: Slack's Web API in production, the terminal in the console.

Commands and lifecycle code talk to a `Chat`, never to a Slack client directly, so the same code
runs behind Slack, behind `uat-bot console` and in tests.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.errors import UserError
from bot.logs import outside
from bot.metrics import Metrics
from bot.scrub import Scrubber
from bot.slack import slack_ui
from bot.slack.pace import Pacer, Updates

logger = logging.getLogger(__name__)

Blocks = list[dict[str, Any]]
# How a search sends its calls: (method, call) -> the answer (in the channel's turn, or within it)
Send = Callable[[str, Callable[[], Awaitable[AsyncSlackResponse]]], Awaitable[AsyncSlackResponse]]

# Messages posted with a key carry it as Slack message metadata of this type, so the bot can
# find what it posted (see bot/slack/outbox.py).
METADATA_EVENT = "uat_bot_post"
FIND_PAGES = 5  # pages of 200 messages searched for a keyed message
CLOCK_SKEW_S = 60.0  # how far Slack's clock may be from ours, for `find`'s window


@dataclass(frozen=True)
class Message:
    """A message to post in a channel (a reply when `thread_ts` is given). A `key` is kept with
    the message as its metadata, so `Chat.find` can find it again."""

    channel: str
    text: str
    blocks: Blocks | None = None
    thread_ts: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Upload:
    """A file to share in a channel (in the thread `thread_ts` when given), with an optional
    comment posted beside it. Slack keeps `filename` with the message, so it doubles as the
    file's key (see `Chat.find`)."""

    channel: str
    thread_ts: str | None
    filename: str
    content: str
    title: str
    comment: str | None = None


class Chat(Protocol):
    """The few things the bot says, addressed by channel and message timestamp."""

    async def post(self, message: Message) -> str:
        """Post `message`; returns its ts."""
        ...

    async def find(
        self, channel: str, key: str, thread_ts: str | None = None, since: float | None = None
    ) -> str | None:
        """The ts of a message the bot posted with `key` as its metadata, or sharing a file named
        `key` (in the thread `thread_ts`, or at the top of the channel), no earlier than `since`
        (epoch seconds, give or take a minute of clock skew); else None."""
        ...

    async def upload(self, upload: Upload) -> str:
        """Share `upload.content` as a file in its channel (in the thread when `thread_ts` is
        given); returns the file's id."""
        ...

    async def update(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: Blocks | None = None,
        *,
        urgent: bool = False,
    ) -> None:
        """Replace the text and blocks of a message the bot posted (`urgent`: a state a person
        acts on, which goes ahead of routine updates)."""
        ...

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: Blocks | None = None
    ) -> None:
        """Show a message only `user` sees."""
        ...


class ChatError(UserError):
    """Slack refused a call; the message says which and why."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class SlackUnreachable(ChatError):
    """Slack gave no answer: the connection was refused or timed out, or Slack kept failing
    (5xx). `line` is what the log gets: one line, no traceback."""

    def __init__(self, method: str, reason: str) -> None:
        super().__init__(slack_ui.slack_unreachable(method), "network")
        self.method = method
        self.reason = reason

    @property
    def line(self) -> str:
        return f"Slack unreachable (POST {self.method}): {self.reason}"


class TokenRefused(Exception):
    """Slack answered auth.test with an error (invalid_auth, token_revoked, ...)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass(frozen=True)
class SlackIdentity:
    """Who the bot token is, as auth.test says."""

    team_id: str
    team: str
    user_id: str
    user: str
    bot_id: str | None
    url: str
    enterprise_id: str | None = None


async def who_am_i(client: AsyncWebClient) -> SlackIdentity:
    """Ask Slack who the client's token is (auth.test).

    TokenRefused when Slack says no; SlackUnreachable when Slack does not answer (connection
    refused, timeout, 5xx or 429 after the client's own retries).
    """
    try:
        answer = await client.auth_test()
    except SlackApiError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status == 429 or status >= 500:
            raise SlackUnreachable("auth.test", f"HTTP {status}") from None
        raise TokenRefused(str(exc.response.get("error") or "unknown_error")) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SlackUnreachable("auth.test", one_line(exc)) from None
    return SlackIdentity(
        team_id=str(answer.get("team_id") or ""),
        team=str(answer.get("team") or ""),
        user_id=str(answer.get("user_id") or ""),
        user=str(answer.get("user") or ""),
        bot_id=answer.get("bot_id"),
        url=str(answer.get("url") or ""),
        enterprise_id=answer.get("enterprise_id"),
    )


def one_line(exc: BaseException) -> str:
    """An exception as one short line (a timeout's text is empty: its name then)."""
    text = " ".join(str(exc).split())
    return outside(text, 300) if text else type(exc).__name__


class SlackChat:
    """`Chat` over Slack's Web API, patient with Slack's bad moments and keeping order.

    The client's retry handlers take short 429 / 5xx spells; past those, a call is retried with
    backoff (Retry-After when Slack gives one) for up to `patience_s` before it fails. Calls to
    one channel go one at a time, so a card update never overtakes the one before it, and each
    call waits its turn under Slack's rate limits (`pacer`, bot/slack/pace.py) rather than
    meeting a 429: a burst of cards is posted at Slack's pace, in the order it came.

    When Slack cannot be reached at all (connection refused, timeout), a call logs one line the
    first time and waits quietly; it fails with `SlackUnreachable`. An ephemeral answer does not
    wait: only the person looking now would see it, and Slack cannot show it now.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        metrics: Metrics | None = None,
        patience_s: float = 600.0,
        pacer: Pacer | None = None,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.patience_s = patience_s
        self.pacer = pacer or Pacer()
        self.updates = Updates(self.pacer)
        self._order: dict[str, asyncio.Lock] = {}

    async def post(self, message: Message) -> str:
        """Post once, even when Slack fails ambiguously (a 5xx, a timeout, a dropped connection
        after it may have stored the message): every message carries a key (its own, or a fresh
        one: a transient note too), and before any retry the channel or thread is searched for
        it. The client's blind retries of such failures are off for this call; 429s (Slack
        stored nothing) are still retried as Slack asks."""
        text, blocks = slack_ui.fit(message.text, message.blocks)
        key = message.key or f"once:{uuid.uuid4().hex}"
        metadata = {"event_type": METADATA_EVENT, "event_payload": {"key": key}}
        client = _without_blind_retries(self.client)
        since = time.time()
        maybe_posted = False

        def in_turn(
            method: str, call: Callable[[], Awaitable[AsyncSlackResponse]]
        ) -> Awaitable[AsyncSlackResponse]:
            return self._attempts(method, call, channel=message.channel)

        async def attempt() -> AsyncSlackResponse:
            nonlocal maybe_posted
            if maybe_posted:  # the last attempt may have reached Slack: look before posting
                found = await self._find(message.channel, key, message.thread_ts, since, in_turn)
                if found:
                    raise _Found(found)
            try:
                return await client.chat_postMessage(
                    channel=message.channel,
                    text=text,
                    blocks=blocks,
                    thread_ts=message.thread_ts,
                    metadata=metadata,
                )
            except SlackApiError as exc:
                maybe_posted = exc.response is None or exc.response.status_code >= 500
                raise
            except (aiohttp.ClientError, TimeoutError):
                maybe_posted = True
                raise

        try:
            response = await self._send("chat.postMessage", message.channel, attempt)
        except _Found as found:
            logger.info(
                "chat.postMessage failed after Slack kept the message %s: not posted again",
                found.ts,
            )
            return found.ts
        return str(response["ts"])

    async def find(
        self, channel: str, key: str, thread_ts: str | None = None, since: float | None = None
    ) -> str | None:
        return await self._find(channel, key, thread_ts, since, self._in_order(channel))

    async def _find(
        self,
        channel: str,
        key: str,
        thread_ts: str | None,
        since: float | None,
        send: Send,
    ) -> str | None:
        """`find`, its calls made through `send` (a post searching under its channel's turn
        makes them without waiting for that turn again)."""
        # What was posted since (a minute before) `since`: the few messages that can match, and
        # the first pages of them, though a busy channel or thread has thousands before.
        oldest = f"{since - CLOCK_SKEW_S:.6f}" if since else None
        if thread_ts:
            method = "conversations.replies"
            read = functools.partial(
                self.client.conversations_replies, channel=channel, ts=thread_ts, oldest=oldest
            )
        else:
            method = "conversations.history"
            read = functools.partial(
                self.client.conversations_history, channel=channel, oldest=oldest
            )
        cursor: str | None = None
        for _ in range(FIND_PAGES):
            page = await send(
                method,
                functools.partial(read, include_all_metadata=True, limit=200, cursor=cursor),
            )
            for message in page.get("messages") or []:
                if _carries(message, key):
                    return str(message["ts"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return None
        return None

    async def upload(self, upload: Upload) -> str:
        response = await self._send(
            "files.upload",
            upload.channel,
            lambda: self.client.files_upload_v2(
                channel=upload.channel,
                thread_ts=upload.thread_ts,
                content=upload.content,
                filename=upload.filename,
                title=upload.title,
                initial_comment=upload.comment,
            ),
        )
        files = response.get("files") or [{}]
        return str(files[0].get("id", ""))

    async def update(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: Blocks | None = None,
        *,
        urgent: bool = False,
    ) -> None:
        """Update in its turn (`Updates`, bot/slack/pace.py): replaced by a newer update of the
        same message while it waits, and behind urgent ones unless `urgent` itself."""
        text, blocks = slack_ui.fit(text, blocks)

        async def call() -> AsyncSlackResponse:
            async with self._order.setdefault(channel, asyncio.Lock()):
                return await self._attempts(
                    "chat.update",
                    lambda: self.client.chat_update(
                        channel=channel, ts=ts, text=text, blocks=blocks or []
                    ),
                    channel=channel,
                    turn_taken=True,
                )

        await self.updates.send(channel, ts, call, urgent)

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: Blocks | None = None
    ) -> None:
        text, blocks = slack_ui.fit(text, blocks)
        await self._send(
            "chat.postEphemeral",
            channel,
            lambda: self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, blocks=blocks
            ),
            wait_for_network=False,
        )

    async def _send(
        self,
        method: str,
        channel: str,
        call: Callable[[], Awaitable[AsyncSlackResponse]],
        *,
        wait_for_network: bool = True,
    ) -> AsyncSlackResponse:
        # The turn is waited for before the channel's lock: a card update waiting for its tier's
        # turn never holds up the channel's posts, nor the other way round; turns of one kind
        # come in the order they were asked for, and the lock keeps that order.
        await self.pacer.turn(method, channel)
        lock = self._order.setdefault(channel, asyncio.Lock())
        async with lock:
            return await self._attempts(
                method, call, channel=channel, wait_for_network=wait_for_network, turn_taken=True
            )

    def _in_order(self, channel: str) -> Send:
        return lambda method, call: self._send(method, channel, call)

    async def _attempts(
        self,
        method: str,
        call: Callable[[], Awaitable[AsyncSlackResponse]],
        *,
        channel: str | None = None,
        wait_for_network: bool = True,
        turn_taken: bool = False,
    ) -> AsyncSlackResponse:
        """`call` until it succeeds, Slack refuses it, or patience runs out (see the class);
        each attempt in its turn under Slack's rate limits for `method` in `channel` (the
        first one's taken already when `turn_taken`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.patience_s
        delay = 1.0
        said_unreachable = False
        while True:
            try:
                if not turn_taken:
                    await self.pacer.turn(method, channel)
                turn_taken = False
                return await call()
            except SlackApiError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status != 429 and status < 500:
                    raise self._error(method, exc) from None
                retry_after = exc.response.headers.get("Retry-After") if status == 429 else None
                wait = float(retry_after) if retry_after else delay
                if status == 429:
                    self.pacer.hold(method, channel, wait)
                failure = exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                unreachable = SlackUnreachable(method, one_line(exc))
                if self.metrics is not None:
                    self.metrics.slack_errors.labels(method=method, code="unreachable").inc()
                if not wait_for_network or loop.time() + delay > deadline:
                    raise unreachable from None
                if not said_unreachable:
                    logger.warning(
                        "%s; retrying for up to %.0fs", unreachable.line, self.patience_s
                    )
                    said_unreachable = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            except SlackRequestError as exc:  # files_upload_v2's upload step was refused
                raise ChatError(slack_ui.slack_refused(method, str(exc)), "upload") from None
            if self.metrics is not None:
                self.metrics.slack_errors.labels(method=method, code="retrying").inc()
            if loop.time() + wait > deadline:
                raise self._error(method, failure) from None
            logger.warning("Slack %s failed (%s); retrying in %.0fs", method, failure, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, 30.0)

    def _error(self, method: str, exc: SlackApiError) -> ChatError:
        error = _chat_error(method, exc)
        if self.metrics is not None:
            self.metrics.slack_errors.labels(method=method, code=error.code).inc()
        return error


class _Found(Exception):
    """Not an error: a retried post found the message its last attempt left in Slack."""

    def __init__(self, ts: str) -> None:
        super().__init__(ts)
        self.ts = ts


def _without_blind_retries(client: AsyncWebClient) -> AsyncWebClient:
    """`client` for a call that must not be repeated blindly: only its 429 retries are kept."""
    once = copy.copy(client)
    once.retry_handlers = [
        h for h in client.retry_handlers if isinstance(h, AsyncRateLimitErrorRetryHandler)
    ]
    return once


class ScrubbedChat:
    """A `Chat` whose every message, update, ephemeral and file leaves without credentials: the
    one door the bot's words go out by (bot/scrub.py says what is replaced). The composition root
    puts it in front of whichever chat it builds, so no caller can go around it."""

    def __init__(self, inner: Chat, scrubber: Scrubber) -> None:
        self.inner = inner
        self.scrubber = scrubber

    def _blocks(self, blocks: Blocks | None) -> Blocks | None:
        return None if blocks is None else list(self.scrubber.value(blocks))

    async def post(self, message: Message) -> str:
        text, blocks = self.scrubber.text(message.text), self._blocks(message.blocks)
        return await self.inner.post(dataclasses.replace(message, text=text, blocks=blocks))

    async def find(
        self, channel: str, key: str, thread_ts: str | None = None, since: float | None = None
    ) -> str | None:
        return await self.inner.find(channel, key, thread_ts, since)

    async def upload(self, upload: Upload) -> str:
        comment = self.scrubber.text(upload.comment) if upload.comment is not None else None
        # a file may be megabytes of agent output: scrubbed off the event loop
        content = await asyncio.to_thread(self.scrubber.text, upload.content)
        scrubbed = dataclasses.replace(
            upload,
            content=content,
            title=self.scrubber.text(upload.title),
            comment=comment,
        )
        return await self.inner.upload(scrubbed)

    async def update(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: Blocks | None = None,
        *,
        urgent: bool = False,
    ) -> None:
        text, scrubbed = self.scrubber.text(text), self._blocks(blocks)
        await self.inner.update(channel, ts, text, scrubbed, urgent=urgent)

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: Blocks | None = None
    ) -> None:
        await self.inner.ephemeral(channel, user, self.scrubber.text(text), self._blocks(blocks))


def _carries(message: dict[str, Any], key: str) -> bool:
    """Whether the bot posted `message` with `key`: as its metadata, or as a file's name."""
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    if metadata.get("event_type") == METADATA_EVENT and payload.get("key") == key:
        return True
    names = [f.get("name") for f in message.get("files") or []]
    return key in names and bool(message.get("bot_id"))


def _chat_error(method: str, exc: SlackApiError) -> ChatError:
    error = exc.response.get("error", "unknown_error") if exc.response else "no response"
    if error == "missing_scope":
        needed = str(exc.response.get("needed") or "?")
        return ChatError(slack_ui.missing_scope(method, needed), "missing_scope")
    return ChatError(slack_ui.slack_refused(method, str(error)), str(error))
