"""The durable inbox: a slash command or a button click is in the store before Slack gets its ack,
and leaves it once its work is done. Slack retries neither, so an ack is a promise.

The replica that acked an item holds it (`held_until`, renewed every RENEW_S while the work
runs). After a crash the holder stops renewing; a run that failed outright (the store down even
for its answer) is let go the same way; at start and every RESCAN_S, a replica takes each
item whose time has passed (compare-and-set on the holder, so exactly one replica does) and
either runs it again or tells its user, by this table:

| invocation                   | after a crash              | why                          |
|------------------------------|----------------------------|------------------------------|
| help, unknown words, usage   | never stored               | the ack was the whole answer |
| images, history, status, logs| run again                  | reads                        |
| stop                         | run again                  | a second stop changes nothing|
| extend                       | run again                  | N hours from now, never less |
| promote, latest, rollback    | run again                  | they only show a card        |
| prompt PR text               | run again, unless it began | no idempotency key in the    |
|                              | sending (then told)        | container: it would run twice|
| prompt --cancel              | run again                  | a second cancel is answered  |
| restart                      | run again, unless it began | a second restart would       |
|                              | replacing (then told)      | replace the new task too     |
| staging, cleanup, lock,      | told                       | a build, cleanup or lock     |
| unlock (and any new command) |                            | half-done is not redone      |
|                              |                            | blindly: /uat history and    |
|                              |                            | /uat images show where it is |
| a click on a card            | run again, unless the card | the card's one-time claim is |
|                              | was used (then told)       | the point of no return       |
| older than RESUME_MAX_AGE_S  | told                       | too old to redo blindly      |

"Told" goes through the item's response_url while Slack still takes it (RESPONSE_URL_S); later,
as a message in the UAT channel that mentions the user (posted once, keyed by the item). An
item's answers are recorded as they are given, so running it again does not answer twice what
the first run answered. A kill between the last answer and the item's removal can leave one
extra "I restarted" note for an item that was told; never a second effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from bot.slack import slack_ui
from bot.slack.chat import Blocks
from bot.store import Clock, InboxItem, Store, StoreUnavailable

if TYPE_CHECKING:
    from bot.slack.context import Reply

logger = logging.getLogger(__name__)

LEASE_S = 10.0  # an item's holder renews it while working; a dead holder's lapses this long after
RENEW_S = 3.0
RECEIVE_S = 2.0  # an item not stored this soon is refused: Slack takes no ack after 3 s
RESCAN_S = 5.0  # how often a replica looks for items whose holder died
RESUME_MAX_AGE_S = 10 * 60.0  # older items are not run again blindly: their user is told
RESPONSE_URL_S = 30 * 60.0  # Slack takes a response_url's answers this long

RESUMED = frozenset({"images", "history", "status", "stop", "extend", "promote", "latest"})
RESUMED |= {"rollback", "logs"}
ONCE = frozenset({"prompt", "restart"})  # run again unless they passed their point of no return
# everything else (staging, cleanup, lock, unlock, commands added later) is told


class Redo(StrEnum):
    """What becomes of an item whose holder died."""

    RUN = "run"
    TELL = "tell"


@dataclass(frozen=True)
class Invocation:
    """What a command or click was, as the inbox keeps it: enough to run it again or answer."""

    kind: str  # "command" or "click"
    user_id: str
    channel_id: str
    user_name: str = ""
    response_url: str | None = None
    trigger_id: str | None = None
    text: str = ""  # a command's words after `/uat`
    action_id: str = ""  # a click's button
    value: str = ""
    message_ts: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Invocation:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def what(self) -> str:
        """How the user would recognise it."""
        if self.kind == "command":
            return f"`/uat {self.text.strip()}`"[:200]
        return "your click on a button"


def acting_key(item: str) -> str:
    """The one-time key a command claims when it starts acting (see CommandContext)."""
    return f"inbox:{item}:acting"


class Inbox:
    """The store's inbox as this replica uses it: receive, hold, finish, and take over."""

    def __init__(self, store: Store, clock: Clock = time.time) -> None:
        self.store = store
        self.clock = clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._held: set[str] = set()
        self._late: set[asyncio.Future[None]] = set()  # items stored too late, being removed

    def __len__(self) -> int:
        return len(self._held)

    async def receive(self, invocation: Invocation) -> InboxItem:
        """Store an invocation before its ack; the item stored.

        A write not done within RECEIVE_S raises StoreUnavailable, so the ack says the command
        was not recorded while Slack still takes an ack (3 s); should that write land after
        all (a locked SQLite file, a slow table), the item is removed as soon as it does: it
        was never promised, and would otherwise be taken over and run."""
        key = secrets.token_hex(8)
        now = self.clock()
        item = InboxItem(
            key, invocation.kind, invocation.to_json(), now, self.holder, now + LEASE_S
        )
        writing = asyncio.ensure_future(self.store.inbox_put(item))
        try:
            await asyncio.wait_for(asyncio.shield(writing), RECEIVE_S)
        except TimeoutError:
            late = asyncio.ensure_future(self._unpromise(writing, key))
            self._late.add(late)
            late.add_done_callback(self._late.discard)
            raise StoreUnavailable(
                f"the store did not record the command within {RECEIVE_S:g} s", "slow"
            ) from None
        self._held.add(key)
        return item

    async def _unpromise(self, writing: asyncio.Future[None], key: str) -> None:
        """Remove the item a write that came too late for its ack stored, if it stored it."""
        try:
            await writing
        except Exception:
            return  # not stored: nothing to remove
        delay = 0.1
        while True:
            try:
                await self.store.inbox_done(key)
                logger.info("inbox item %s stored after its ack was refused: removed", key)
                return
            except StoreUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RENEW_S)

    async def finish(self, key: str, work: Awaitable[Any]) -> None:
        """Await the item's work, then forget the item. Cancelled (a shutdown): the item stays,
        for whoever starts next to take over. Failed (its answer could not even be recorded, the
        store being down): it is let go, so it lapses and is taken over once the store is back,
        instead of being renewed by this replica for ever, neither done nor answered."""
        try:
            await work
        except Exception:
            self.let_go(key)
            raise
        self._held.discard(key)
        try:
            await self.store.inbox_done(key)
        except Exception:  # it lapses and is taken over: its answers are not given twice
            logger.warning("could not mark inbox item %s done", key, exc_info=True)

    async def keep(self) -> None:
        """Renew the items this replica works on, for as long as it runs: all at once, so that
        a slow store delays a round by one call, not one per item. One by one, a round lasted
        minutes under a busy store, and renewed items let go (or done) since it began: they
        stayed out of every takeover until this replica stopped."""
        while True:
            await asyncio.sleep(RENEW_S)
            await asyncio.gather(*(self._renew(key) for key in list(self._held)))

    async def _renew(self, key: str) -> None:
        if key not in self._held:
            return  # done or let go since the round began
        try:
            if not await self.store.inbox_claim(key, self.holder, self.clock() + LEASE_S):
                self._held.discard(key)  # done meanwhile, or taken over after a stall
        except Exception:
            logger.warning("could not renew inbox item %s", key, exc_info=True)

    def let_go(self, key: str) -> None:
        """Stop renewing `key` (resuming it failed): it lapses and is taken over again."""
        self._held.discard(key)

    async def abandoned(self) -> list[InboxItem]:
        """Items whose holder's time has passed, each now claimed by this replica (one replica
        wins each claim). The claims go out at once: one after another, a round under a slow
        store took one call's time per item (a minute in the soak) while its items waited. A
        claim the store fails is left to the next round; the items claimed are returned, to be
        resumed, or this replica would renew them for ever, never running them."""
        now = self.clock()
        # An item this replica let go (its run failed) is taken again like any other: with a
        # single replica, nobody else would.
        lapsed = [
            item
            for item in await self.store.inbox_items()
            if item.key not in self._held and item.held_until <= now
        ]
        self._held.update(item.key for item in lapsed)  # before the awaits: one taker here too
        won = await asyncio.gather(*(self._claim(item) for item in lapsed))
        return [item for item, claimed in zip(lapsed, won, strict=True) if claimed]

    async def _claim(self, item: InboxItem) -> bool:
        try:
            claimed = await self.store.inbox_claim(item.key, self.holder, self.clock() + LEASE_S)
        except StoreUnavailable as exc:
            logger.warning("could not take over inbox item %s: %s", item.key, exc.line)
            claimed = False
        if not claimed:
            self._held.discard(item.key)  # not ours: the next round tries it again
        return claimed

    async def redo(self, item: InboxItem, invocation: Invocation, command: str | None) -> Redo:
        """Run the item again or tell its user (the table in this module's docstring).
        `command` is the `/uat` word of a command item (None for a click)."""
        if self.clock() - item.received_at > RESUME_MAX_AGE_S:
            return Redo.TELL
        if invocation.kind == "click":
            card = _card(invocation.value)
            if card and await self.store.claimed(f"card:{card}"):
                return Redo.TELL
            return Redo.RUN
        if command in RESUMED:
            return Redo.RUN
        if command in ONCE:
            if command == "prompt" and "--cancel" in invocation.text.split():
                return Redo.RUN
            return Redo.TELL if await self.store.claimed(acting_key(item.key)) else Redo.RUN
        return Redo.TELL

    def advice(self, item: InboxItem, invocation: Invocation, command: str | None) -> str:
        """What the user is told to do about an item that was not run again."""
        if self.clock() - item.received_at > RESUME_MAX_AGE_S:
            return slack_ui.INTERRUPTED_STALE
        if invocation.kind == "click":
            return slack_ui.INTERRUPTED_CLICK
        if command == "prompt":
            return slack_ui.INTERRUPTED_PROMPT
        if command in ("restart", "stop", "extend"):
            return slack_ui.INTERRUPTED_ENVIRONMENT
        return slack_ui.INTERRUPTED_IMAGES

    def response_url_valid(self, item: InboxItem) -> bool:
        return self.clock() - item.received_at < RESPONSE_URL_S - 60  # a minute to spare


def _card(value: str) -> str | None:
    with contextlib.suppress(ValueError, TypeError):
        data = json.loads(value)
        if isinstance(data, dict) and data.get("card"):
            return str(data["card"])
    return None


class AnsweredOnce:
    """A stored item's Reply: each answer (by its position) is given once, across runs of the
    item: recorded after it is given, skipped when a run before gave it already."""

    def __init__(self, store: Store, key: str, reply: Reply, *, rerun: bool = False) -> None:
        self._store = store
        self._key = key
        self._reply = reply
        self._rerun = rerun  # the first run has nothing given before it: no need to look
        self._count = 0

    async def __call__(
        self,
        text: str,
        blocks: Blocks | None = None,
        *,
        in_channel: bool = False,
        replace_original: bool = False,
    ) -> None:
        answer = f"inbox:{self._key}:answer:{self._count}"
        self._count += 1
        if self._rerun and await self._store.claimed(answer):
            return  # given by the run the crash cut short
        await self._reply(text, blocks, in_channel=in_channel, replace_original=replace_original)
        try:
            await self._store.claim(answer, "answer")
        except StoreUnavailable as exc:  # it was given: only a run after a crash repeats it
            logger.warning("could not record answer %s: %s", answer, exc.line)
