"""Composition root: settings, store, chat, task supervisor, dispatcher and the Bolt app.

Nothing else builds clients; everything downstream gets what it needs from here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import boto3
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import slack_ui
from bot.aws import Ecr, Ecs, ErrorHook
from bot.builders import builder_for, tags_for
from bot.chat import (
    Blocks,
    Chat,
    ChatError,
    SlackChat,
    SlackIdentity,
    SlackUnreachable,
    TokenRefused,
    one_line,
    who_am_i,
)
from bot.codebuild import CodeBuild
from bot.config import Settings, token_refused
from bot.context import CommandContext, Services
from bot.dispatch import Dispatcher, load_commands
from bot.environments import ACTIVE, Environments
from bot.errors import ConfigError, UserError
from bot.github import PullRequestHandler
from bot.images import Docker
from bot.metrics import Metrics
from bot.pipeline import ImagePipeline, Overview
from bot.prompts import Prompts
from bot.store import RETENTION_S, SqliteStore, Store
from bot.tasks import TaskSupervisor

logger = logging.getLogger(__name__)

RESUME_PROMPTS_S = 60.0
SLACK_CHECK_S = 10.0  # how long start-up waits for auth.test before serving without it
SLACK_RECHECK_S = (5.0, 300.0)  # the background auth.test's first and longest wait

SLASH_COMMAND = "/uat"


@dataclass
class Runtime:
    """The assembled bot: what the HTTP server, Socket Mode and the console drive."""

    services: Services
    dispatcher: Dispatcher
    on_pull_request: PullRequestHandler
    bolt: AsyncApp | None = None
    web_client: AsyncWebClient | None = None
    slack_identity: SlackIdentity | None = None  # from auth.test, once Slack has answered it
    _http: aiohttp.ClientSession | None = field(default=None, repr=False)

    async def check_slack(self) -> None:
        """Ask Slack who the bot token is (auth.test), before serving anything.

        A refused token raises ConfigError (serve stops with that line). Slack not answering is
        one warning: the bot serves anyway and asks again in the background, backing off.
        """
        if self.web_client is None:
            return
        try:
            await self._who_am_i()
        except SlackUnreachable as exc:
            logger.warning("%s; serving anyway and checking again in the background", exc.line)
            self.services.tasks.spawn(self._recheck_slack(), name="Slack check", service=True)

    async def _who_am_i(self) -> None:
        assert self.web_client is not None
        try:
            async with asyncio.timeout(SLACK_CHECK_S):
                self.slack_identity = await who_am_i(self.web_client)
        except TimeoutError:
            raise SlackUnreachable("auth.test", f"no answer in {SLACK_CHECK_S:.0f}s") from None
        except TokenRefused as exc:
            raise ConfigError([token_refused(exc.error)]) from None
        me = self.slack_identity
        logger.info(
            "Slack: signed in as %s (%s) in %s (%s)", me.user, me.user_id, me.team, me.team_id
        )

    async def _recheck_slack(self) -> None:
        """auth.test again, waiting twice as long each time, until Slack answers."""
        wait, longest = SLACK_RECHECK_S
        while True:
            await asyncio.sleep(wait)
            try:
                await self._who_am_i()
                return
            except SlackUnreachable as exc:
                wait = min(wait * 2, longest)
                logger.info("%s; checking again in %.0fs", exc.line, wait)
            except ConfigError as exc:
                logger.error("%s", "; ".join(exc.problems))
                return

    async def start(self, *, watch: bool = True) -> None:
        """Open the store; with ECS configured, reconcile with it and start the watcher."""
        await self.services.store.open()
        self.services.tasks.spawn(self._prune(), name="prune the store", service=True)
        if watch and self.services.settings.uat_ecs_cluster:
            watcher = self.services.environments.watch()
            self.services.tasks.spawn(watcher, name="environment watcher", service=True)
            await self.services.prompts.resume()
            self.services.tasks.spawn(self._follow_prompts(), name="prompt followers", service=True)

    async def _follow_prompts(self) -> None:
        """Every minute, follow the open prompts nobody here follows: those a replica that died
        was following, and those whose follower failed (Slack down past its patience)."""
        while True:
            await asyncio.sleep(RESUME_PROMPTS_S)
            try:
                await self.services.prompts.resume()
            except Exception:
                logger.warning("could not list the open prompts; trying again", exc_info=True)

    async def _prune(self) -> None:
        """Forget old one-time keys now and once a day (GitHub redelivers within days)."""
        while True:
            try:
                pruned = await self.services.store.prune(time.time() - RETENTION_S)
                if pruned:
                    days = RETENTION_S // 86400
                    logger.info("forgot %d one-time keys older than %d days", pruned, days)
            except Exception:
                logger.warning("could not prune the store; trying again tomorrow", exc_info=True)
            await asyncio.sleep(24 * 3600)

    def http(self) -> aiohttp.ClientSession:
        """One HTTP session for the bot's own calls (response_urls), made on first use."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._http

    async def stop(self) -> None:
        await self.services.tasks.close()
        if self._http is not None:
            await self._http.close()
        await self.services.environments.close()
        await self.services.prompts.close()
        await self.services.store.close()


def slack_client(settings: Settings) -> AsyncWebClient:
    """The Web API client: `SLACK_API_URL`, retrying 429 (Retry-After), 5xx and resets."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    return AsyncWebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=15,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=3),
        ],
    )


def build_store(settings: Settings) -> Store:
    """SQLite by default; DynamoDB when several replicas share state."""
    if settings.uat_store == "dynamodb":
        from bot.store.dynamodb import DynamoStore

        return DynamoStore(settings)
    return SqliteStore(settings.uat_db)


def build_pipeline(
    settings: Settings,
    store: Store,
    *,
    session: boto3.session.Session | None = None,
    docker: Docker | None = None,
    on_error: ErrorHook | None = None,
) -> ImagePipeline:
    """The image operations, for Slack, the console and the terminal alike, with the builder
    UAT_BUILDER names."""
    ecr, docker = Ecr(settings, session), docker or Docker()
    codebuild = CodeBuild(settings, session)
    ecr.on_error = codebuild.on_error = on_error
    builder = builder_for(settings, ecr, docker, codebuild)
    return ImagePipeline(settings, store, ecr, builder, tags_for(settings, ecr, docker))


def build_runtime(
    settings: Settings,
    *,
    chat: Chat | None = None,
    store: Store | None = None,
    with_slack: bool = True,
    session: boto3.session.Session | None = None,
    docker: Docker | None = None,
) -> Runtime:
    """Assemble the bot. `with_slack=False` (the console) builds no Slack client or Bolt app;
    `session` (the AWS gateways') and `docker` replace the defaults (the console's)."""
    web_client = slack_client(settings) if with_slack else None
    if chat is None:
        if web_client is None:
            raise ValueError("a chat is needed when Slack is not used")
        chat = SlackChat(web_client)
    store = store or build_store(settings)
    tasks = TaskSupervisor()
    metrics = Metrics()
    if isinstance(chat, SlackChat):
        chat.metrics = metrics
    pipeline = build_pipeline(
        settings, store, session=session, docker=docker, on_error=metrics.aws_error
    )
    ecs = Ecs(settings, session)
    ecs.on_error = metrics.aws_error
    environments = Environments(settings, store, chat, pipeline.ecr, ecs, tasks, metrics=metrics)
    services = Services(
        settings=settings,
        store=store,
        chat=chat,
        tasks=tasks,
        pipeline=pipeline,
        environments=environments,
        prompts=Prompts(settings, store, chat, environments, tasks),
        metrics=metrics,
    )
    runtime = Runtime(
        services=services,
        dispatcher=Dispatcher(*load_commands()),
        on_pull_request=environments.on_pull_request,
        web_client=web_client,
    )
    if web_client is not None:
        runtime.bolt = build_bolt(runtime, web_client)
    return runtime


class SlackReply:
    """Answers a slash command or a click through its response_url, on the bot's one HTTP
    session (no new connection per answer); when that fails, by an ephemeral post instead."""

    def __init__(self, response_url: str | None, runtime: Runtime, channel: str, user: str) -> None:
        self._url = response_url
        self._runtime = runtime
        self._channel = channel
        self._user = user

    async def __call__(
        self,
        text: str,
        blocks: Blocks | None = None,
        *,
        in_channel: bool = False,
        replace_original: bool = False,
    ) -> None:
        text, blocks = slack_ui.fit(text, blocks)
        status, failure = 0, ""
        if self._url:
            body: dict[str, Any] = {
                "text": text,
                "response_type": "in_channel" if in_channel else "ephemeral",
                "replace_original": replace_original,
            }
            if blocks is not None:
                body["blocks"] = blocks
            try:
                async with self._runtime.http().post(self._url, json=body) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:  # must not lose the answer
                failure = type(exc).__name__
        if status == 200:
            return
        failure = failure or f"HTTP {status}"
        chat = self._runtime.services.chat
        try:
            if in_channel:
                await chat.post(self._channel, text, blocks)
            else:
                await chat.ephemeral(self._channel, self._user, text, blocks)
        except SlackUnreachable as exc:  # nowhere left to say it: one line in the log
            logger.warning("%s; the answer to %s is lost", exc.line, self._user)
            return
        except ChatError as exc:
            logger.warning("could not answer %s: %s", self._user, exc)
            return
        if self._url:
            logger.warning("response_url failed (%s); the answer was posted instead", failure)


async def relay_reply(services: Services, event: dict[str, Any]) -> None:
    """Send a thread reply to its PR's agent; any refusal is said in the thread."""
    channel, thread = services.settings.uat_channel or "", str(event["thread_ts"])
    env = await services.environments.by_thread(thread)
    if env is None:
        return  # a thread that is not a PR's
    try:
        await services.prompts.submit(env, str(event.get("text", "")), str(event["user"]))
    except UserError as exc:
        await services.chat.post(channel, str(exc), None, thread)
    except Exception:
        ref = secrets.token_hex(4)
        logger.exception("relaying a thread reply failed (ref %s)", ref)
        await services.chat.post(channel, slack_ui.something_went_wrong(ref), None, thread)


def build_bolt(runtime: Runtime, client: AsyncWebClient) -> AsyncApp:
    """The Bolt app: `/uat`, and acknowledgement for events nothing acts on yet.

    Bolt's own authorization would call auth.test on the first request (and on every one while
    Slack does not answer, failing the ack with a traceback); `authorize` answers from what the
    start-up check learnt instead, without the network. Bolt's client is a template it copies
    per request, taking the token from `authorize`, so it carries none itself (a token on it
    beside `authorize` would be "ignored", with a warning).
    """
    settings = runtime.services.settings
    secret = settings.slack_signing_secret
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None

    async def authorize(
        enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        me = runtime.slack_identity
        return AuthorizeResult(
            enterprise_id=me.enterprise_id if me else enterprise_id,
            team_id=me.team_id if me else team_id,
            bot_user_id=me.user_id if me else None,
            bot_id=me.bot_id if me else None,
            bot_token=token,
            user_id=user_id,
        )

    template = AsyncWebClient(
        base_url=client.base_url, timeout=client.timeout, retry_handlers=client.retry_handlers
    )
    bolt = AsyncApp(
        client=template,
        authorize=authorize,
        signing_secret=secret.get_secret_value() if secret else None,
        request_verification_enabled=not settings.socket_mode,
        raise_error_for_unhandled_request=False,
        process_before_response=False,
    )

    @bolt.command(SLASH_COMMAND)
    async def on_uat(ack: AsyncAck, command: dict[str, Any]) -> None:
        ctx = CommandContext(
            services=runtime.services,
            user_id=command["user_id"],
            channel_id=command["channel_id"],
            user_name=command.get("user_name", ""),
            trigger_id=command.get("trigger_id"),
            reply=SlackReply(
                command.get("response_url"), runtime, command["channel_id"], command["user_id"]
            ),
        )

        async def acknowledge(text: str | None) -> None:
            await (ack(text=text) if text else ack())

        await runtime.dispatcher.dispatch(ctx, command.get("text", ""), acknowledge)

    @bolt.action(re.compile(r"^uat\."))
    async def on_button(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        action = body["actions"][0]
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or body["container"].get("channel_id", "")
        ctx = CommandContext(
            services=runtime.services,
            user_id=user,
            channel_id=channel,
            user_name=body["user"].get("username", ""),
            trigger_id=body.get("trigger_id"),
            message_ts=body["container"].get("message_ts"),
            reply=SlackReply(body.get("response_url"), runtime, channel, user),
        )
        runtime.dispatcher.click(ctx, action["action_id"], action.get("value", ""))

    @bolt.event("app_home_opened")
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
        try:
            await client.views_publish(user_id=event["user"], view=view)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("%s", SlackUnreachable("views.publish", one_line(exc)).line)

    @bolt.event("message")
    async def on_message(body: dict[str, Any], event: dict[str, Any]) -> None:
        """A person's reply in a PR's thread is a prompt for that PR's agent."""
        settings = runtime.services.settings
        thread = event.get("thread_ts")
        if (
            event.get("channel") != settings.uat_channel
            or not thread
            or thread == event.get("ts")
            or event.get("subtype")
            or event.get("bot_id")
            or not event.get("user")
        ):
            return
        if not await runtime.services.store.claim(f"event:{body.get('event_id')}", "message"):
            return  # Slack's retry of an event already relayed
        runtime.services.tasks.spawn(
            relay_reply(runtime.services, event), name=f"relay reply {event.get('ts')}"
        )

    @bolt.error
    async def on_error(error: Exception) -> None:
        if isinstance(error, aiohttp.ClientError | TimeoutError):  # Slack did not answer
            logger.warning("Slack unreachable (a Bolt listener's call): %s", one_line(error))
            return
        logger.error("Bolt listener failed: %r", error, exc_info=error)

    return bolt
