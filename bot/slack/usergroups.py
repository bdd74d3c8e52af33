"""The members of the Slack user groups UAT_OPERATORS names (`S…` IDs), read with
usergroups.users.list (https://api.slack.com/methods/usergroups.users.list, scope
`usergroups:read`) and kept for a few minutes, so a burst of commands asks Slack once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import UserError
from bot.logs import outside
from bot.slack import slack_ui

logger = logging.getLogger(__name__)

CACHE_S = 300.0  # how long a group's members are taken as known


def is_group(operator: str) -> bool:
    """Whether an UAT_OPERATORS entry is a user group's ID (`S…`) rather than a person's."""
    return operator[:1] == "S" and operator.isalnum()


class UserGroups:
    """Who is in a user group, as Slack says (cached for CACHE_S); without a Slack client (the
    console) no group can be read."""

    def __init__(
        self, client: AsyncWebClient | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self.clock = clock
        self._known: dict[str, tuple[float, frozenset[str]]] = {}

    async def members(self, group: str) -> frozenset[str]:
        """The user IDs in `group`; a UserError saying the group could not be read (and that
        the app needs `usergroups:read`) when Slack does not tell."""
        known = self._known.get(group)
        if known is not None and self.clock() - known[0] < CACHE_S:
            return known[1]
        if self.client is None:
            raise UserError(slack_ui.usergroup_unreadable(group))
        try:
            answer = await self.client.usergroups_users_list(usergroup=group)
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            logger.warning("usergroups.users.list %s: %s", outside(group), outside(error))
            raise UserError(slack_ui.usergroup_unreadable(group)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("usergroups.users.list %s: %s", outside(group), type(exc).__name__)
            raise UserError(slack_ui.usergroup_unreadable(group)) from None
        users = frozenset(str(u) for u in answer.get("users") or [])
        self._known[group] = (self.clock(), users)
        return users
