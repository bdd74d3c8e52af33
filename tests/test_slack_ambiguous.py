"""Slack failing ambiguously: it stored the message, then answered 500, or never answered before
the client gave up. A post looks for its message (by the key in its metadata) before any retry,
so each appears exactly once: keyed posts, and transient notes, which carry a key of their own.
"""

from __future__ import annotations

from typing import Any

from bot.slack import slack_ui
from bot.slack.chat import Message, ScrubbedChat, SlackChat
from bot.store import Environment, State
from tests.harness.bot import CHANNEL, Bot


def said(bot: Bot, text: str) -> list[dict[str, Any]]:
    """The messages in the channel (threads included) whose text is `text`."""
    return [m for m in bot.slack.messages.get(CHANNEL, []) if m["text"] == text]


def slack_chat(bot: Bot) -> SlackChat:
    """The Web API chat behind the scrubbing door the composition root puts in front of it."""
    chat = bot.runtime.services.chat
    if isinstance(chat, ScrubbedChat):
        chat = chat.inner
    assert isinstance(chat, SlackChat)
    return chat


async def test_a_note_slack_stored_before_answering_500_appears_once(bot: Bot) -> None:
    bot.slack.fail_after_storing("chat.postMessage", status=500)
    ts = await slack_chat(bot).post(Message(CHANNEL, "ready at https://pr-2.example.com"))
    [message] = said(bot, "ready at https://pr-2.example.com")
    assert message["ts"] == ts
    [post] = bot.slack.calls_to("chat.postMessage")  # found, not posted again
    assert post.failed_status == 500


async def test_a_note_whose_answer_never_comes_appears_once(bot: Bot) -> None:
    chat = slack_chat(bot)
    chat.client.timeout = 1  # the client gives up after 1 s; Slack answers after 2
    bot.slack.fail_after_storing("chat.postMessage", status=200, delay_s=2.0)
    ts = await chat.post(Message(CHANNEL, "building `main` for :staging"))
    [message] = said(bot, "building `main` for :staging")
    assert message["ts"] == ts


async def test_a_reply_failing_ambiguously_twice_appears_once_in_its_thread(bot: Bot) -> None:
    chat = slack_chat(bot)
    root = await chat.post(Message(CHANNEL, "#7 card"))
    bot.slack.fail_after_storing("chat.postMessage", status=503)
    bot.slack.fail("chat.postMessage", status=503)  # the next attempt fails plainly
    ts = await chat.post(Message(CHANNEL, "asked the agent", thread_ts=root))
    assert [m["ts"] for m in bot.slack.thread(CHANNEL, root)] == [ts]


async def test_a_keyed_post_failing_ambiguously_is_recorded_once_with_its_ts(bot: Bot) -> None:
    outbox = bot.runtime.services.environments.ctx.outbox
    bot.slack.fail_after_storing("chat.postMessage", status=500)
    ts = await outbox.post("card:session-1", CHANNEL, "#7 card")
    [message] = said(bot, "#7 card")
    assert message["ts"] == ts
    assert message["metadata"]["event_payload"] == {"key": "card:session-1"}
    assert await outbox.post("card:session-1", CHANNEL, "#7 card") == ts  # recorded: no post
    assert len(bot.slack.calls_to("chat.postMessage")) == 1


async def test_the_resumed_launch_note_failing_ambiguously_appears_once(bot: Bot) -> None:
    chat = slack_chat(bot)
    root = await chat.post(Message(CHANNEL, "#7 card"))
    env = Environment(repo="acme/web", pr=7, state=State.STARTING, thread_ts=root)
    chat.client.timeout = 1
    bot.slack.fail_after_storing("chat.postMessage", status=200, delay_s=2.0)
    await bot.runtime.services.environments.thread.note(env, slack_ui.RESUMED_LAUNCH)
    replies = [m["text"] for m in bot.slack.thread(CHANNEL, root)]
    assert replies == [slack_ui.RESUMED_LAUNCH]


async def test_a_plain_5xx_before_slack_stored_anything_is_still_posted(bot: Bot) -> None:
    bot.slack.fail("chat.postMessage", status=500, times=2)
    ts = await slack_chat(bot).post(Message(CHANNEL, "stopped: PR closed"))
    [message] = said(bot, "stopped: PR closed")
    assert message["ts"] == ts
