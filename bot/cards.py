"""Interactive cards: button values, single use, and the shared Cancel button.

A card's buttons carry a JSON value with a fresh card id. The first click on any of its
buttons claims the id in the store; a second click, a double click or a click on another
replica does nothing again.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from bot import slack_ui
from bot.context import CommandContext
from bot.errors import UserError


def card_value(**fields: Any) -> str:
    return json.dumps({"card": secrets.token_hex(8), **fields}, separators=(",", ":"))


def parse_value(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        raise UserError(slack_ui.CARD_USED) from None
    if not isinstance(value, dict) or not isinstance(value.get("card"), str):
        raise UserError(slack_ui.CARD_USED)
    return value


async def claim_card(ctx: CommandContext, value: dict[str, Any], action: str) -> bool:
    """True for the first click on this card; afterwards the clicker is told it was used."""
    if await ctx.services.store.claim(f"card:{value['card']}", action):
        return True
    await ctx.reply(slack_ui.CARD_USED)
    return False


async def cancel(ctx: CommandContext, value: dict[str, Any]) -> None:
    if await claim_card(ctx, value, "cancel"):
        await ctx.reply(slack_ui.CANCELLED, replace_original=True)


ACTIONS = {"uat.cancel": cancel}
