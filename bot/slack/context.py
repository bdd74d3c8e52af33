"""What a command or an interaction is handed: the services, who asked, where, and how to answer.

The composition root (`bot.app`) builds one `Services`; every invocation gets a `CommandContext`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.config import Settings
from bot.environments import Environments
from bot.errors import UserError
from bot.images.operations import ImagePipeline
from bot.metrics import Metrics
from bot.prompts import Prompts
from bot.scrub import Scrubber
from bot.slack import slack_ui
from bot.slack.chat import Blocks, Chat
from bot.slack.inbox import acting_key
from bot.slack.usergroups import UserGroups, is_group
from bot.store import Store
from bot.tasks import TaskSupervisor


class Reply(Protocol):
    """Answer the person who asked (ephemeral unless `in_channel`)."""

    def __call__(
        self,
        text: str,
        blocks: Blocks | None = None,
        *,
        in_channel: bool = False,
        replace_original: bool = False,
    ) -> Awaitable[None]: ...


@dataclass
class Services:
    """Everything long-lived, built once by the composition root and passed down.

    Gateways that later capabilities need (ECR, ECS, docker, environments) are added here as
    fields, so commands reach them only through this object.
    """

    settings: Settings
    store: Store
    chat: Chat
    tasks: TaskSupervisor
    pipeline: ImagePipeline
    environments: Environments
    prompts: Prompts
    metrics: Metrics
    # the members of the user groups UAT_OPERATORS names
    usergroups: UserGroups = field(default_factory=UserGroups)
    # what leaves for Slack by another door than `chat` (response_url answers, acks, views)
    # goes through it too
    scrubber: Scrubber = field(default_factory=Scrubber)


@dataclass
class CommandContext:
    """One invocation: the services, the person, the channel, and the way back to them."""

    services: Services
    user_id: str
    channel_id: str
    reply: Reply
    user_name: str = ""
    trigger_id: str | None = None
    message_ts: str | None = None  # the message whose button was clicked
    item: str | None = None  # its key in the durable inbox (bot/slack/inbox.py), once stored
    # when the inbox received it (a resumed one keeps its first receipt): a stop or restart
    # received before the environment was asked for something else does not undo that
    received_at: float | None = None

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def pipeline(self) -> ImagePipeline:
        return self.services.pipeline

    @property
    def environments(self) -> Environments:
        return self.services.environments

    @property
    def is_deployer(self) -> bool:
        return self.user_id in self.services.settings.uat_deployers

    async def require_changer(self, author: str | None = None) -> None:
        """Refuse a change to an environment unless it comes from the UAT channel (or a PR's
        thread in it) and, when UAT_OPERATORS is set, from an operator (or a member of an
        operators' user group) or a deployer (or `author`, the person whose prompt it is); the
        refusal says who may."""
        refusal = await change_refusal(
            self.settings, self.user_id, self.channel_id, author, groups=self.services.usergroups
        )
        if refusal:
            raise UserError(refusal)

    async def point_of_no_return(self) -> None:
        """Say that the command starts acting now: run again after a crash, it would act twice,
        so from here on a crash tells its user instead (bot/slack/inbox.py)."""
        if self.item is not None:
            await self.services.store.claim(acting_key(self.item), "acting")

    def require_deployer(self, action: str) -> None:
        """Refuse unless the person is in UAT_DEPLOYERS; the refusal says who can."""
        if not self.is_deployer:
            raise UserError(slack_ui.deployers_only(action, self.settings.uat_deployers))


ActionHandler = Callable[[CommandContext, dict[str, Any]], Awaitable[None]]


async def change_refusal(
    settings: Settings,
    user: str,
    channel: str,
    author: str | None = None,
    *,
    groups: UserGroups | None = None,
) -> str | None:
    """Why `user` may not change an environment from `channel`; None when they may. Operators
    are Slack user IDs and user-group IDs (`S…`), whose members `groups` reads from Slack only
    when the person is not allowed by name; a group that cannot be read refuses, saying so."""
    if settings.uat_channel and channel != settings.uat_channel:
        return slack_ui.changes_in_channel_only(settings.uat_channel)
    operators = settings.uat_operators
    allowed = {*(o for o in operators if not is_group(o)), *settings.uat_deployers}
    if author:
        allowed.add(author)
    if not (operators or author) or user in allowed:
        return None
    for group in (o for o in operators if is_group(o)):
        try:
            if user in await (groups or UserGroups()).members(group):
                return None
        except UserError as exc:
            return str(exc)
    return slack_ui.operators_only(operators, settings.uat_deployers, author is not None)
