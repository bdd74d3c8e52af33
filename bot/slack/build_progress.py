"""A build as people see it in Slack: one message, posted when the build starts, updated in place
at most every 2 s (step, elapsed time, the last log lines), ending with the result or the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bot.errors import UserError
from bot.images.builders import BuildProgress
from bot.images.docker_build import BuildError
from bot.slack import slack_ui
from bot.slack.chat import Message
from bot.slack.context import CommandContext

logger = logging.getLogger(__name__)

UPDATE_EVERY_S = 2.0


class ProgressMessage:
    """Mirrors a BuildProgress into one channel message, throttled."""

    def __init__(self, ctx: CommandContext, progress: BuildProgress) -> None:
        self.ctx = ctx
        self.progress = progress
        self.ts: str | None = None
        self._shown = -1
        self._posting: asyncio.Future[str] | None = None

    async def _show(self) -> None:
        step, lines, seconds = self.progress.snapshot()
        version = self.progress.version
        text, blocks = slack_ui.build_progress(
            self.progress.title, step, lines, seconds, self.progress.link
        )
        chat, channel = self.ctx.services.chat, self.ctx.channel_id
        if self.ts is None:
            # shielded: a post that went out must get its ts even if the follower is stopped
            self._posting = asyncio.ensure_future(chat.post(Message(channel, text, blocks)))
            self.ts = await asyncio.shield(self._posting)
        elif version != self._shown:
            await chat.update(channel, self.ts, text, blocks)
        self._shown = version

    async def follow(self) -> None:
        """Post once the build has started (the lock is taken), then update every 2 s."""
        await self.progress.started.wait()
        while True:
            try:
                await self._show()
            except Exception:
                logger.warning("could not update the build message", exc_info=True)
            await asyncio.sleep(UPDATE_EVERY_S)

    async def stop(self, follower: asyncio.Task[None]) -> None:
        """Stop following; a first post still in flight is waited for, so `ts` is known."""
        await _stop(follower)
        if self.ts is None and self._posting is not None:
            with contextlib.suppress(Exception):
                self.ts = await self._posting

    async def finish(self, text: str, blocks: list[slack_ui.Block]) -> None:
        chat, channel = self.ctx.services.chat, self.ctx.channel_id
        if self.ts is None:
            await chat.post(Message(channel, text, blocks))
        else:
            await chat.update(channel, self.ts, text, blocks)


async def run_build(ctx: CommandContext, ref: str | None, target: str) -> None:
    progress = BuildProgress(f"`{ref or ctx.settings.uat_source_ref}` for :{target}")
    message = ProgressMessage(ctx, progress)
    follower = asyncio.create_task(message.follow())
    try:
        result = await ctx.pipeline.build(ctx.user_id, ref, target, progress)
    except BuildError as exc:
        await message.stop(follower)
        await message.finish(*slack_ui.build_failed(progress.title, str(exc), exc.tail))
        return
    except UserError as exc:
        await message.stop(follower)
        if message.ts is None:  # refused before it started (lock, no source): tell just them
            raise
        await message.finish(*slack_ui.build_failed(progress.title, str(exc), []))
        return
    except BaseException:
        await message.stop(follower)
        if message.ts is not None:  # the build had started: the message must not stay "building"
            with contextlib.suppress(Exception):
                await message.finish(*slack_ui.build_failed(progress.title, "", []))
        raise
    await message.stop(follower)
    await message.finish(*slack_ui.build_done(result, target, ctx.user_id))


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
