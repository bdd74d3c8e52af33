"""The PR's Slack thread: its card updated in place, replies keyed so each is posted once,
and plain notes."""

from __future__ import annotations

from bot.environments.changes import change
from bot.environments.context import Context
from bot.slack import slack_ui
from bot.slack.chat import Blocks, Message
from bot.store import Environment, State

# states a person acts on: their card updates go ahead of routine ones waiting for Slack's limit
URGENT = frozenset({State.READY, State.FAILED, State.STOPPED})


class Thread:
    """Keeps an environment's Slack thread showing its state."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def show(self, env: Environment, reply: tuple[str, Blocks] | None = None) -> None:
        """Update the PR's card in place, and reply in its thread when people must see it.

        The reply is posted `exclusive=False` (see bot/slack/outbox.py) by whoever shows it:
        the replica that changed the state and a catch-up (Reconciler.catch_up, on start or on
        taking the watcher lease over) may both come to it, in either order, and no lease keeps
        them apart; so the first to reserve its key posts it, the other waits for it."""
        ctx = self.ctx
        for hook in ctx.on_show:  # GitHub's PR page, in the background
            hook(env)
        if not env.thread_ts or not ctx.settings.uat_channel:
            return
        text, blocks = slack_ui.environment_card(env, ctx.settings, ctx.clock())
        urgent = env.state in URGENT
        await ctx.chat.update(ctx.settings.uat_channel, env.thread_ts, text, blocks, urgent=urgent)
        # `env` may be stale by now (a launch showing `starting` as a stop lands): whoever
        # updates the card last looks again, so the card never ends behind the store
        latest = await ctx.store.get_environment(env.repo, env.pr)
        if latest is not None and latest.state != env.state and latest.thread_ts == env.thread_ts:
            text, blocks = slack_ui.environment_card(latest, ctx.settings, ctx.clock())
            urgent = latest.state in URGENT
            await ctx.chat.update(
                ctx.settings.uat_channel, env.thread_ts, text, blocks, urgent=urgent
            )
        if reply is None:
            await self._shown(env)
            return
        # The reply waits its turn among the channel's posts (about one a second): in the
        # background, so no watcher round, ECS event or launch waits for it (the card already
        # says the state); the state counts as shown once the reply is posted.
        replying = self._reply(env, env.thread_ts, reply)
        try:
            ctx.tasks.spawn(replying, name=f"reply {env.repo}#{env.pr}")
        except RuntimeError:  # shutting down: posted now, before the bot stops
            await self._reply(env, env.thread_ts, reply)

    async def _reply(self, env: Environment, thread_ts: str, reply: tuple[str, Blocks]) -> None:
        # keyed: a catch-up after a crash finds it was posted.
        # A session reaches ready, failed and stopped once each (ready never goes back).
        session = env.facts.session or f"v{env.version}"
        key = f"reply:{env.repo}#{env.pr}:{session}:{env.state}"
        channel = self.ctx.settings.uat_channel or ""
        await self.ctx.outbox.post(key, channel, *reply, thread_ts, exclusive=False)
        await self._shown(env)

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
