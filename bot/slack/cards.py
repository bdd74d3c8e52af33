"""Interactive cards: button values, single use, and the shared Cancel button.

A card's buttons carry a JSON value with a fresh card id. The first click on any of its
buttons claims the id in the store; a second click, a double click or a click on another
replica does nothing again.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, TypeVar

from bot.errors import UserError
from bot.slack import action_ids, slack_ui
from bot.slack.context import CommandContext

T = TypeVar("T")


def card_value(**fields: Any) -> str:
    return json.dumps({"card": secrets.token_hex(8), **fields}, separators=(",", ":"))


def parse_value(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        raise UserError(slack_ui.CARD_USED) from None
    if not isinstance(value, dict) or not isinstance(value.get("card"), str):
        raise UserError(slack_ui.CARD_USED)
    try:
        value["card"].encode()
    except UnicodeEncodeError:
        raise UserError(slack_ui.CARD_USED) from None
    return value


def field(value: dict[str, Any], name: str, kind: type[T]) -> T:
    """A field a button handler needs, checked before the card is claimed."""
    item = value.get(name)
    whole = isinstance(item, int) and not isinstance(item, bool)
    if kind is int and not (whole and 0 < item < 2**31):  # type: ignore[operator]
        raise UserError(slack_ui.CARD_USED)
    if not isinstance(item, kind):
        raise UserError(slack_ui.CARD_USED)
    return item


async def claim_card(ctx: CommandContext, value: dict[str, Any], action: str) -> bool:
    """True for the first click on this card; afterwards the clicker is told it was used."""
    if await ctx.services.store.claim(f"card:{value['card']}", action):
        return True
    await ctx.reply(slack_ui.CARD_USED)
    return False


async def cancel(ctx: CommandContext, value: dict[str, Any]) -> None:
    if await claim_card(ctx, value, "cancel"):
        await ctx.reply(slack_ui.CANCELLED, replace_original=True)


ACTIONS = {action_ids.CANCEL: cancel}
