"""Work under a lease: renewed while it runs, released after, stopped when somebody took it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from bot.store.protocol import Store
from bot.store.records import LeaseLost

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def renewing(store: Store, lease: str, holder: str, ttl_s: float) -> AsyncIterator[None]:
    """While the block runs, renew a lease `holder` took (every third of `ttl_s`, so a dead
    holder's lapses within seconds); release it afterwards. When a renewal finds the lease taken
    by another holder, the block is cancelled and LeaseLost raised: two must not work at once."""
    owner = asyncio.current_task()
    lost = False

    async def renew() -> None:
        nonlocal lost
        while True:
            await asyncio.sleep(ttl_s / 3)
            try:
                held = await store.hold_lease(lease, holder, ttl_s)
            except Exception:  # a blip: the next renewal is due well before the lease lapses
                logger.warning("could not renew %s; trying again", lease, exc_info=True)
                continue
            if not held:
                lost = True
                logger.error("%s was taken over while %s worked under it: stopping", lease, holder)
                if owner is not None:
                    owner.cancel()
                return

    heartbeat = asyncio.create_task(renew(), name=f"renew {lease}")
    try:
        yield
    except asyncio.CancelledError:
        if lost and owner is not None and owner.uncancel() == 0:
            raise LeaseLost(lease) from None
        raise
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        if not lost:
            await store.release_lock(lease, holder)
