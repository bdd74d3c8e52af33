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

    def require_changer(self, author: str | None = None) -> None:
        """Refuse a change to an environment unless it comes from the UAT channel (or a PR's
        thread in it) and, when UAT_OPERATORS is set, from an operator or a deployer (or
        `author`, the person whose prompt it is); the refusal says who may."""
        refusal = change_refusal(self.settings, self.user_id, self.channel_id, author)
        if refusal:
            raise UserError(refusal)

    def require_deployer(self, action: str) -> None:
        """Refuse unless the person is in UAT_DEPLOYERS; the refusal says who can."""
        if not self.is_deployer:
            raise UserError(slack_ui.deployers_only(action, self.settings.uat_deployers))


ActionHandler = Callable[[CommandContext, dict[str, Any]], Awaitable[None]]


def change_refusal(
    settings: Settings, user: str, channel: str, author: str | None = None
) -> str | None:
    """Why `user` may not change an environment from `channel`; None when they may. Operators
    are Slack user IDs (user-group IDs `S…` are not resolved yet: list the people)."""
    if settings.uat_channel and channel != settings.uat_channel:
        return slack_ui.changes_in_channel_only(settings.uat_channel)
    allowed = {*settings.uat_operators, *settings.uat_deployers}
    if author:
        allowed.add(author)
    if (settings.uat_operators or author) and user not in allowed:
        return slack_ui.operators_only(
            settings.uat_operators, settings.uat_deployers, author is not None
        )
    return None
