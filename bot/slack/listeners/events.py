"""Events: the App Home tab, and a person's reply in a PR's thread (a prompt for its agent)."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.environments import ACTIVE
from bot.errors import UserError
from bot.images.operations import Overview
from bot.slack import slack_ui
from bot.slack.chat import Message, SlackUnreachable, one_line
from bot.slack.context import Services, change_refusal
from bot.store import StoreUnavailable

if TYPE_CHECKING:
    from bot.app import Runtime

logger = logging.getLogger(__name__)


async def relay_reply(services: Services, event: dict[str, Any]) -> None:
    """Send a thread reply to its PR's agent; any refusal is said in the thread."""
    channel, thread = services.settings.uat_channel or "", str(event["thread_ts"])
    env = await services.environments.by_thread(thread)
    if env is None:
        return  # a thread that is not a PR's
    try:
        refusal = await change_refusal(
            services.settings, str(event["user"]), channel, groups=services.usergroups
        )
        if refusal:
            raise UserError(refusal)
        await services.prompts.submit(env, str(event.get("text", "")), str(event["user"]))
    except StoreUnavailable as exc:
        logger.warning("a thread reply was not recorded: %s", exc.line)
        await services.chat.post(Message(channel, slack_ui.NOT_RECORDED, None, thread))
    except UserError as exc:
        await services.chat.post(Message(channel, str(exc), None, thread))
    except Exception:
        ref = secrets.token_hex(4)
        logger.exception("relaying a thread reply failed (ref %s)", ref)
        await services.chat.post(Message(channel, slack_ui.something_went_wrong(ref), None, thread))


# A reply "also sent to the channel" is still a reply; every other subtype (an edit
# `message_changed`, `message_deleted`, `bot_message`, `channel_join`, `message_replied`, ...) is
# Slack telling of something else. https://docs.slack.dev/reference/events/message/
RELAYED_SUBTYPES = frozenset({"", "thread_broadcast"})


def is_a_persons_reply(event: dict[str, Any], channel: str | None) -> bool:
    """Whether a `message` event is a person's new reply in a thread of the UAT channel.

    A bot's message (the bot's own included: Bolt drops those first) has a `bot_id`."""
    thread = event.get("thread_ts")
    return bool(
        event.get("channel") == channel
        and thread
        and thread != event.get("ts")
        and event.get("subtype", "") in RELAYED_SUBTYPES
        and not event.get("bot_id")
        and event.get("user")
    )


def register(app: AsyncApp, runtime: Runtime) -> None:
    @app.event("app_home_opened")
    async def on_home(event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("tab", "home") != "home":
            return
        services = runtime.services
        envs = await services.store.list_environments(ACTIVE)
        try:
            images: Overview | str = await services.pipeline.overview(recent=0)
        except UserError as exc:
            images = str(exc)
        view = slack_ui.home_view(envs, images, services.settings, services.environments.clock())
        view = services.scrubber.value(view)
        try:
            await client.views_publish(user_id=event["user"], view=view)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("%s", SlackUnreachable("views.publish", one_line(exc)).line)

    @app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        """A person's reply in a PR's thread is a prompt for that PR's agent."""
        if not is_a_persons_reply(event, runtime.services.settings.uat_channel):
            return
        # Slack re-sends an event it got no 200 for in 3 s (X-Slack-Retry-Num, same event_id), and
        # a reply may reach more than one replica: the store's one-time claim on the message
        # itself (channel and ts, the same in every copy) lets exactly one of them relay it.
        key = f"reply:{event.get('channel')}:{event.get('ts')}"
        try:
            if not await runtime.services.store.claim(key, "message"):
                return  # a copy of a reply already relayed
        except StoreUnavailable as exc:
            logger.warning("a thread reply was not recorded: %s", exc.line)
            message = Message(
                str(event["channel"]), slack_ui.NOT_RECORDED, None, str(event["thread_ts"])
            )
            await runtime.services.chat.post(message)
            return
        runtime.services.tasks.spawn(
            relay_reply(runtime.services, event), name=f"relay reply {event.get('ts')}"
        )
