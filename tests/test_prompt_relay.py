"""Prompts end to end: a signed `/uat prompt` or a thread reply -> the bot -> the real prompt
server (container/prompt_server.py, with the fake agent CLI) -> the result in the PR's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.container import TokenRefused
from bot.environments.changes import change
from bot.errors import UserError
from bot.prompt_tokens import environment_token
from bot.scrub import MARKER
from bot.slack import action_ids, slack_ui
from bot.slack.chat import Message
from bot.store import Environment, Facts, Relay, SqliteStore, State
from tests.harness.bot import (
    CHANNEL,
    DEPLOYER,
    DEVELOPER,
    SIGNING_SECRET,
    Bot,
    BotFactory,
    reference,
)
from tests.harness.container_helpers import PROMPT_SERVER, fake_claude_cmd, free_port, make_repo
from tests.harness.fake_claude import long_lines
from tests.harness.prompt_servers import PromptServer
from tests.harness.pull_requests import label, root_messages
from tests.harness.signing import block_actions_body, event_body, slack_headers
from tests.harness.slack_stub.server import BOT_USER_ID
from tests.harness.uat_aws import Containers, UatAccount

TOKEN = "test-prompt-token-0123456789"  # the bot's UAT_PROMPT_TOKEN in tests/harness/bot.py


@pytest.fixture
async def container(tmp_path: Path) -> AsyncIterator[PromptServer]:
    """The real prompt server on 127.0.0.1 with the fake agent, and an 'app' listening; it is
    served once the environment's token is known (`ready_bot`)."""
    server = PromptServer(tmp_path)
    try:
        yield server
    finally:
        await server.close()


async def serve_environment(bot: Bot, container: PromptServer, pr: int = 2) -> None:
    """Start (or restart) the container with the token the bot gave PR `pr`'s current task."""
    env = await bot.runtime.services.store.get_environment("Codertocat/Hello-World", pr)
    assert env is not None
    token = bot.runtime.services.environments.prompt_token(env)
    assert token is not None and token != TOKEN  # its own, never UAT_PROMPT_TOKEN
    await container.serve(token)


async def ready_bot(make_bot: BotFactory, account: UatAccount, container: PromptServer) -> Bot:
    bot: Bot = await make_bot(**account.env(container.url))
    bot.runtime.services.prompts.first_poll_s = 0.05
    await bot.settle_startup()
    await label(bot)
    if container.token is None:
        await serve_environment(bot, container)
    await bot.runtime.services.environments.poll()
    env = await bot.runtime.services.store.get_environment("Codertocat/Hello-World", 2)
    assert env is not None and env.state == "ready"
    return bot


@pytest.fixture
async def bot(make_bot: BotFactory, account: UatAccount, container: PromptServer) -> Bot:
    """A bot whose PR #2 environment is ready, at the stand-in container."""
    return await ready_bot(make_bot, account, container)


def thread(bot: Bot) -> list[dict[str, Any]]:
    [root] = root_messages(bot)
    return bot.slack.thread(CHANNEL, root["ts"])


async def succeeded(bot: Bot) -> None:
    """Wait for a prompt's *succeeded* result in the PR's thread, then for the work it began."""
    await bot.slack.wait_for(lambda s: any("*succeeded*" in m["text"] for m in thread(bot)))
    await bot.settle()


async def test_a_slash_prompt_comes_back_into_the_thread(bot: Bot, tmp_path: Path) -> None:
    text = "make the button blue, don't break `it` $(touch pwned) <!channel>"
    status, _ = await bot.slash(f"prompt PR-2 {text}")
    assert status == 200
    await bot.settle()
    answer = bot.slack.responses[-1].body["text"]
    assert answer.startswith("Sent to the agent:") and "running now" in answer
    asked, result = thread(bot)[-2:]
    assert "asked the agent" in asked["text"] and "&lt;!channel&gt;" in asked["text"]
    assert "<!channel>" not in asked["text"]
    assert "*succeeded*" in result["text"] and "$0.01" in result["text"]
    # the agent got the text exactly as typed: no shell, no quoting rules
    assert slack_ui.escape(text) in result["text"]
    assert not await asyncio.to_thread((tmp_path / "work" / "pwned").exists)


async def test_a_reply_in_the_thread_is_a_prompt(bot: Bot) -> None:
    [root] = root_messages(bot)
    reply_ts = bot.slack.add_message(
        CHANNEL, "add a dark mode", user="U0HUMAN", thread_ts=root["ts"]
    )
    body = event_body(
        {
            "type": "message",
            "channel": CHANNEL,
            "user": "U0HUMAN",
            "text": "add a dark mode",
            "ts": reply_ts,
            "thread_ts": root["ts"],
        }
    )
    headers = slack_headers(SIGNING_SECRET, body) | {"Content-Type": "application/json"}
    assert (await bot.post_slack(body, headers))[0] == 200
    assert (await bot.post_slack(body, headers))[0] == 200  # Slack retries the event
    # Bolt runs the event listener after its ack: wait for the relay to have started
    await succeeded(bot)
    results = [m["text"] for m in thread(bot) if "*succeeded*" in m["text"]]
    assert len(results) == 1 and "add a dark mode" in results[0]
    # the bot's own messages in the thread are not prompts
    bot_reply = event_body(
        {
            "type": "message",
            "channel": CHANNEL,
            "bot_id": "BBOT",
            "text": "x",
            "ts": "9.9",
            "thread_ts": root["ts"],
        }
    )
    headers = slack_headers(SIGNING_SECRET, bot_reply) | {"Content-Type": "application/json"}
    await bot.post_slack(bot_reply, headers)
    await bot.settle()
    assert len([m for m in thread(bot) if "*succeeded*" in m["text"]]) == 1


def documented(name: str, **event: Any) -> tuple[bytes, dict[str, str]]:
    """Slack's documented `event_callback` for `name` (tests/fixtures/slack/events), its event
    moved into our channel with `event`'s fields, and signed as Slack signs it."""
    body = reference(f"slack/events/{name}.json")
    body["event"] |= {"channel": CHANNEL} | event
    body["event"] = {k: v for k, v in body["event"].items() if v is not None}  # None: left out
    body["event_id"] = "Ev" + uuid.uuid4().hex[:10].upper()
    raw = json.dumps(body).encode()
    return raw, slack_headers(SIGNING_SECRET, raw) | {"Content-Type": "application/json"}


def asked(bot: Bot) -> list[str]:
    """The thread's 'asked the agent' notes: one per prompt the bot relayed."""
    return [m["text"] for m in thread(bot) if "asked the agent" in m["text"]]


async def reply(bot: Bot, text: str, user: str = "U0HUMAN") -> str:
    """A person's plain reply in PR #2's thread, as Slack sends it; its ts once relayed."""
    [root] = root_messages(bot)
    ts = bot.slack.add_message(CHANNEL, text, user=user, thread_ts=root["ts"])
    event = {"type": "message", "user": user, "text": text, "ts": ts, "thread_ts": root["ts"]}
    body = event_body(event | {"channel": CHANNEL})
    headers = slack_headers(SIGNING_SECRET, body) | {"Content-Type": "application/json"}
    assert (await bot.post_slack(body, headers))[0] == 200
    await bot.slack.wait_for(lambda s: any(text in t for t in asked(bot)))
    return ts


async def test_a_reply_also_sent_to_the_channel_is_a_prompt_relayed_once(bot: Bot) -> None:
    [root] = root_messages(bot)
    ts = bot.slack.add_message(CHANNEL, "add a dark mode", user="U0HUMAN", thread_ts=root["ts"])
    body, headers = documented(
        "thread_broadcast",
        user="U0HUMAN",
        text="add a dark mode",
        ts=ts,
        event_ts=ts,
        thread_ts=root["ts"],
        root={"type": "message", "ts": root["ts"], "thread_ts": root["ts"], "reply_count": 1},
    )
    assert (await bot.post_slack(body, headers))[0] == 200
    await succeeded(bot)
    results = [m["text"] for m in thread(bot) if "*succeeded*" in m["text"]]
    assert len(results) == 1 and "add a dark mode" in results[0]
    assert len(asked(bot)) == 1


async def test_an_edit_of_a_relayed_reply_is_not_relayed_again(bot: Bot) -> None:
    [root] = root_messages(bot)
    ts = await reply(bot, "add a dark mode")
    edit, headers = documented(
        "message_changed",
        ts=f"{float(ts) + 1:.6f}",  # the edit's own ts
        message={
            "type": "message",
            "user": "U0HUMAN",
            "text": "add a light mode",
            "ts": ts,
            "thread_ts": root["ts"],
            "edited": {"user": "U0HUMAN", "ts": "1358878755.000001"},
        },
        previous_message={"type": "message", "user": "U0HUMAN", "text": "add a dark mode"},
    )
    assert (await bot.post_slack(edit, headers))[0] == 200
    await reply(bot, "then ship it")  # a later reply is relayed: the edit, before it, was not
    await bot.settle()
    assert len(asked(bot)) == 2 and not any("light mode" in t for t in asked(bot))


async def test_bot_messages_and_other_subtypes_in_the_thread_are_not_prompts(bot: Bot) -> None:
    [root] = root_messages(bot)
    in_thread = {"thread_ts": root["ts"]}
    shapes = [
        documented("bot_message", ts="1700000001.000100", **in_thread),
        # the bot's own reply: a current Slack app's message has its user and its bot_id
        documented(
            "bot_message", subtype=None, user=BOT_USER_ID, ts="1700000002.000100", **in_thread
        ),
        # another app's bot: a user of its own, a bot_id, and no subtype
        documented(
            "bot_message", subtype=None, user="U0OTHERBOT", ts="1700000005.000100", **in_thread
        ),
        documented(
            "bot_message",
            subtype="channel_join",
            bot_id=None,
            user="U0HUMAN",
            text="<@U0HUMAN> has joined the channel",
            ts="1700000003.000100",
            **in_thread,
        ),
        documented(
            "message_changed",
            subtype="message_deleted",
            message=None,
            ts="1700000004.000100",
            deleted_ts="1700000000.000100",
            previous_message={"type": "message", "user": "U0HUMAN", "text": "add a dark mode"},
            **in_thread,
        ),
    ]
    for body, headers in shapes:
        assert (await bot.post_slack(body, headers))[0] == 200
    await reply(bot, "the only prompt")  # relayed: those before it were not
    await bot.settle()
    assert len(asked(bot)) == 1 and "the only prompt" in asked(bot)[0]


async def test_a_retried_event_is_answered_at_once_and_relayed_once_across_replicas(
    make_bot: BotFactory, account: UatAccount, container: PromptServer
) -> None:
    """Slack re-sends an event it had no 200 for within 3 s, with the same event_id and
    X-Slack-Retry-Num; the retry may reach another replica behind the load balancer."""
    first = await ready_bot(make_bot, account, container)
    second: Bot = await make_bot(**account.env(container.url))
    [root] = root_messages(first)
    ts = first.slack.add_message(CHANNEL, "add a dark mode", user="U0HUMAN", thread_ts=root["ts"])
    body = event_body(
        {
            "type": "message",
            "channel": CHANNEL,
            "user": "U0HUMAN",
            "text": "add a dark mode",
            "ts": ts,
            "thread_ts": root["ts"],
        }
    )
    headers = slack_headers(SIGNING_SECRET, body) | {"Content-Type": "application/json"}
    assert (await first.post_slack(body, headers))[0] == 200
    for n, replica in enumerate((second, first), start=1):
        retry = slack_headers(SIGNING_SECRET, body) | {
            "Content-Type": "application/json",
            "X-Slack-Retry-Num": str(n),
            "X-Slack-Retry-Reason": "http_timeout",
        }
        started = time.monotonic()
        assert (await replica.post_slack(body, retry))[0] == 200
        assert time.monotonic() - started < 1.0  # Slack wants its 200 within 3 s
    await succeeded(first)
    await second.settle()
    assert len(asked(first)) == 1
    assert len([m for m in thread(first) if "*succeeded*" in m["text"]]) == 1


async def test_cancel_stops_a_running_prompt(bot: Bot, tmp_path: Path) -> None:
    await bot.slash(f"prompt #2 fake:hang {tmp_path / 'pids'}")
    asked = await bot.slack.wait_for(  # a post waits its turn in the channel (bot/slack/pace.py)
        lambda s: next((m for m in thread(bot) if "asked the agent" in m["text"]), None)
    )
    [cancel] = [e for b in asked["blocks"] if b["type"] == "actions" for e in b["elements"]]
    # someone else's prompt: only its author, operators and deployers may cancel it
    refusal = slack_ui.operators_only((), (DEPLOYER,), author=True)
    for user in ("U0HUMAN", DEPLOYER):
        body = block_actions_body(
            cancel["action_id"],
            cancel["value"],
            user_id=user,
            channel_id=CHANNEL,
            response_url=bot.slack.new_response_url(),
        )
        assert (await bot.post_slack(body, slack_headers(SIGNING_SECRET, body)))[0] == 200
        if user == "U0HUMAN":
            await bot.slack.wait_for(lambda s: any(r.body["text"] == refusal for r in s.responses))
    await bot.settle()
    # reported as cancelled by the person who clicked, not as a failure
    assert any(f"*cancelled by <@{DEPLOYER}>*" in m["text"] for m in thread(bot))


async def test_prompts_that_cannot_go_get_a_clear_answer(bot: Bot) -> None:
    await bot.slash("prompt PR-77 do it")
    await bot.settle()
    assert bot.slack.responses[-1].body["text"] == slack_ui.no_environment(77)
    await bot.slash("prompt PR-2")
    await bot.settle()
    assert bot.slack.responses[-1].body["text"] == slack_ui.EMPTY_PROMPT
    await bot.slash("prompt PR-2 " + "x" * 20_001)
    await bot.settle()
    assert "at most 20,000" in bot.slack.responses[-1].body["text"]


async def test_an_unreachable_container_is_said_in_the_thread(bot: Bot) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    bot.runtime.services.environments.settings = bot.settings.model_copy(
        update={"uat_container_url": f"http://127.0.0.1:{port}"}
    )
    await bot.slash("prompt PR-2 hello")
    await bot.settle()
    env = await bot.runtime.services.store.get_environment("Codertocat/Hello-World", 2)
    assert bot.slack.responses[-1].body["text"] == slack_ui.container_unreachable(env)


async def test_a_prompt_followed_across_a_restart_is_posted_once(
    make_bot: BotFactory, account: UatAccount, container: PromptServer
) -> None:
    bot = await ready_bot(make_bot, account, container)
    await bot.slash("prompt PR-2 fake:slow 1")
    await asyncio.sleep(0.1)
    await bot.runtime.stop()  # the bot goes away while the agent works
    again: Bot = await make_bot(**account.env(container.url))
    again.runtime.services.prompts.first_poll_s = 0.05
    await again.settle_startup()
    await asyncio.sleep(1.2)
    await again.settle()
    results = [m for m in thread(again) if "*succeeded*" in m["text"]]
    assert len(results) == 1
    assert await again.runtime.services.store.open_relays() == []


def files_in(bot: Bot) -> list[Any]:
    [root] = root_messages(bot)
    return [f for f in bot.slack.files.values() if f.thread_ts == root["ts"]]


async def test_a_long_result_comes_with_the_whole_output_as_a_file(bot: Bot) -> None:
    summary = "\n".join(f"paragraph {i}: " + "the agent explains itself " * 10 for i in range(60))
    await bot.slash(f"prompt PR-2 fake:long 300 {summary}")
    await bot.slack.wait_for(lambda s: files_in(bot), timeout=20)
    await bot.settle()
    results = [m for m in thread(bot) if "*succeeded*" in m["text"]]
    [head] = results
    rest = thread(bot)[thread(bot).index(head) :]
    # the summary is cut at a few messages, the rest is in the file: nothing over Slack's limits
    assert 2 <= len([m for m in rest if not m.get("files")]) <= 3
    assert rest[-2]["text"] == slack_ui.REST_IN_FILE
    [file] = files_in(bot)
    job_id = bot.slack.responses[-1].body["text"].split("`")[1]
    assert file.name == slack_ui.prompt_file_name(job_id) and file.completed
    assert rest[-1]["files"][0]["id"] == file.id
    content = file.content.decode()
    # in the prompt, in the summary, and at the end of the output (the result line's text)
    assert content.count("paragraph 59: ") == 3
    assert "\n".join(long_lines(300)) in content  # every line the agent said, in order
    assert await bot.runtime.services.store.open_relays() == []


async def test_a_short_result_has_no_file(bot: Bot) -> None:
    await bot.slash("prompt PR-2 fake:long 3")
    await succeeded(bot)
    assert files_in(bot) == [] and bot.slack.calls_to("files.getUploadURLExternal") == []


async def test_without_files_write_the_thread_says_how_to_fix_it(bot: Bot) -> None:
    bot.slack.missing_scopes.add("files:write")
    await bot.slash("prompt PR-2 fake:long 200")
    await bot.slack.wait_for(lambda s: "files:write" in thread(bot)[-1]["text"], timeout=20)
    await bot.settle()
    result, problem = thread(bot)[-2:]
    assert "*succeeded*" in result["text"]
    assert "could not be attached" in problem["text"] and "manifest.yml" in problem["text"]
    assert files_in(bot) == []
    assert await bot.runtime.services.store.open_relays() == []


async def test_a_result_cut_by_a_crash_mid_post_is_finished_without_repeats(
    make_bot: BotFactory, account: UatAccount, container: PromptServer
) -> None:
    """Killed after posting the first part of a result, before recording it: the restarted bot
    finds that part by its metadata and posts only the rest and the file."""
    bot = await ready_bot(make_bot, account, container)
    chat = bot.runtime.services.prompts.chat
    real_post = chat.post

    async def post_then_die(message: Message) -> str:
        await real_post(message)
        if str(message.key or "").startswith("prompt:"):
            raise asyncio.CancelledError  # what the rest looks like when the process dies here
        return ""

    chat.post = post_then_die  # type: ignore[method-assign]
    summary = "\n".join(f"paragraph {i}: " + "more words " * 25 for i in range(40))
    await bot.slash(f"prompt PR-2 fake:long 200 {summary}")
    await succeeded(bot)
    await bot.runtime.stop()
    again: Bot = await make_bot(**account.env(container.url))
    again.runtime.services.prompts.first_poll_s = 0.05
    await again.settle_startup()
    await again.slack.wait_for(lambda s: files_in(again), timeout=20)
    await again.settle()
    texts = [m["text"] for m in thread(again)]
    assert len([t for t in texts if "*succeeded*" in t]) == 1
    assert texts.count(slack_ui.REST_IN_FILE) == 1
    assert again.slack.calls_to("conversations.replies")  # it looked before posting again
    assert len(files_in(again)) == 1
    assert await again.runtime.services.store.open_relays() == []


async def test_two_replicas_following_one_prompt_post_its_result_once(
    make_bot: BotFactory,
    account: UatAccount,
    container: PromptServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second replica starts while the first follows a prompt: it resumes the open relay
    too, waits on the relay's lease, and stands down once the first has posted."""
    monkeypatch.setattr("bot.prompts.RELAY_LEASE_S", 2.0)
    first = await ready_bot(make_bot, account, container)
    await first.slash("prompt PR-2 fake:slow 1 two replicas")
    await first.slack.wait_for(lambda s: any("asked the agent" in m["text"] for m in thread(first)))
    second: Bot = await make_bot(**account.env(container.url))
    second.runtime.services.prompts.first_poll_s = 0.05
    [relay] = await second.runtime.services.store.open_relays()
    assert relay.job_id in second.runtime.services.prompts._following  # resumed on start
    await first.settle()
    await second.settle()  # the first replica holds the watcher lease: just the follower
    assert len([m for m in thread(first) if "*succeeded*" in m["text"]]) == 1
    assert await second.runtime.services.store.open_relays() == []


async def test_a_result_slack_refused_is_posted_once_slack_takes_it_again(
    make_bot: BotFactory,
    account: UatAccount,
    container: PromptServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The follower gives up when Slack refuses the result; the relay stays open and a later
    round of the prompt followers posts it."""
    monkeypatch.setattr("bot.app.RESUME_PROMPTS_S", 0.2)
    bot = await ready_bot(make_bot, account, container)
    await bot.slash("prompt PR-2 fake:slow 0.5 refused first")
    await bot.slack.wait_for(lambda s: any("asked the agent" in m["text"] for m in thread(bot)))
    bot.slack.missing_scopes.add("chat:write")
    await bot.slack.wait_for(
        lambda s: any(c.error == "missing_scope" for c in s.calls_to("chat.postMessage")),
        timeout=20,
    )
    assert len(await bot.runtime.services.store.open_relays()) == 1
    bot.slack.missing_scopes.clear()
    await bot.slack.wait_for(
        lambda s: any("*succeeded*" in m["text"] for m in thread(bot)), timeout=20
    )
    await bot.settle()
    assert len([m for m in thread(bot) if "*succeeded*" in m["text"]]) == 1
    assert await bot.runtime.services.store.open_relays() == []


# ---------------------------------------------------------------- first-day rough edges (#11)


def job_of(answer: str) -> str:
    """The job id in `slack_ui.prompt_answer`'s text."""
    return answer.split("`")[1]


async def sent(bot: Bot, text: str) -> str:
    """`/uat prompt PR-2 <text>`: the job id the bot answered with, without waiting for the
    job's follower (as `settle` would)."""
    count = len(bot.slack.responses)
    await bot.slash(f"prompt PR-2 {text}")
    await bot.slack.wait_for(lambda s: len(s.responses) > count)
    return job_of(bot.slack.responses[-1].body["text"])


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


async def test_cancel_before_the_pr_is_reported_as_cancelled_by_who_asked(
    bot: Bot, tmp_path: Path
) -> None:
    job = await sent(bot, f"fake:hang {tmp_path / 'pids'}")
    await bot.slash(f"prompt --cancel {job} PR-2")
    await bot.slack.wait_for(lambda s: any("*cancelled" in m["text"] for m in thread(bot)))
    await bot.settle()
    assert bot.slack.responses[-1].body["text"] == slack_ui.prompt_cancelled(job)
    result = next(m for m in thread(bot) if "*cancelled" in m["text"])
    assert f"*{slack_ui.prompt_outcome('cancelled', DEVELOPER)}*" in result["text"]
    assert f"cancelled by <@{DEVELOPER}>" in result["text"]
    # the "asked the agent" card says how it ended and has no Cancel button any more
    asked = next(m for m in thread(bot) if "asked the agent" in m["text"])
    assert buttons(asked) == []
    assert f"cancelled by <@{DEVELOPER}>, job `{job}`" in asked["text"]
    env = await bot.runtime.services.store.get_environment("Codertocat/Hello-World", 2)
    assert env is not None and job not in env.facts.prompt_cancels  # forgotten


async def test_a_finished_prompt_loses_its_cancel_button_and_cannot_be_cancelled(bot: Bot) -> None:
    await bot.slash("prompt PR-2 add a footer")
    await succeeded(bot)
    job = job_of(bot.slack.responses[-1].body["text"])
    asked = next(m for m in thread(bot) if "asked the agent" in m["text"])
    assert buttons(asked) == [] and "(succeeded, job" in asked["text"]
    assert [c for c in bot.slack.calls_to("chat.update") if c.params.get("ts") == asked["ts"]]
    await bot.slash(f"prompt PR-2 --cancel {job}")
    await bot.settle()
    assert bot.slack.responses[-1].body["text"] == slack_ui.prompt_already_ended(job, "succeeded")


async def test_a_restart_when_every_prompt_has_ended_posts_no_empty_note(bot: Bot) -> None:
    """A prompt whose job ended just before the restart is its follower's to report: with
    nothing carried over or dropped, the thread gets no note (Slack refuses an empty one)."""
    job = await sent(bot, "add a footer")
    await succeeded(bot)
    store = bot.runtime.services.store
    env = await store.get_environment("Codertocat/Hello-World", 2)
    assert env is not None and env.thread_ts
    # its follower has not closed it yet when the restart looks
    await store.open_relay(Relay(job, env.repo, env.pr, DEVELOPER, env.thread_ts, "add a footer"))
    calls, before = len(bot.slack.calls), len(thread(bot))
    await bot.slash("restart PR-2")
    await bot.slack.wait_for(lambda s: "Restarting" in s.responses[-1].body["text"])
    await bot.settle()
    assert [(c.method, c.error) for c in bot.slack.calls[calls:] if not c.ok] == []
    assert not any("new environment" in m["text"] for m in thread(bot)[before:])


async def test_restart_carries_queued_prompts_over_in_order_and_says_what_was_dropped(
    bot: Bot, container: PromptServer
) -> None:
    running = await sent(bot, "fake:slow 10 the running one")  # running at the restart
    queued = [await sent(bot, text) for text in ("first in the queue", "second in the queue")]
    await bot.slash("restart PR-2")
    await bot.slack.wait_for(lambda s: "Restarting" in s.responses[-1].body["text"])
    await bot.settle()  # the new task runs
    await serve_environment(bot, container)  # its container, with the new task's token
    note = next(m["text"] for m in thread(bot) if "go to the new environment" in m["text"])
    assert note.index(queued[0]) < note.index(queued[1])
    assert f"Prompt `{running}` from <@{DEVELOPER}> was dropped: it was running" in note
    environments = bot.runtime.services.environments
    await environments.poll()  # the new task's app answers: ready, and the queue is sent again
    await bot.settle()
    await bot.slack.wait_for(
        lambda s: len([m for m in thread(bot) if "*succeeded*" in m["text"]]) == 2, timeout=20
    )
    await bot.settle()
    results = [m["text"] for m in thread(bot) if "*succeeded*" in m["text"]]
    assert "first in the queue" in results[0] and "second in the queue" in results[1]
    assert not any("the running one" in r or "*cancelled" in r for r in results)
    assert await bot.runtime.services.store.open_relays() == []
    env = await bot.runtime.services.store.get_environment("Codertocat/Hello-World", 2)
    assert env is not None and not env.facts.carry


ROUNDS = 3
# Each prompt the container takes posts its Cancel card in the PR's thread, then its result, and
# posts wait their turn in the channel (about one a second, bot/slack/pace.py): 10 prompts keep a
# round near 15 s. The extends post nothing, so all 100 of them still race the prompts'
# bookkeeping. bench/false_refusals.py races 100 prompts with 100 extends.
PROMPTS, EXTENDS = 10, 100
# the racing environment's own token (session "": the Facts default the test saves)
RACING_TOKEN = environment_token(TOKEN, "Codertocat/Hello-World", 2, "")


@pytest.fixture
async def container_process(tmp_path: Path) -> AsyncIterator[str]:
    """`python container/prompt_server.py` as the container runs it, on 127.0.0.1, with the
    fake agent: its own process, so the bot's relays and its bookkeeping overlap as in life."""
    app_socket = socket.socket()
    app_socket.bind(("127.0.0.1", 0))
    app_socket.listen()
    port = free_port()
    env = {
        **os.environ,
        "PROMPT_HOST": "127.0.0.1",
        "PROMPT_PORT": str(port),
        "APP_PORT": str(app_socket.getsockname()[1]),
        "WORK_DIR": str(make_repo(tmp_path / "work")),
        "UAT_PROMPT_TOKEN": RACING_TOKEN,
        "CLAUDE_CMD": fake_claude_cmd(),
        "PROMPT_STATE": str(tmp_path / "queue.json"),
        "PROMPT_TIMEOUT_S": "30",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROMPT_SERVER), env=env, cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(500):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/health") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.02)
        yield url
    finally:
        proc.terminate()
        await proc.wait()
        app_socket.close()


async def test_prompts_racing_extends_on_one_pr_are_never_falsely_refused(
    make_bot: BotFactory, container_process: str
) -> None:
    """10 `/uat prompt`s and 100 `/uat extend`s on one PR at once, against the prompt server's
    own process: every prompt the container took is reported as taken, with its Cancel card in
    the thread (the bookkeeping after it may conflict with the extends), and nobody is told the
    PR is changing too often."""
    container = container_process
    bot: Bot = await make_bot(UAT_CONTAINER_URL=container)
    thread_ts = bot.slack.add_message(CHANNEL, "Codertocat/Hello-World#2 — ready", user="UBOT")
    now = bot.runtime.services.environments.clock()
    await bot.runtime.services.store.save_environment(
        Environment(
            repo="Codertocat/Hello-World",
            pr=2,
            state=State.READY,
            label="uat",
            task_arn="arn:aws:ecs:us-east-1:123456789012:task/uat/abc",
            thread_ts=thread_ts,
            facts=Facts(title="Racing", launch_started=now - 60, idle_until=now + 60),
        )
    )
    too_often = slack_ui.changing_too_often("Codertocat/Hello-World", 2)
    auth = {"Authorization": f"Bearer {RACING_TOKEN}"}
    false_refusals, taken, uncarded, refused = 0, 0, 0, 0
    for race in range(ROUNDS):  # the race is timing's: a few of them, the queue emptied between
        before = {r.url_id for r in bot.slack.responses}
        calls = len(bot.slack.calls)
        prompts = [bot.slash(f"prompt PR-2 task {race}.{i}") for i in range(PROMPTS)]
        extends = [bot.slash("extend PR-2") for _ in range(EXTENDS)]  # each moves the idle stop
        prompted = await asyncio.gather(*prompts)  # their relays are under way when...
        acked = await asyncio.gather(*extends)  # ...the extends come in
        assert {status for status, _ in prompted + acked} == {200}
        await bot.slack.wait_for(
            lambda s, before=before: (
                len({r.url_id for r in s.responses} - before)  # type: ignore[misc]
                == PROMPTS + EXTENDS
            ),
            timeout=60,
        )
        answers = [r.body["text"] for r in bot.slack.responses if r.url_id not in before]
        accepted = [a for a in answers if a.startswith("Sent to the agent:")]
        full = [a for a in answers if "already waiting" in a]  # the container's own limit
        extended = [a for a in answers if a.startswith("Codertocat/Hello-World#2 ")]
        extended = [a for a in extended if a != too_often]
        false_refusals += PROMPTS + EXTENDS - len(accepted) - len(full) - len(extended)
        jobs = {m.group(1) for a in accepted if (m := re.search(r"job `([0-9a-f]+)`", a))}
        cards = {  # as posted (a finished prompt's card loses its button later)
            json.loads(e["value"])["job"]
            for c in bot.slack.calls[calls:]
            if c.method == "chat.postMessage"
            for b in c.params.get("blocks") or []
            for e in b.get("elements", [])
            if e.get("action_id") == action_ids.PROMPT_CANCEL
        }
        # every prompt the container did not refuse, it took: each needs its Cancel card
        uncarded += max(len(jobs - cards), PROMPTS - len(full) - len(cards))
        taken, refused = taken + len(jobs), refused + len(full)
        for job in jobs:  # each one the container really has; cancelled to make room
            async with bot.http.delete(f"{container}/prompts/{job}", headers=auth) as response:
                assert response.status in (200, 409), await response.text()
    print(
        f"\n{ROUNDS} x {PROMPTS} prompts racing {EXTENDS} extends on one PR: {taken} taken, "
        f"{refused} refused "
        f"by the container (its queue was full), {false_refusals} false refusals, {uncarded} "
        "taken without a Cancel card"
    )
    assert (false_refusals, uncarded) == (0, 0)


async def test_a_prompt_the_container_took_is_reported_taken_when_its_bookkeeping_conflicts(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle stop's move after the relay keeps losing to other writers: the prompt was
    still taken, so it is said so, with its Cancel card."""

    async def always_conflicting(repo: str, pr: int) -> None:
        raise UserError(slack_ui.changing_too_often(repo, pr))

    monkeypatch.setattr(bot.runtime.services.environments, "touch", always_conflicting)
    status, _ = await bot.slash("prompt PR-2 add a footer")
    assert status == 200
    await bot.slack.wait_for(lambda s: bool(s.responses))
    answer = bot.slack.responses[-1].body["text"]
    assert answer.startswith("Sent to the agent:"), answer
    job = re.search(r"job `([0-9a-f]+)`", answer)
    assert job is not None
    [card] = [m for m in thread(bot) if f"job `{job.group(1)}`" in m["text"]]
    assert "asked the agent" in card["text"]
    await succeeded(bot)


async def test_sixty_writers_racing_on_one_environment_all_land(tmp_path: Path) -> None:
    """Compare-and-set losers wait a jittered moment and try again: 60 at once on one row all
    land (without the wait, the last ones in a lockstep ran out of attempts)."""
    store = SqliteStore(tmp_path / "uat.db")
    await store.open()
    try:
        await store.save_environment(Environment("acme/web", 2, State.READY))

        def bump(env: Environment) -> Environment:
            return env.with_facts(idle_until=(env.facts.idle_until or 0) + 1)

        await asyncio.gather(*(change(store, "acme/web", 2, bump) for _ in range(60)))
        env = await store.get_environment("acme/web", 2)
        assert env is not None and env.facts.idle_until == 60
    finally:
        await store.close()


# ---------------------------------------------------------------- per-environment secrets (#14)


async def test_a_token_for_one_environment_is_refused_by_another(
    bot: Bot, container: PromptServer, tmp_path: Path
) -> None:
    """Two prompt servers, each with its own environment's token: the bot's token for PR 2 opens
    PR 2's container only; PR 3's container (another environment) refuses it, and the person is
    told so clearly."""
    other = PromptServer(tmp_path / "pr3")
    try:
        other_token = environment_token(TOKEN, "Codertocat/Hello-World", 3, "pr3-0a1b2c3d")
        await other.serve(other_token)
        env = await bot.runtime.services.store.get_environment("Codertocat/Hello-World", 2)
        assert env is not None
        mine = bot.runtime.services.environments.prompt_token(env)
        assert mine is not None and mine != other_token and TOKEN not in (mine, other_token)
        client = bot.runtime.services.prompts.container
        with pytest.raises(TokenRefused):
            await client.submit(other.url, mine, prompt="hi", user="U1", thread="")
        with pytest.raises(TokenRefused):  # nor does the master open any container
            await client.submit(container.url, TOKEN, prompt="hi", user="U1", thread="")
        taken = await client.submit(other.url, other_token, prompt="hi", user="U1", thread="")
        assert taken.job_id
        # the bot, sending PR 2's prompt to the other environment's container: refused, said so
        bot.runtime.services.environments.settings = bot.settings.model_copy(
            update={"uat_container_url": other.url}
        )
        await bot.slash("prompt PR-2 hello")
        await bot.settle()
        assert bot.slack.responses[-1].body["text"] == slack_ui.PROMPT_TOKEN_REFUSED
    finally:
        await other.close()


async def test_the_task_gets_its_own_token_never_the_master(bot: Bot, account: UatAccount) -> None:
    [task] = account.tasks()
    [override] = task["overrides"]["containerOverrides"]
    environment = {e["name"]: e["value"] for e in override["environment"]}
    expected = environment_token(TOKEN, "Codertocat/Hello-World", 2, environment["SESSION_ID"])
    assert environment["UAT_PROMPT_TOKEN"] == expected
    assert TOKEN not in str(task)


async def test_credentials_in_the_agents_output_reach_slack_only_redacted(bot: Bot) -> None:
    """The agent repeats its own environment's token and a GitHub token: the result in the
    thread, the "asked the agent" card and the output file show `[redacted]` in their place."""
    env = await bot.runtime.services.store.get_environment("Codertocat/Hello-World", 2)
    assert env is not None
    own = bot.runtime.services.environments.prompt_token(env)
    assert own is not None
    github = "ghp_" + "A1b2C3d4E5" * 4
    await bot.slash(f"prompt PR-2 fake:long 200 leaked {own} and {github} here")
    await bot.slack.wait_for(lambda s: files_in(bot), timeout=20)
    await bot.settle()
    sent = str([c.params for c in bot.slack.calls]) + str([r.body for r in bot.slack.responses])
    sent += "".join(f.content.decode() for f in bot.slack.files.values())
    async with bot.http.get(f"{bot.url}/metrics") as response:
        sent += await response.text()
    for secret in (own, github, TOKEN):
        assert secret not in sent
    result = next(m["text"] for m in thread(bot) if "*succeeded*" in m["text"])
    assert f"leaked {MARKER} and {MARKER} here" in result
    [file] = files_in(bot)
    assert f"leaked {MARKER} and {MARKER} here" in file.content.decode()


@pytest.mark.parametrize(
    "job", ["../status", "0123456789ab/../../status", "x" * 300, "ABCDEF012345"]
)
async def test_a_cancel_whose_job_id_is_not_the_containers_never_reaches_it(
    make_bot: BotFactory, account: UatAccount, containers: Containers, job: str
) -> None:
    bot: Bot = await make_bot(**account.env(containers.url))
    await bot.settle_startup()
    await label(bot)
    containers.ready(2)
    await bot.runtime.services.environments.poll()
    asked_before = [hit for hit in containers.hits if hit[1] != "health"]
    await bot.slash(f"prompt PR-2 --cancel {job}")
    await bot.settle()
    assert bot.slack.responses[-1].body["text"] == slack_ui.bad_job_id(job)
    assert [hit for hit in containers.hits if hit[1] != "health"] == asked_before == []
    # a job id in the container's format does reach it (so the check above could see one)
    await bot.slash("prompt PR-2 --cancel 0123456789ab")
    await bot.settle()
    assert bot.slack.responses[-1].body["text"] == slack_ui.no_such_job("0123456789ab")
    assert (2, "DELETE prompts/0123456789ab") in containers.hits
