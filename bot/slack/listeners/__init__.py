"""Bolt listeners, each kind in its own module that registers its own (as the bolt-python starter
template's `listeners/` does): the composition root calls `register(app, runtime)` once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slack_bolt.async_app import AsyncApp

from bot.slack.listeners import actions, commands, errors, events

if TYPE_CHECKING:
    from bot.app import Runtime


def register(app: AsyncApp, runtime: Runtime) -> None:
    """Register the slash command, the buttons, the events and the error handler on `app`."""
    commands.register(app, runtime)
    actions.register(app, runtime)
    events.register(app, runtime)
    errors.register(app)
