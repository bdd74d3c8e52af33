"""Taking over the inbox items of a replica that died: at start, and every RESCAN_S after, each
one is claimed by one replica and run again or its user told (bot/slack/inbox.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bot.slack.inbox import RESCAN_S, Invocation
from bot.slack.listeners.reply import context_for
from bot.store import InboxItem

if TYPE_CHECKING:
    from bot.app import Runtime

logger = logging.getLogger(__name__)


async def take_over(runtime: Runtime) -> int:
    """Claim the items whose holder's time has passed and resume each; how many.

    The items are resumed together: one after another, telling each user took a few store
    and HTTP round trips, and a replica killed after acking a burst left a backlog that took
    minutes (the soak's commands "acked, neither done nor answered" when it stopped waiting)."""
    inbox = runtime.dispatcher.inbox
    if inbox is None:
        return 0
    items = await inbox.abandoned()

    async def resume(item: InboxItem) -> None:
        invocation = Invocation.from_json(item.payload)
        try:
            await runtime.dispatcher.resume(context_for(runtime, invocation), item, invocation)
        except Exception:  # it lapses and is tried again
            logger.exception("could not resume inbox item %s", item.key)
            inbox.let_go(item.key)

    await asyncio.gather(*(resume(item) for item in items))
    return len(items)


async def keep_taking_over(runtime: Runtime) -> None:
    """`take_over` now and every RESCAN_S, for as long as the bot runs."""
    while True:
        try:
            await take_over(runtime)
        except Exception:
            logger.warning("could not read the inbox; trying again", exc_info=True)
        await asyncio.sleep(RESCAN_S)
