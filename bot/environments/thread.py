"""The PR's Slack thread: its card updated in place, replies keyed so each is posted once,
and plain notes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from bot.environments.changes import change
from bot.environments.context import Context
from bot.slack import slack_ui
from bot.slack.chat import Blocks, Message
from bot.store import Environment, State, StoreUnavailable

# states a person acts on: their card updates go ahead of routine ones waiting for Slack's limit
URGENT = frozenset({State.READY, State.FAILED, State.STOPPED})
# the pauses with which the card's second look at the store rides out a store outage (~30 s)
REREAD_PAUSES_S = (1.0, 2.0, 4.0, 8.0, 15.0)
# updates after the first, each for a state the store reached while the last one was sent; a
# state changing faster than that is left to the next show (every change shows itself)
REREADS = 4


class Thread:
    """Keeps an environment's Slack thread showing its state."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.showing: Counter[tuple[str, int]] = Counter()  # PRs being shown here (+ replies)

    async def show(
        self, env: Environment, reply: tuple[str, Blocks] | None = None, *, card_only: bool = False
    ) -> None:
        """Update the PR's card in place, and reply in its thread when people must see it
        (`card_only`: the card alone, and the state is not recorded as shown).

        The reply is posted `exclusive=False` (see bot/slack/outbox.py) by whoever shows it:
        the replica that changed the state and a catch-up (Reconciler.catch_up, on start or on
        taking the watcher lease over) may both come to it, in either order, and no lease keeps
        them apart; so the first to reserve its key posts it, the other waits for it."""
        pr = (env.repo, env.pr)
        self.showing[pr] += 1
        try:
            replying = await self._show(env, reply, card_only)
        except BaseException:
            self._done(pr)
            raise
        if replying is None:
            self._done(pr)
            return
        try:
            self.ctx.tasks.spawn(replying, name=f"reply {env.repo}#{env.pr}")
        except RuntimeError:  # shutting down: posted now, before the bot stops
            await replying

    def _done(self, pr: tuple[str, int]) -> None:
        self.showing[pr] -= 1
        if self.showing[pr] <= 0:
            del self.showing[pr]

    async def _show(
        self, env: Environment, reply: tuple[str, Blocks] | None, card_only: bool
    ) -> Coroutine[Any, Any, None] | None:
        """Update the card; the reply still to post, if any (the caller posts it)."""
        ctx = self.ctx
        for hook in () if card_only else ctx.on_show:  # GitHub's PR page, in the background
            hook(env)
        if not env.thread_ts or not ctx.settings.uat_channel:
            return None
        text, blocks = slack_ui.environment_card(env, ctx.settings, ctx.clock())
        urgent = env.state in URGENT
        await ctx.chat.update(ctx.settings.uat_channel, env.thread_ts, text, blocks, urgent=urgent)
        # `env` may be stale by now (a launch showing `starting` as a stop lands): whoever
        # updates the card last looks again, so the card never ends behind the store; and
        # again after that update (the stop may have finished while it waited for its turn)
        sent = env.state
        for _ in range(REREADS):
            latest = await self._reread(env)
            if latest is None or latest.state == sent or latest.thread_ts != env.thread_ts:
                break
            text, blocks = slack_ui.environment_card(latest, ctx.settings, ctx.clock())
            urgent = latest.state in URGENT
            await ctx.chat.update(
                ctx.settings.uat_channel, env.thread_ts, text, blocks, urgent=urgent
            )
            sent = latest.state
        if card_only:
            return None
        if reply is None:
            await self._shown(env)
            return None
        # The reply waits its turn among the channel's posts (about one a second): in the
        # background, so no watcher round, ECS event or launch waits for it (the card already
        # says the state); the state counts as shown once the reply is posted.
        return self._reply(env, env.thread_ts, reply)

    async def _reread(self, env: Environment) -> Environment | None:
        """`env` as the store holds it now, through a store outage of up to ~30 s: a launch's
        `starting` sent after a stop's `stopped` is put right only by this look."""
        for pause in REREAD_PAUSES_S:
            try:
                return await self.ctx.store.get_environment(env.repo, env.pr)
            except StoreUnavailable:
                await asyncio.sleep(pause)
        return await self.ctx.store.get_environment(env.repo, env.pr)

    async def _reply(self, env: Environment, thread_ts: str, reply: tuple[str, Blocks]) -> None:
        # keyed: a catch-up after a crash finds it was posted.
        # A session reaches ready, failed and stopped once each (ready never goes back).
        try:
            session = env.facts.session or f"v{env.version}"
            key = f"reply:{env.repo}#{env.pr}:{session}:{env.state}"
            channel = self.ctx.settings.uat_channel or ""
            await self.ctx.outbox.post(key, channel, *reply, thread_ts, exclusive=False)
            await self._shown(env)
        finally:
            self._done((env.repo, env.pr))

    async def _shown(self, env: Environment) -> None:
        """Record that the thread shows `env`'s state, for a catch-up after a crash."""
        if env.facts.shown != env.state:
            state = env.state
            await change(
                self.ctx.store,
                env.repo,
                env.pr,
                lambda e: (
                    e.with_facts(shown=str(state))
                    if e.state == state and e.facts.shown != state
                    else None
                ),
            )

    async def catch_up(self, env: Environment) -> None:
        """Show `env` on its card, with the reply its state calls for unless the thread has
        shown that state already (a crash, or a card posted after the state was reached)."""
        ctx = self.ctx
        reply = None
        if env.facts.shown != env.state:
            replies = {
                State.READY: lambda e: slack_ui.ready_reply(e, ctx.settings),
                State.FAILED: slack_ui.failed_reply,
                State.STOPPED: slack_ui.stopped_reply,
            }
            build = replies.get(env.state)
            reply = build(env) if build else None
        await self.show(env, reply=reply)

    async def note(self, env: Environment, text: str) -> None:
        if env.thread_ts and self.ctx.settings.uat_channel:
            await self.ctx.chat.post(
                Message(self.ctx.settings.uat_channel, text, None, env.thread_ts)
            )
