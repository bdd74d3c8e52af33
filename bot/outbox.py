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

A file is keyed by its name, which Slack keeps with the message that shares it.

The caller makes sure one poster at a time works on a key (a launch lease, a relay lease): the
outbox makes a crash harmless, not two concurrent posters.
"""

from __future__ import annotations

import logging

from bot.chat import Blocks, Chat
from bot.store import Post, Store

logger = logging.getLogger(__name__)


class Outbox:
    """Posts keyed messages at most once (see the module docstring)."""

    def __init__(self, store: Store, chat: Chat) -> None:
        self.store = store
        self.chat = chat

    async def post(
        self,
        key: str,
        channel: str,
        text: str,
        blocks: Blocks | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """Post the message for `key` unless it was posted already; its ts either way."""
        stored, fresh = await self.store.reserve_post(Post(key, channel, thread_ts))
        if stored.ts:
            return stored.ts
        if not fresh:  # an earlier attempt was cut short: did its message reach Slack?
            found = await self.chat.find(stored.channel, key, stored.thread_ts)
            if found:
                logger.info("message %s was posted before a restart: %s", key, found)
                await self.store.posted(key, found)
                return found
        ts = await self.chat.post(stored.channel, text, blocks, stored.thread_ts, key=key)
        await self.store.posted(key, ts)
        return ts

    async def upload(
        self,
        key: str,
        channel: str,
        thread_ts: str | None,
        filename: str,
        content: str,
        title: str,
        comment: str | None = None,
    ) -> str:
        """Share a file once: `key` must be its `filename`, the one thing Slack keeps of it
        that `Chat.find` can search; returns where it landed (a file id or a ts)."""
        if key != filename:
            raise ValueError("a file's key is its name")
        stored, fresh = await self.store.reserve_post(Post(key, channel, thread_ts))
        if stored.ts:
            return stored.ts
        if not fresh:
            found = await self.chat.find(stored.channel, key, stored.thread_ts)
            if found:
                await self.store.posted(key, found)
                return found
        file_id = await self.chat.upload(
            stored.channel, stored.thread_ts, filename, content, title, comment
        )
        await self.store.posted(key, file_id or "uploaded")
        return file_id
