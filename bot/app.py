"""Composition root: settings, gateways, store, chat, task supervisor, dispatcher and the Bolt app.

Nothing else builds clients; everything downstream gets what it needs from here. The Bolt app's
listeners live in bot/slack/listeners/ and register themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import boto3
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.aws.codebuild import CodeBuild
from bot.aws.gateways import Ecr, Ecs, ErrorHook
from bot.aws.logs import CloudWatchLogs
from bot.aws.queue import EventQueue
from bot.config import Settings, token_refused
from bot.container import ContainerClient
from bot.environments import Context, Environments
from bot.errors import ConfigError
from bot.github import PullRequestHandler
from bot.github_api import GitHubApi
from bot.images.builders import builder_for, tags_for
from bot.images.docker_build import Docker
from bot.images.operations import ImagePipeline
from bot.metrics import Metrics
from bot.prompts import Prompts
from bot.scrub import Scrubber
from bot.slack import listeners
from bot.slack.chat import (
    Chat,
    ScrubbedChat,
    SlackChat,
    SlackIdentity,
    SlackUnreachable,
    TokenRefused,
    who_am_i,
)
from bot.slack.context import Services
from bot.slack.dispatch import Dispatcher, load_commands
from bot.slack.inbox import Inbox
from bot.slack.listeners.inbox import keep_taking_over
from bot.slack.usergroups import UserGroups
from bot.store import RETENTION_S, SqliteStore, Store
from bot.tasks import TaskSupervisor

logger = logging.getLogger(__name__)

RESUME_PROMPTS_S = 60.0
SLACK_CHECK_S = 10.0  # how long start-up waits for auth.test before serving without it
SLACK_RECHECK_S = (5.0, 300.0)  # the background auth.test's first and longest wait

HTTP_TIMEOUT_S = 10.0  # the one HTTP session's default for a whole request


class HttpSession:
    """The bot's one aiohttp session, for Slack's response_urls and the containers alike:
    opened when the runtime starts (aiohttp wants a running loop), closed when it stops."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
            self._session = aiohttp.ClientSession(timeout=timeout)

    def __call__(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            raise RuntimeError("the HTTP session is not open: Runtime.start() opens it")
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass
class Runtime:
    """The assembled bot: what the HTTP server, Socket Mode and the console drive."""

    services: Services
    dispatcher: Dispatcher
    on_pull_request: PullRequestHandler
    bolt: AsyncApp | None = None
    web_client: AsyncWebClient | None = None
    slack_identity: SlackIdentity | None = None  # from auth.test, once Slack has answered it
    http: HttpSession = field(default_factory=HttpSession, repr=False)

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
        client = self.web_client
        if client is None:
            raise RuntimeError("auth.test needs Slack: this runtime was built without it")
        try:
            async with asyncio.timeout(SLACK_CHECK_S):
                self.slack_identity = await who_am_i(client)
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
        """Open the HTTP session and the store; with ECS configured, reconcile with it and start
        the watcher."""
        self.http.open()
        try:
            await self.services.store.open()
        except BaseException:  # StoreUnavailable above all: serve says it in one line and stops
            await self.http.close()
            raise
        self.services.tasks.spawn(self._prune(), name="prune the store", service=True)
        inbox = self.dispatcher.inbox
        if self.bolt is not None and inbox is not None:  # Slack's commands and clicks
            self.services.tasks.spawn(inbox.keep(), name="hold inbox items", service=True)
            resume = keep_taking_over(self)
            self.services.tasks.spawn(resume, name="take over inbox items", service=True)
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

    async def stop(self) -> None:
        await self.services.tasks.close()
        await self.http.close()
        await self.services.environments.close()
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


def slack_permalink(client: AsyncWebClient) -> Callable[[str, str], Awaitable[str | None]]:
    """chat.getPermalink: the link to a message (a PR's thread, for GitHub's deployments)."""

    async def permalink(channel: str, ts: str) -> str | None:
        answer = await client.chat_getPermalink(channel=channel, message_ts=ts)
        link = answer.get("permalink")
        return link if isinstance(link, str) else None

    return permalink


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
    http = HttpSession()
    container = ContainerClient(http)
    tasks = TaskSupervisor()
    metrics = Metrics()
    if isinstance(chat, SlackChat):
        chat.metrics = metrics
    # the one door out: whatever the bot says, posts or uploads leaves without credentials
    scrubber = Scrubber(settings.secrets())
    chat = ScrubbedChat(chat, scrubber)
    pipeline = build_pipeline(
        settings, store, session=session, docker=docker, on_error=metrics.aws_error
    )
    ecs = Ecs(settings, session)
    ecs.on_error = metrics.aws_error
    logs = CloudWatchLogs(settings, session)
    logs.on_error = metrics.aws_error
    events_queue = EventQueue(settings, session) if settings.uat_events_queue else None
    if events_queue is not None:
        events_queue.on_error = metrics.aws_error
    environments = Environments(
        Context(
            settings,
            store,
            chat,
            pipeline.ecr,
            ecs,
            container,
            tasks,
            metrics=metrics,
            logs=logs,
            github=GitHubApi(settings, http) if settings.github_access else None,
            permalink=slack_permalink(web_client) if web_client is not None else None,
            events_queue=events_queue,
        )
    )
    services = Services(
        settings=settings,
        store=store,
        chat=chat,
        tasks=tasks,
        pipeline=pipeline,
        environments=environments,
        prompts=Prompts(settings, store, chat, environments, container, tasks),
        metrics=metrics,
        scrubber=scrubber,
        usergroups=UserGroups(web_client),
    )
    runtime = Runtime(
        services=services,
        dispatcher=Dispatcher(*load_commands(), inbox=Inbox(store)),
        on_pull_request=environments.on_pull_request,
        web_client=web_client,
        http=http,
    )
    if web_client is not None:
        runtime.bolt = build_bolt(runtime, web_client)
    return runtime


def build_bolt(runtime: Runtime, client: AsyncWebClient) -> AsyncApp:
    """The Bolt app, with the listeners of bot/slack/listeners/ registered on it.

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

    listeners.register(bolt, runtime)
    return bolt
