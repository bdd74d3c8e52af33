"""Every state change of an environment is a compare-and-set in the store, made before
anything acts on it: re-read and re-decide until the write lands.

Writers that lose a race wait a random moment (full jitter, growing up to CONFLICT_MAX_WAIT_S)
before they try again, so a crowd on one PR (100 prompts and 100 extends) spreads out instead of
colliding again at once; only after CONFLICT_ATTEMPTS losses is anyone told to try again."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import replace

from bot.environments.context import ACTIVE
from bot.errors import UserError
from bot.slack import slack_ui
from bot.store import Environment, Facts, Store, VersionConflict

Mutation = Callable[[Environment], Environment | None]

CONFLICT_ATTEMPTS = 40
CONFLICT_FIRST_WAIT_S = 0.005
CONFLICT_MAX_WAIT_S = 0.25  # at most ~8 s of waiting in all, before "try again"


def overtaken(env: Environment, asked_at: float | None) -> bool:
    """Whether a request received at `asked_at` was overtaken: the environment was asked for
    something else (relabelled, stopped) after it was received, e.g. a command resumed after a
    crash. None is a request handled as it arrives (a webhook, the idle stop): never overtaken."""
    wanted_at = env.facts.wanted_at
    return asked_at is not None and wanted_at is not None and asked_at < wanted_at


def asked(env: Environment, asked_at: float | None, now: float) -> float:
    """The environment's `wanted_at` once a request received at `asked_at` (None: now) is
    recorded: never earlier than it was."""
    return max(env.facts.wanted_at or 0.0, now if asked_at is None else asked_at)


async def change(store: Store, repo: str, pr: int, mutate: Mutation) -> Environment | None:
    """Compare-and-set: re-read and re-decide until the write lands (None: nothing to do),
    waiting a jittered, growing moment after each conflict; UserError after CONFLICT_ATTEMPTS."""
    for attempt in range(CONFLICT_ATTEMPTS):
        current = await store.get_environment(repo, pr)
        if current is None:
            return None
        wanted = mutate(current)
        if wanted is None:
            return None
        try:
            return await store.save_environment(wanted)
        except VersionConflict:
            ceiling = min(CONFLICT_MAX_WAIT_S, CONFLICT_FIRST_WAIT_S * 2**attempt)
            await asyncio.sleep(random.uniform(0, ceiling))  # jitter, not a secret
    raise UserError(slack_ui.changing_too_often(repo, pr))


async def edit_facts(
    store: Store, repo: str, pr: int, edit: Callable[[Facts], Facts | None]
) -> Environment | None:
    """Compare-and-set on an environment's facts alone (`edit` returns None: nothing to do)."""

    def mutate(env: Environment) -> Environment | None:
        facts = edit(env.facts)
        return None if facts is None else replace(env, facts=facts)

    return await change(store, repo, pr, mutate)


async def change_in_session(
    store: Store, repo: str, pr: int, session: str, mutate: Mutation
) -> Environment | None:
    """`change`, applying `mutate` only while the environment is still this launch's (`session`)
    and still live."""

    def guarded(env: Environment) -> Environment | None:
        if env.facts.session != session or env.state not in ACTIVE:
            return None
        return mutate(env)

    return await change(store, repo, pr, guarded)
