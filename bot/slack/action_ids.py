"""The action ids of the bot's buttons, named once: the cards that send them and the handlers
(`commands/`, bot/slack/cards.py) that answer them use these names; the Bolt listener takes every id
that starts with PREFIX."""

from __future__ import annotations

from typing import Final

PREFIX: Final = "uat."

CANCEL: Final = "uat.cancel"
PROMOTE_CONFIRM: Final = "uat.promote.confirm"
LATEST_CONFIRM: Final = "uat.latest.confirm"
CLEANUP_CONFIRM: Final = "uat.cleanup.confirm"
ROLLBACK_PICK: Final = "uat.rollback.pick"
ROLLBACK_CONFIRM: Final = "uat.rollback.confirm"
UNDO: Final = "uat.undo"
ENV_EXTEND: Final = "uat.env.extend"
ENV_RESTART: Final = "uat.env.restart"
PROMPT_CANCEL: Final = "uat.prompt.cancel"
ENV_LOGS: Final = "uat.env.logs"
