"""`/uat staging` and `/uat latest` end to end: signed slash commands through the real HTTP server,
a git source repo in a temp dir, the real docker engine and the auth-less registry on 127.0.0.1.

Each test pushes to its own repository (`t-<uuid8>`) so tests never see each other's tags.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import gateway_text
from bot.app import Runtime
from bot.images.operations import LOCK
from bot.slack import slack_ui
from tests.harness.bot import CHANNEL, DEPLOYER, DEVELOPER, SIGNING_SECRET, Bot, BotFactory
from tests.harness.gitrepo import SourceRepo, dockerfile, remove_built_images
from tests.harness.services import ensure_dockerd, ensure_registry, fetch_manifest, require
from tests.harness.signing import slack_headers, slash_command_body

SLACK_ACK_S = 3.0  # Slack shows an error when a slash command is not acknowledged within 3 s


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def registry() -> str:
    require(ensure_dockerd)
    return require(ensure_registry)


@pytest.fixture
def repository() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def source(tmp_path: Path) -> SourceRepo:
    return SourceRepo.create(tmp_path / "source", message="Say hello from the UAT image")


@pytest.fixture
def local_images(repository: str, tmp_path: Path) -> Iterator[None]:
    """Remove what the builds leave in the engine: the pushed tags and `uat-bot-build:<sha>`."""
    yield
    remove_built_images(tmp_path, repository)


async def start_bot(
    make_bot: BotFactory,
    source: SourceRepo,
    registry: str,
    repository: str,
    configure: Callable[[Runtime], None] | None = None,
    **env: str,
) -> Bot:
    bot: Bot = await make_bot(
        configure,
        UAT_SOURCE_REPO=source.url,
        UAT_REGISTRY=registry,
        UAT_ECR_REPOSITORY=repository,
        **env,
    )
    return bot


@pytest.fixture
async def bot(
    make_bot: BotFactory, source: SourceRepo, registry: str, repository: str, local_images: None
) -> Bot:
    """Here (not conftest's plain bot): one building `source` and pushing to `repository` on the
    test registry, the images it leaves removed after the test."""
    return await start_bot(make_bot, source, registry, repository)


@pytest.fixture
async def offline_bot(make_bot: BotFactory, source: SourceRepo, repository: str) -> Bot:
    """A bot whose registry is the discard port: for what is refused before anything is pushed."""
    return await start_bot(make_bot, source, "127.0.0.1:9", repository)


# ------------------------------------------------------------------------------ helpers


def digest_at(registry: str, repository: str, tag: str) -> str:
    return fetch_manifest(registry, repository, tag)[0]


def absent(registry: str, repository: str, tag: str) -> bool:
    try:
        fetch_manifest(registry, repository, tag)
    except LookupError:
        return True
    return False


def image_labels(registry: str, repository: str, tag: str) -> dict[str, str]:
    """The labels in the pushed image's config blob."""
    _, _, body = fetch_manifest(registry, repository, tag)
    config = json.loads(body)["config"]["digest"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{registry}/v2/{repository}/blobs/{config}", timeout=10) as resp:
        labels: dict[str, str] = json.loads(resp.read())["config"].get("Labels") or {}
    return labels


def channel_posts(bot: Bot) -> list[Any]:
    return [c for c in bot.slack.calls_to("chat.postMessage") if c.params["channel"] == CHANNEL]


def updates_of(bot: Bot, ts: str) -> list[Any]:
    return [c for c in bot.slack.calls_to("chat.update") if c.params.get("ts") == ts]


def rendered(message: dict[str, Any]) -> str:
    """A message's text and every text in its blocks, for substring checks."""
    return str(message["text"]) + "\n" + json.dumps(message.get("blocks") or [])


def build_message(bot: Bot) -> dict[str, Any]:
    """The one channel message of the one build in this test, as it ends."""
    posts = channel_posts(bot)
    assert len(posts) == 1, bot.slack.dump()
    message = bot.slack.message(CHANNEL, posts[0].response["ts"])
    assert message is not None
    return message


def last_reply(bot: Bot) -> str:
    """The text of the newest response_url answer (what only the asker sees)."""
    assert bot.slack.responses, bot.slack.dump()
    return str(bot.slack.responses[-1].body.get("text", ""))


async def slash_acked(bot: Bot, text: str, user: str = DEVELOPER) -> str:
    started = time.monotonic()
    status, body = await bot.slash(text, user=user)
    assert status == 200, body
    assert time.monotonic() - started < SLACK_ACK_S
    return body


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------------------------ tests


@pytest.mark.docker
async def test_staging_builds_head_and_pushes_sha_and_staging(
    bot: Bot, source: SourceRepo, registry: str, repository: str
) -> None:
    short, subject = source.short(), source.subject()

    ack = await slash_acked(bot, "staging")
    assert ack == ""  # the channel's progress message says it, once the build holds the lock
    await bot.settle()

    staging = digest_at(registry, repository, "staging")
    assert digest_at(registry, repository, short) == staging
    message = build_message(bot)  # one message for the whole build, not one per log line
    ts = message["ts"]
    assert updates_of(bot, ts), "the final result replaces the progress message"
    final = rendered(message)
    assert f"`:staging` is now `{short}`" in message["text"]
    assert subject in message["text"]
    assert f"<@{DEVELOPER}>" in message["text"]
    assert staging in final  # the full digest, as the registry serves it
    assert f"`:{short}`" in final and "`:staging`" in final

    await slash_acked(bot, "history")
    await bot.settle()
    history = last_reply(bot)
    assert f"*build :staging {short}*" in history
    assert f"<@{DEVELOPER}>" in history
    assert slack_ui.short(staging) in history
    assert "ok — " + subject in history


@pytest.mark.docker
@pytest.mark.usefixtures("local_images")
async def test_staging_builds_a_branch_and_a_full_sha(
    make_bot: BotFactory, source: SourceRepo, registry: str, repository: str
) -> None:
    main_sha = source.sha()
    feature_sha = source.commit(
        {
            "container/Dockerfile": dockerfile(
                "COPY feature.txt /feature.txt", 'LABEL uat-bot.test.branch="feature"'
            ),
            "container/feature.txt": f"only on the branch {uuid.uuid4().hex}\n",
        },
        "Feature: ship feature.txt",
        branch="feature",
    )
    source.checkout("main")
    assert source.sha() == main_sha != feature_sha
    bot = await start_bot(make_bot, source, registry, repository)

    await slash_acked(bot, "staging feature")
    await bot.settle()
    feature = digest_at(registry, repository, source.short(feature_sha))
    assert digest_at(registry, repository, "staging") == feature
    assert image_labels(registry, repository, "staging") == {"uat-bot.test.branch": "feature"}
    assert absent(registry, repository, source.short(main_sha))
    [first] = channel_posts(bot)
    first_message = bot.slack.message(CHANNEL, first.response["ts"])
    assert first_message is not None
    assert f"`{source.short(feature_sha)}` — Feature: ship feature.txt" in first_message["text"]

    await slash_acked(bot, f"staging {main_sha}")
    await bot.settle()
    main = digest_at(registry, repository, source.short(main_sha))
    assert main != feature
    assert digest_at(registry, repository, "staging") == main
    assert "uat-bot.test.marker" in image_labels(registry, repository, "staging")
    assert digest_at(registry, repository, source.short(feature_sha)) == feature  # untouched
    second = channel_posts(bot)[-1]
    second_message = bot.slack.message(CHANNEL, second.response["ts"])
    assert second_message is not None
    assert f"`:staging` is now `{source.short(main_sha)}`" in second_message["text"]


UNKNOWN_REF = "There is no `no-such-branch` in the source repository"


@pytest.mark.docker
async def test_unknown_ref_is_refused_clearly_and_releases_the_lock(
    bot: Bot, source: SourceRepo, registry: str, repository: str
) -> None:

    await slash_acked(bot, "staging no-such-branch")
    await bot.settle()

    said = [r.body.get("text", "") for r in bot.slack.responses]
    said += [m["text"] for m in bot.slack.messages.get(CHANNEL, [])]
    assert any(UNKNOWN_REF in text for text in said), bot.slack.dump()
    assert await bot.runtime.services.store.get_lock(LOCK) is None
    assert absent(registry, repository, "staging")
    [entry] = await bot.runtime.services.store.recent_audit(5)
    assert entry.result == "failed" and UNKNOWN_REF in entry.detail

    bot.slack.reset()
    await slash_acked(bot, "staging")
    await bot.settle()
    assert digest_at(registry, repository, "staging") == digest_at(
        registry, repository, source.short()
    )
    assert f"`:staging` is now `{source.short()}`" in build_message(bot)["text"]


class DeliveredChat:
    """The bot's chat as Slack behaves: a post that went out is delivered even if the bot stops
    waiting, and its answer (the `ts`) comes back `latency` seconds later.

    Cancelling the client after the request left does not un-post the message; only the `ts` is
    lost. The generous latency makes the timing deterministic even on a loaded machine.
    """

    def __init__(self, inner: Any, latency: float = 1.5) -> None:
        self.inner = inner
        self.latency = latency
        self.in_flight: list[asyncio.Future[str]] = []

    async def post(self, *args: Any, **kwargs: Any) -> str:
        async def deliver() -> str:
            ts: str = await self.inner.post(*args, **kwargs)
            await asyncio.sleep(self.latency)
            return ts

        sent = asyncio.ensure_future(deliver())
        self.in_flight.append(sent)
        return await asyncio.shield(sent)

    async def update(self, *args: Any, **kwargs: Any) -> None:
        await self.inner.update(*args, **kwargs)

    async def ephemeral(self, *args: Any, **kwargs: Any) -> None:
        await self.inner.ephemeral(*args, **kwargs)

    @classmethod
    def install(cls, runtime: Runtime) -> None:
        runtime.services.chat = cls(runtime.services.chat)


@pytest.mark.docker
@pytest.mark.usefixtures("local_images")
async def test_unknown_ref_leaves_no_build_message_stuck_in_the_channel(
    make_bot: BotFactory, source: SourceRepo, registry: str, repository: str
) -> None:
    bot = await start_bot(make_bot, source, registry, repository, configure=DeliveredChat.install)

    await slash_acked(bot, "staging no-such-branch")
    await bot.settle()
    chat = bot.runtime.services.chat
    assert isinstance(chat, DeliveredChat)
    await asyncio.gather(*chat.in_flight, return_exceptions=True)

    said = [r.body.get("text", "") for r in bot.slack.responses]
    said += [m["text"] for m in bot.slack.messages.get(CHANNEL, [])]
    assert any(UNKNOWN_REF in text for text in said), bot.slack.dump()
    for message in bot.slack.messages.get(CHANNEL, []):  # none left saying "Building …"
        assert UNKNOWN_REF in message["text"], bot.slack.dump()


class SlowGitServer:
    """A git-over-http remote that takes `delay` seconds to answer, then says not found."""

    def __init__(self, delay: float) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(outer.delay)
                self.send_error(404)

            def log_message(self, *args: Any) -> None:
                pass

        self.delay = delay
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/source.git"

    def __enter__(self) -> SlowGitServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def timed_slash(bot: Bot, text: str, after: float, result: dict[str, Any]) -> threading.Thread:
    """Send a signed `/uat <text>` from another thread `after` seconds from now, as Slack would
    (independently of the bot's event loop); `result` gets the status and the seconds it took.
    """
    body = slash_command_body(
        text, user_id=DEVELOPER, channel_id=CHANNEL, response_url=bot.slack.new_response_url()
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def send() -> None:
        time.sleep(after)
        request = urllib.request.Request(
            f"{bot.url}/slack/events", data=body, headers=slack_headers(SIGNING_SECRET, body)
        )
        started = time.monotonic()
        with opener.open(request, timeout=30) as response:
            result["status"] = response.status
            result["text"] = response.read().decode()
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


async def test_a_slow_fetch_does_not_stall_other_commands(
    make_bot: BotFactory, repository: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with SlowGitServer(delay=4.0) as remote:
        bot: Bot = await make_bot(
            UAT_SOURCE_REPO=remote.url, UAT_REGISTRY="127.0.0.1:9", UAT_ECR_REPOSITORY=repository
        )
        help_request: dict[str, Any] = {}
        sender = timed_slash(bot, "help", after=0.5, result=help_request)  # mid-fetch
        started = time.monotonic()
        status, ack = await bot.slash("staging")
        staging_ack_s = time.monotonic() - started
        await bot.settle()  # the fetch fails once the remote answers
        await asyncio.to_thread(sender.join, 30)

    assert status == 200 and ack == ""
    assert help_request["status"] == 200
    assert slack_ui.HELP_HEADER in help_request["text"]
    assert max(staging_ack_s, help_request["seconds"]) < 2.0, (
        f"/uat staging was acknowledged after {staging_ack_s:.1f}s and /uat help after "
        f"{help_request['seconds']:.1f}s (Slack gives up after {SLACK_ACK_S:.0f}s)"
    )
    said = [r.body.get("text", "") for r in bot.slack.responses]
    said += [m["text"] for m in bot.slack.messages.get(CHANNEL, [])]
    assert any("The source repository cannot be read" in text for text in said), said


@pytest.mark.docker
@pytest.mark.usefixtures("local_images")
async def test_failing_build_names_the_step_and_shows_the_log_tail(
    make_bot: BotFactory, tmp_path: Path, registry: str, repository: str
) -> None:
    source = SourceRepo.create(
        tmp_path / "broken",
        {
            "container/Dockerfile": dockerfile(
                f'LABEL uat-bot.test.marker="{uuid.uuid4().hex}"',
                "COPY missing.txt /missing.txt",
                'LABEL never="reached"',
            ),
            "container/present.txt": "here\n",
        },
        "Copy a file that is not there",
    )
    bot = await start_bot(make_bot, source, registry, repository)

    await slash_acked(bot, "staging")
    await bot.settle()

    message = build_message(bot)
    final = rendered(message)
    assert "failed" in message["text"]
    assert "Step 3/4 : COPY missing.txt /missing.txt" in message["text"]
    assert "Step 2/4 : LABEL" in final  # the log's tail, in the context block
    assert "missing.txt" in json.dumps(message["blocks"][1:])
    assert "Step 4/4" not in final
    assert await bot.runtime.services.store.get_lock(LOCK) is None
    assert absent(registry, repository, "staging")
    [entry] = await bot.runtime.services.store.recent_audit(5)
    assert (entry.actor, entry.action, entry.result) == (
        DEVELOPER,
        "build :staging from main",
        "failed",
    )
    assert "Step 3/4" in entry.detail


@pytest.mark.docker
@pytest.mark.usefixtures("local_images")
async def test_unreachable_registry_says_which_tags_moved(
    make_bot: BotFactory, source: SourceRepo, registry: str, repository: str
) -> None:
    down = f"127.0.0.1:{closed_port()}"
    bot = await start_bot(make_bot, source, down, repository)

    await slash_acked(bot, "staging")
    await bot.settle()

    message = build_message(bot)
    assert "failed" in message["text"]
    assert f"Pushing :{source.short()} to {down}/{repository} failed" in message["text"]
    assert "the registry is unreachable" in message["text"]
    assert "Tags that moved: none" in message["text"]
    assert f"not pushed: :{source.short()}, :staging" in message["text"]
    assert await bot.runtime.services.store.get_lock(LOCK) is None
    [entry] = await bot.runtime.services.store.recent_audit(5)
    assert entry.result == "failed" and "Tags that moved: none" in entry.detail


async def test_staging_is_refused_while_the_images_lock_is_held(offline_bot: Bot) -> None:
    bot = offline_bot
    store = bot.runtime.services.store
    await store.acquire_lock(LOCK, "U0OTHER", "promote", 600)

    ack = await slash_acked(bot, "staging")
    await bot.settle()

    assert "Building" not in ack  # the refusal is the first and only word
    [answer] = bot.slack.responses
    refusal = answer.body["text"]
    assert "<@U0OTHER> is running `promote`" in refusal
    assert "Try again when it finishes" in refusal
    assert answer.body.get("response_type") == "ephemeral"
    assert channel_posts(bot) == []
    assert bot.slack.calls_to("chat.update") == []
    lock = await store.get_lock(LOCK)
    assert lock is not None and lock.holder == "U0OTHER"  # still theirs
    [entry] = await store.recent_audit(5)
    assert (entry.actor, entry.action, entry.result) == (
        DEVELOPER,
        "build :staging from main",
        "refused",
    )
    assert entry.detail == "<@U0OTHER> was running `promote`"


async def test_a_frozen_latest_is_refused_before_its_card_and_after_it(offline_bot: Bot) -> None:
    bot = offline_bot
    await slash_acked(bot, "latest", user=DEPLOYER)
    await bot.settle()
    card = bot.slack.responses[-1].body
    [confirm] = [
        element
        for block in card["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
        if element["action_id"] == "uat.latest.confirm"
    ]
    await slash_acked(bot, "lock release freeze", user=DEPLOYER)
    await bot.settle()
    lock = await bot.runtime.services.store.get_lock(LOCK)
    assert lock is not None
    seen = len(bot.slack.responses)

    await slash_acked(bot, "latest", user=DEPLOYER)
    await bot.settle()
    await bot.click("uat.latest.confirm", confirm["value"], user=DEPLOYER)

    answers = [r.body for r in bot.slack.responses[seen:]]
    assert [a["text"] for a in answers] == [slack_ui.lock_held(lock)] * 2
    assert all("blocks" not in a for a in answers)  # no card
    assert channel_posts(bot) == [] and bot.slack.calls_to("chat.update") == []
    trail = await bot.runtime.services.store.recent_audit(5)
    assert [(e.action, e.result) for e in trail[:2]] == [("build :latest from main", "refused")] * 2


BUILD_FAILURES = {
    "a bad ref": ("staging bad~ref", {}, gateway_text.bad_ref("bad~ref")),
    "no such ref": ("staging no-such-branch", {}, gateway_text.no_such_ref("no-such-branch")),
    "no Dockerfile": (
        "staging",
        {"UAT_BUILD_PATH": "nowhere"},
        gateway_text.no_dockerfile("nowhere"),
    ),
    "docker unreachable": (
        "staging",
        {"DOCKER_HOST": "unix:///nonexistent.sock"},
        gateway_text.docker_unreachable("unix:///nonexistent.sock"),
    ),
}


@pytest.mark.parametrize("case", BUILD_FAILURES)
async def test_every_failed_build_is_in_the_history(
    make_bot: BotFactory,
    source: SourceRepo,
    repository: str,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    text, env, problem = BUILD_FAILURES[case]
    if "DOCKER_HOST" in env:  # read by the docker SDK, not by the bot's settings
        monkeypatch.setenv("DOCKER_HOST", env.pop("DOCKER_HOST"))
    bot = await start_bot(make_bot, source, "127.0.0.1:9", repository, **env)
    ref = text.partition(" ")[2] or "main"

    await slash_acked(bot, text)
    await bot.settle()
    await slash_acked(bot, "history")
    await bot.settle()

    head, _, reason = last_reply(bot).partition(": failed — ")
    assert head.endswith(f"<@{DEVELOPER}> *build :staging from {ref}*")
    assert problem in reason
    assert await bot.runtime.services.store.get_lock(LOCK) is None


async def test_latest_is_for_deployers_only(offline_bot: Bot) -> None:
    bot = offline_bot

    await slash_acked(bot, "latest", user=DEVELOPER)
    await bot.settle()

    assert last_reply(bot) == slack_ui.deployers_only("build straight to :latest", [DEPLOYER])
    assert channel_posts(bot) == []
    assert await bot.runtime.services.store.recent_audit(5) == []


@pytest.mark.docker
async def test_latest_confirmed_by_a_deployer_pushes_latest_and_sha(
    bot: Bot, source: SourceRepo, registry: str, repository: str
) -> None:

    await slash_acked(bot, "latest", user=DEPLOYER)
    await bot.settle()
    card = bot.slack.responses[-1].body
    buttons = [
        element
        for block in card["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]
    [confirm] = [b for b in buttons if b["action_id"] == "uat.latest.confirm"]
    assert channel_posts(bot) == [] and absent(registry, repository, "latest")

    await bot.click("uat.latest.confirm", confirm["value"], user=DEPLOYER)

    latest = digest_at(registry, repository, "latest")
    assert digest_at(registry, repository, source.short()) == latest
    assert absent(registry, repository, "staging")
    message = build_message(bot)
    assert f"`:latest` is now `{source.short()}`" in message["text"]
    assert f"<@{DEPLOYER}>" in message["text"]
    assert latest in rendered(message)
    entry = (await bot.runtime.services.store.recent_audit(5))[0]
    assert (entry.action, entry.result, entry.to_digest) == (
        f"build :latest {source.short()}",
        "ok",
        latest,
    )


@pytest.mark.docker
@pytest.mark.usefixtures("local_images")
async def test_progress_updates_are_throttled(
    make_bot: BotFactory, tmp_path: Path, registry: str, repository: str
) -> None:
    marker = uuid.uuid4().hex  # a cache miss on every step: the build really takes a while
    labels = [f'LABEL uat-bot.test.step{i}="{marker}-{i}"' for i in range(30)]
    source = SourceRepo.create(
        tmp_path / "many-steps", {"container/Dockerfile": dockerfile(*labels)}, "Thirty steps"
    )
    bot = await start_bot(make_bot, source, registry, repository)

    started = time.monotonic()
    await slash_acked(bot, "staging")
    await bot.settle()
    elapsed = time.monotonic() - started

    message = build_message(bot)
    assert f"`:staging` is now `{source.short()}`" in message["text"]
    updates = updates_of(bot, message["ts"])
    assert 1 <= len(updates) <= elapsed / 2 + 2, (len(updates), elapsed)
    assert all(update.ok for update in updates)
