"""Who may act on an environment: changes (prompt, cancel, stop, restart, extend, thread
replies, the cards' buttons) only from the UAT channel or a PR's thread in it, and, when
UAT_OPERATORS is set, only from operators and deployers (a prompt's author may cancel it);
read-only commands stay open to everyone."""

from __future__ import annotations

import json

import pytest

from bot.config import Settings
from bot.slack import action_ids, slack_ui
from bot.slack.context import change_refusal
from tests.harness.bot import CHANNEL, DEPLOYER, DEVELOPER, SIGNING_SECRET, Bot, BotFactory
from tests.harness.pull_requests import PR, REPO, label, root_messages
from tests.harness.signing import event_body, slack_headers
from tests.harness.uat_aws import Containers, UatAccount

OPERATOR = "U0OPERATOR"
OUTSIDER = "U0OUTSIDER"


def rules(operators: str = "") -> Settings:
    return Settings(uat_channel=CHANNEL, uat_operators=operators, uat_deployers=DEPLOYER)


def test_a_change_from_another_channel_is_refused_saying_where() -> None:
    refusal = change_refusal(rules(), DEPLOYER, "C0ELSEWHERE")
    assert refusal == slack_ui.changes_in_channel_only(CHANNEL)
    assert f"<#{CHANNEL}>" in refusal


def test_without_operators_anyone_in_the_channel_may_change() -> None:
    assert change_refusal(rules(), OUTSIDER, CHANNEL) is None


def test_with_operators_only_operators_and_deployers_may_change() -> None:
    settings = rules(f"{OPERATOR},U0OTHER")
    assert change_refusal(settings, OPERATOR, CHANNEL) is None
    assert change_refusal(settings, DEPLOYER, CHANNEL) is None
    refusal = change_refusal(settings, OUTSIDER, CHANNEL)
    assert refusal == slack_ui.operators_only((OPERATOR, "U0OTHER"), (DEPLOYER,), False)
    assert all(f"<@{who}>" in refusal for who in (OPERATOR, "U0OTHER", DEPLOYER))


def test_a_prompt_is_cancelled_by_its_author_operators_and_deployers_only() -> None:
    for settings in (rules(), rules(OPERATOR)):
        assert change_refusal(settings, DEVELOPER, CHANNEL, author=DEVELOPER) is None
        assert change_refusal(settings, DEPLOYER, CHANNEL, author=DEVELOPER) is None
        refusal = change_refusal(settings, OUTSIDER, CHANNEL, author=DEVELOPER)
        assert refusal is not None and "the person who asked for it" in refusal
    assert change_refusal(rules(OPERATOR), OPERATOR, CHANNEL, author=DEVELOPER) is None


@pytest.fixture
async def guarded(make_bot: BotFactory, account: UatAccount, containers: Containers) -> Bot:
    bot: Bot = await make_bot(**account.env(containers.url), UAT_OPERATORS=OPERATOR)
    await bot.settle_startup()
    await label(bot)
    containers.ready(PR)
    await bot.runtime.services.environments.poll()
    return bot


async def answer(bot: Bot, text: str, user: str, channel: str = CHANNEL) -> str:
    await bot.slash(text, user=user, channel=channel)
    await bot.settle()
    return str(bot.slack.responses[-1].body["text"])


async def state(bot: Bot) -> str:
    env = await bot.runtime.services.store.get_environment(REPO, PR)
    assert env is not None
    return env.state


async def test_environment_commands_are_refused_to_everyone_but_operators(guarded: Bot) -> None:
    refusal = slack_ui.operators_only((OPERATOR,), (DEPLOYER,), False)
    for command in ("stop PR-2", "restart PR-2", "extend PR-2 4", "prompt PR-2 do it"):
        assert await answer(guarded, command, OUTSIDER) == refusal, command
    assert await state(guarded) == "ready"
    # read-only commands stay open
    for command in ("status PR-2", "status", "help", "history"):
        assert await answer(guarded, command, OUTSIDER) != refusal, command


async def test_environment_commands_outside_the_channel_are_refused(guarded: Bot) -> None:
    text = await answer(guarded, "stop PR-2", OPERATOR, channel="C0ELSEWHERE")
    assert text == slack_ui.changes_in_channel_only(CHANNEL)
    assert await state(guarded) == "ready"


async def test_an_operator_and_a_deployer_may_change_an_environment(guarded: Bot) -> None:
    assert await answer(guarded, "extend PR-2 4", OPERATOR) != slack_ui.operators_only(
        (OPERATOR,), (DEPLOYER,), False
    )
    assert "now stops when idle" in await answer(guarded, "extend PR-2 12", DEPLOYER)
    await answer(guarded, "stop PR-2", OPERATOR)
    assert await state(guarded) == "stopped"


async def test_a_cards_button_is_refused_to_an_outsider_and_left_for_others(guarded: Bot) -> None:
    value = json.dumps({"card": "extend-x", "repo": REPO, "pr": PR})
    [refused] = await guarded.click(action_ids.ENV_EXTEND, value, user=OUTSIDER)
    assert refused.body["text"] == slack_ui.operators_only((OPERATOR,), (DEPLOYER,), False)
    [taken] = await guarded.click(action_ids.ENV_EXTEND, value, user=OPERATOR)
    assert taken.body["text"] != refused.body["text"]  # the card was not used up by the refusal


async def test_a_thread_reply_from_an_outsider_is_not_sent_to_the_agent(guarded: Bot) -> None:
    [root] = root_messages(guarded)
    body = event_body(
        {
            "type": "message",
            "channel": CHANNEL,
            "user": OUTSIDER,
            "text": "delete everything",
            "ts": guarded.slack.add_message(CHANNEL, "x", user=OUTSIDER, thread_ts=root["ts"]),
            "thread_ts": root["ts"],
        }
    )
    headers = slack_headers(SIGNING_SECRET, body) | {"Content-Type": "application/json"}
    assert (await guarded.post_slack(body, headers))[0] == 200
    refusal = slack_ui.operators_only((OPERATOR,), (DEPLOYER,), False)
    await guarded.slack.wait_for(
        lambda s: any(m["text"] == refusal for m in s.thread(CHANNEL, root["ts"]))
    )
    assert await guarded.runtime.services.store.open_relays() == []
