"""The one aiohttp application of `uat-bot serve`: /slack/events, /github/webhook, /healthz
(ready), /livez (alive), /metrics.

Its cleanup context first asks Slack who the bot token is (a refused token stops it with
ConfigError, Slack not answering does not), then opens the store, starts Socket Mode when
configured, and on shutdown (SIGTERM, SIGINT) cancels and awaits every background task before
closing the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import signal
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

import bot.guard
from bot.app import Runtime
from bot.config import Settings
from bot.github import WebhookEndpoint
from bot.guard import BODY, GITHUB_MAX_BODY, REJECTIONS, Rejections, guard
from bot.health import Health
from bot.logs import outside
from bot.metrics import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)
TASK_STACK_FRAMES = 12  # of each task, when SIGUSR1 asks where they wait
TASK_REPR_LIMIT = 1000  # characters of a task's repr (its coroutine, what it waits for)

RUNTIME = web.AppKey("runtime", Runtime)
HEALTH = web.AppKey("health", Health)
BLOCKING_THREADS = 32  # for blocking calls (boto3 above all): see _lifecycle


async def slack_events(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    with runtime.services.tasks.answering():  # work after earlier acks waits for this one
        return await _slack_events(runtime, request)


async def _slack_events(runtime: Runtime, request: web.Request) -> web.Response:
    if runtime.bolt is None:
        raise RuntimeError("/slack/events is routed only when the runtime has a Bolt app")
    rejections = request.app[REJECTIONS]
    body = request[BODY]
    secret = runtime.services.settings.slack_signing_secret
    # Checked here, before Bolt sees the request: Bolt logs the whole body of every request
    # whose signature it refuses.
    problem = slack_signature_problem(
        secret.get_secret_value() if secret else None, request.headers, body
    )
    if problem is not None:
        return rejections.refuse(SLACK_EVENTS, problem, 401, "invalid request")
    try:
        bolt_request = AsyncBoltRequest(
            body=body.decode(),
            query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]
        )
    except Exception:  # not UTF-8, a form's payload that is not JSON
        return rejections.refuse(SLACK_EVENTS, "unreadable", 400, "invalid request")
    if malformed_event(bolt_request.body) or malformed_payload(bolt_request.body):
        return rejections.refuse(SLACK_EVENTS, "malformed", 400, "malformed event")
    bolt_response = await runtime.bolt.async_dispatch(bolt_request)
    return await to_aiohttp_response(bolt_response)


SLACK_EVENTS = "/slack/events"
TIMESTAMP = re.compile(r"[0-9]{1,12}")  # seconds since 1970, as Slack sends them


def slack_signature_problem(
    secret: str | None, headers: Mapping[str, str], body: bytes
) -> str | None:
    """Why a request does not carry exactly one valid, fresh Slack signature (None: it does)."""
    getall = getattr(headers, "getall", None)
    timestamps = getall("X-Slack-Request-Timestamp", []) if getall else []
    signatures = getall("X-Slack-Signature", []) if getall else []
    if len(timestamps) != 1 or len(signatures) != 1:
        return "bad_signature"
    if not TIMESTAMP.fullmatch(timestamps[0].strip()):
        return "bad_timestamp"
    if secret is None:
        return "unconfigured"
    try:
        body.decode()  # Slack signs UTF-8; the verifier would fail on anything else with a 500
    except UnicodeDecodeError:
        return "unreadable"
    verifier = SignatureVerifier(secret)
    if not verifier.is_valid(body, timestamps[0].strip(), signatures[0].strip()):
        return "bad_signature"
    return None


EVENT_TEXT_FIELDS = ("type", "user", "channel", "ts", "thread_ts", "text", "subtype", "tab")


def malformed_event(body: dict[str, Any]) -> bool:
    """An Events API body whose event Slack would never send (Bolt fails on such with a 500)."""
    if body.get("type") != "event_callback":
        return False
    event = body.get("event")
    if not isinstance(event, dict):
        return True
    return any(not isinstance(event[k], str | None) for k in EVENT_TEXT_FIELDS if k in event)


PAYLOAD_OBJECTS = ("user", "team", "channel", "container", "message", "view", "enterprise")
PAYLOAD_TEXTS = ("type", "trigger_id", "response_url", "api_app_id", "callback_id", "token")


def malformed_payload(body: Any) -> bool:
    """A body (an interactivity payload above all) whose shape Slack would never send."""
    if not isinstance(body, dict):
        return True
    if any(not isinstance(body[k], dict | None) for k in PAYLOAD_OBJECTS if k in body):
        return True
    if any(not isinstance(body[k], str | None) for k in PAYLOAD_TEXTS if k in body):
        return True
    actions = body.get("actions")
    return actions is not None and (
        not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions)
    )


async def healthz(request: web.Request) -> web.Response:
    """Ready: 200 while the store reads and writes and Slack answers; else 503 and why."""
    runtime = request.app[RUNTIME]
    checks = await request.app[HEALTH].problems()
    ok = all(answer in ("ok", "connected") for answer in checks.values())
    body = {"ok": ok, **checks, "tasks": len(runtime.services.tasks)}
    return web.json_response(body, status=200 if ok else 503)


async def livez(request: web.Request) -> web.Response:
    """Alive: 200 whenever the process serves HTTP (a failing store or Slack is a reason to
    wait, which /healthz says, not to restart)."""
    return web.json_response({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[RUNTIME].services.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_web_app(runtime: Runtime) -> web.Application:
    settings = runtime.services.settings
    # The guard reads bodies within their limits; client_max_size is only a second fence. A body
    # left unread (a refused one) closes the connection instead of being read on for 10 s.
    app = web.Application(
        client_max_size=GITHUB_MAX_BODY,
        middlewares=[guard],
        handler_args={"lingering_time": 0, "keepalive_timeout": bot.guard.HEADER_DEADLINE},
    )
    app[RUNTIME] = runtime
    app[HEALTH] = Health(runtime.services.store, runtime.web_client)
    rejections = Rejections(runtime.services.metrics)
    app[REJECTIONS] = rejections
    secret = settings.github_webhook_secret
    webhook = WebhookEndpoint(
        secret.get_secret_value() if secret else None,
        runtime.services.store,
        lambda event: runtime.on_pull_request(event),
        settings.uat_repositories,
        rejections=rejections,
        count=lambda event, result: runtime.services.metrics.webhooks.labels(
            event=event, result=result
        ).inc(),
    )
    if runtime.bolt is not None and not settings.socket_mode:
        app.router.add_post("/slack/events", slack_events)

    async def github_webhook(request: web.Request) -> web.StreamResponse:
        with runtime.services.tasks.answering():  # the launches it starts wait for this one
            return await webhook.handle(request)

    app.router.add_post("/github/webhook", github_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    # Every boto3 call blocks a thread, botocore's retries sleeping in it. asyncio's default pool
    # (cores + 4: 6 threads on 2 cores) let a few throttled calls queue every other one behind
    # them, the store's health probe included (/healthz 503 for a minute in the soak).
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="blocking")
    )
    await runtime.check_slack()
    if runtime.slack_identity is not None:  # Slack has just answered auth.test: no need again
        app[HEALTH].slack.record(None)
    await runtime.start()
    # What start-up built (botocore's models above all) lives as long as the process: kept out of
    # the collector, a full collection no longer walks it, which paused every request ~60 ms.
    gc.collect()
    gc.freeze()
    # Requests make short-lived objects by the thousand: collect the young generation less often
    # (20,000 allocations instead of 700), so fewer collections land in the middle of an ack.
    thresholds = gc.get_threshold()
    gc.set_threshold(20_000, 20, 20)
    socket_mode = None
    settings = runtime.services.settings
    if settings.socket_mode and runtime.bolt is not None and runtime.web_client is not None:
        from bot.slack.socket_mode import SocketMode

        token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
        socket_mode = SocketMode(runtime.bolt, token, runtime.web_client, runtime.services.tasks)
        app[HEALTH].socket_mode = socket_mode.problem
        await socket_mode.connect()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals here (a thread)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_tasks)
    logger.info("uat-bot listening on %s:%d", settings.uat_host, settings.uat_port)
    try:
        yield
    finally:
        logger.info("shutting down")
        if socket_mode is not None:
            await socket_mode.close()
        await runtime.stop()
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def log_tasks() -> None:
    """`kill -USR1 <pid>`: log where every task of the process waits, to see why a launch or a
    command seems stuck without stopping anything."""
    tasks = asyncio.all_tasks()
    logger.warning("SIGUSR1: %d tasks, %d threads", len(tasks), threading.active_count())
    for task in sorted(tasks, key=lambda t: t.get_name()):
        frames = awaited_frames(task.get_coro())[-TASK_STACK_FRAMES:]
        stack = "".join(traceback.format_list(traceback.StackSummary.extract(frames)))
        # a task's name and repr carry outside text (a PR's repository): escaped like any
        name, what = outside(task.get_name()), outside(task, limit=TASK_REPR_LIMIT)
        logger.warning("task %s waits on %s:\n%s", name, what, stack.rstrip())
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame, limit=TASK_STACK_FRAMES))
        logger.warning("thread %s:\n%s", names.get(ident, ident), stack.rstrip())


def awaited_frames(coro: object) -> list[tuple[FrameType, int]]:
    """The frames of a coroutine and of what it awaits, down to the innermost (a task's own
    stack shows only its outermost frame while it is suspended)."""
    found = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            found.append((frame, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return found


def serve(settings: Settings, runtime: Runtime) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully. A problem found at start
    (a refused Slack token) comes out as ConfigError before anything listens."""
    web.run_app(
        create_web_app(runtime),
        host=settings.uat_host,
        port=settings.uat_port,
        print=None,
        shutdown_timeout=10,
        # One line per request, with the sender's User-Agent unescaped: a flood of hostile
        # requests would be a flood of lines. Refusals are counted in /metrics instead.
        access_log=None,
    )
