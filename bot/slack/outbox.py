"""Messages that must reach Slack once, even when the bot dies while posting them.

Posting and recording the ts Slack gave cannot be one atomic step: a crash between the two
leaves a message in Slack that the store does not know about, and posting again on resume
would show it twice (a PR with two threads, a prompt result posted twice). So a message that
matters gets a key:

1. the key is reserved in the store before the post;
2. the message goes out carrying the key as Slack message metadata;
3. its ts is recorded.

Whoever resumes the work (a launch resumed under its lease, a prompt relay followed again after
a restart) builds the message again and calls `Outbox.post` with the same key. A key already
posted returns its ts; a key reserved but not recorded is looked up in Slack by its metadata
first, and posted only when Slack does not have it.

A file is keyed by its name, which Slack keeps with the message that shares it. Slack shares
a file after files.completeUploadExternal answers, so the share of an upload cut short a moment
ago may not be there yet: a young reservation is searched again until SHARE_SETTLE_S has passed
before the file is uploaded a second time.

The caller makes sure one poster at a time works on a key (a launch lease, a relay lease); where
nothing can (a catch-up on start beside a replica posting the same reply), every poster of the
key posts `exclusive=False`: whoever reserves it first posts, the others wait out the young
reservation before searching.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from bot.slack.chat import Blocks, Chat, Message, Upload
from bot.store import Post, Store

logger = logging.getLogger(__name__)

IN_FLIGHT_S = 60.0  # a younger reservation may be a post under way elsewhere (exclusive=False)
IN_FLIGHT_POLL_S = 1.0
SHARE_SETTLE_S = 10.0  # how long after an upload its share may still appear in Slack
SHARE_POLL_S = 0.5


class Outbox:
    """Posts keyed messages at most once (see the module docstring)."""

    def __init__(self, store: Store, chat: Chat) -> None:
        self.store = store
        self.chat = chat
        self._sending: dict[str, asyncio.Future[str]] = {}  # keys being posted by this process

    async def post(
        self,
        key: str,
        channel: str,
        text: str,
        blocks: Blocks | None = None,
        thread_ts: str | None = None,
        *,
        exclusive: bool = True,
    ) -> str:
        """Post the message for `key` unless it was posted already; its ts either way.

        `exclusive=False`: nothing keeps another poster of `key` away (a catch-up may run while
        the replica that changed the state posts its reply), so a reservation younger than
        IN_FLIGHT_S is taken as a post in flight and waited for before Slack is searched."""

        async def send(where: Post) -> str:
            return await self.chat.post(Message(where.channel, text, blocks, where.thread_ts, key))

        return await self._once(Post(key, channel, thread_ts), send, exclusive)

    async def posted(self, key: str, channel: str, thread_ts: str | None = None) -> str | None:
        """The ts of the message posted for `key`, or None when none was. An attempt cut short
        is looked up in Slack by its metadata. (An unknown key stays reserved, unposted.)"""
        stored, fresh = await self.store.reserve_post(Post(key, channel, thread_ts))
        if stored.ts or fresh:
            return stored.ts
        found = await self.chat.find(stored.channel, key, stored.thread_ts, stored.created_at)
        if found:
            await self.store.posted(key, found)
        return found

    async def recover(self, key: str, channel: str, thread_ts: str | None = None) -> str | None:
        """The ts of a message posted for `key` that the store may not know of (a bot that lost
        its store), looked up in Slack by its metadata and recorded when found; else None, and
        nothing is reserved, so a later `post` of `key` posts at once."""
        found = await self.chat.find(channel, key, thread_ts)
        if found:
            await self.store.reserve_post(Post(key, channel, thread_ts))
            await self.store.posted(key, found)
        return found

    async def upload(self, upload: Upload) -> str:
        """Share a file once, keyed by its name (what Slack keeps of it that `Chat.find` can
        search): where it landed, a file id or the ts of the message sharing it."""

        async def send(where: Post) -> str:
            there = dataclasses.replace(upload, channel=where.channel, thread_ts=where.thread_ts)
            file_id = await self.chat.upload(there)
            return file_id or "uploaded"

        post = Post(upload.filename, upload.channel, upload.thread_ts)
        return await self._once(post, send, settle_s=SHARE_SETTLE_S)

    async def _once(
        self,
        post: Post,
        send: Callable[[Post], Awaitable[str]],
        exclusive: bool = True,
        *,
        settle_s: float = 0.0,
    ) -> str:
        """One post of `post.key` at a time in this process: a second caller (a catch-up while
        the state's own reply waits for Slack's pace) waits for the first and gets its ts,
        however long Slack's pace makes it; only posters in other processes wait IN_FLIGHT_S
        and then look in Slack."""
        while (sending := self._sending.get(post.key)) is not None:
            try:
                return await asyncio.shield(sending)
            except asyncio.CancelledError:
                if not sending.cancelled():
                    raise  # this caller was cancelled
                # the first poster was (a shutdown): this one posts, as if it were first
        sending = asyncio.get_running_loop().create_future()
        self._sending[post.key] = sending
        try:
            ts = await self._once_here(post, send, exclusive, settle_s)
        except Exception as exc:
            sending.set_exception(exc)
            sending.exception()  # retrieved: with no other caller waiting, nothing to warn of
            raise
        except BaseException:
            sending.cancel()
            raise
        finally:
            del self._sending[post.key]
        sending.set_result(ts)
        return ts

    async def _once_here(
        self,
        post: Post,
        send: Callable[[Post], Awaitable[str]],
        exclusive: bool,
        settle_s: float,
    ) -> str:
        stored, fresh = await self.store.reserve_post(post)
        in_flight = not (fresh or exclusive)
        while in_flight and not stored.ts and time.time() - stored.created_at < IN_FLIGHT_S:
            await asyncio.sleep(IN_FLIGHT_POLL_S)
            stored, _ = await self.store.reserve_post(post)  # a read: the key is there
        if stored.ts:
            return stored.ts
        if (stored.channel, stored.thread_ts) != (post.channel, post.thread_ts):
            where = f"{stored.channel} {stored.thread_ts or ''}"
            logger.warning("%s goes where it was first meant to: %s", post.key, where)
        if not fresh:  # an earlier attempt was cut short: did it reach Slack?
            found = await self.chat.find(
                stored.channel, post.key, stored.thread_ts, stored.created_at
            )
            while not found and time.time() - stored.created_at < settle_s:
                await asyncio.sleep(SHARE_POLL_S)  # what was sent may not be shown yet
                found = await self.chat.find(
                    stored.channel, post.key, stored.thread_ts, stored.created_at
                )
            if found:
                logger.info("%s was posted before a restart: %s", post.key, found)
                await self.store.posted(post.key, found)
                return found
        landed = await send(stored)
        await self.store.posted(post.key, landed)
        return landed
