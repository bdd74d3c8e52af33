"""Every state change of an environment is a compare-and-set in the store, made before
anything acts on it: re-read and re-decide until the write lands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from bot.environments.context import ACTIVE
from bot.errors import UserError
from bot.slack import slack_ui
from bot.store import Environment, Facts, Store, VersionConflict

Mutation = Callable[[Environment], Environment | None]


async def change(store: Store, repo: str, pr: int, mutate: Mutation) -> Environment | None:
    """Compare-and-set: re-read and re-decide until the write lands (None: nothing to do)."""
    for _ in range(20):
        current = await store.get_environment(repo, pr)
        if current is None:
            return None
        wanted = mutate(current)
        if wanted is None:
            return None
        try:
            return await store.save_environment(wanted)
        except VersionConflict:
            await asyncio.sleep(0)
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
