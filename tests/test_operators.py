"""Who may act on an environment: changes (prompt, cancel, stop, restart, extend, thread
replies, the cards' buttons) only from the UAT channel or a PR's thread in it, and, when
UAT_OPERATORS is set, only from operators (people, or members of user groups read from Slack)
and deployers (a prompt's author may cancel it); read-only commands stay open to everyone."""

from __future__ import annotations

import json

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.slack import action_ids, slack_ui
from bot.slack.context import change_refusal
from bot.slack.usergroups import CACHE_S, UserGroups
from tests.harness.bot import CHANNEL, DEPLOYER, DEVELOPER, SIGNING_SECRET, Bot, BotFactory
from tests.harness.pull_requests import PR, REPO, label, root_messages
from tests.harness.signing import event_body, slack_headers
from tests.harness.slack_stub import SlackStub
from tests.harness.uat_aws import Containers, UatAccount

OPERATOR = "U0OPERATOR"
OUTSIDER = "U0OUTSIDER"


def rules(operators: str = "") -> Settings:
    return Settings(uat_channel=CHANNEL, uat_operators=operators, uat_deployers=DEPLOYER)


async def test_a_change_from_another_channel_is_refused_saying_where() -> None:
    refusal = await change_refusal(rules(), DEPLOYER, "C0ELSEWHERE")
    assert refusal == slack_ui.changes_in_channel_only(CHANNEL)
    assert f"<#{CHANNEL}>" in refusal


async def test_without_operators_anyone_in_the_channel_may_change() -> None:
    assert await change_refusal(rules(), OUTSIDER, CHANNEL) is None


async def test_with_operators_only_operators_and_deployers_may_change() -> None:
    settings = rules(f"{OPERATOR},U0OTHER")
    assert await change_refusal(settings, OPERATOR, CHANNEL) is None
    assert await change_refusal(settings, DEPLOYER, CHANNEL) is None
    refusal = await change_refusal(settings, OUTSIDER, CHANNEL)
    assert refusal == slack_ui.operators_only((OPERATOR, "U0OTHER"), (DEPLOYER,), False)
    assert all(f"<@{who}>" in refusal for who in (OPERATOR, "U0OTHER", DEPLOYER))


async def test_a_prompt_is_cancelled_by_its_author_operators_and_deployers_only() -> None:
    for settings in (rules(), rules(OPERATOR)):
        assert await change_refusal(settings, DEVELOPER, CHANNEL, author=DEVELOPER) is None
        assert await change_refusal(settings, DEPLOYER, CHANNEL, author=DEVELOPER) is None
        refusal = await change_refusal(settings, OUTSIDER, CHANNEL, author=DEVELOPER)
        assert refusal is not None and "the person who asked for it" in refusal
    assert await change_refusal(rules(OPERATOR), OPERATOR, CHANNEL, author=DEVELOPER) is None


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


# ---------------------------------------------------------------- user groups in UAT_OPERATORS

GROUP = "S0OPERATORS"


def groups_of(slack: SlackStub, clock: list[float] | None = None) -> UserGroups:
    client = AsyncWebClient(token=slack.token, base_url=slack.api_url)
    now = clock if clock is not None else [0.0]
    return UserGroups(client, clock=lambda: now[0])


async def test_a_member_of_an_operators_user_group_may_change(slack: SlackStub) -> None:
    slack.add_usergroup(GROUP, [OPERATOR, "U0SECOND"])
    settings, groups = rules(GROUP), groups_of(slack)
    assert await change_refusal(settings, OPERATOR, CHANNEL, groups=groups) is None
    assert await change_refusal(settings, "U0SECOND", CHANNEL, groups=groups) is None
    assert await change_refusal(settings, DEPLOYER, CHANNEL, groups=groups) is None
    refusal = await change_refusal(settings, OUTSIDER, CHANNEL, groups=groups)
    assert refusal == slack_ui.operators_only((GROUP,), (DEPLOYER,), False)
    assert f"`{GROUP}`" in refusal and "<!subteam" not in refusal  # named, never pinged


async def test_a_groups_members_are_read_once_for_a_few_minutes(slack: SlackStub) -> None:
    slack.add_usergroup(GROUP, [OPERATOR])
    clock = [1000.0]
    settings, groups = rules(GROUP), groups_of(slack, clock)
    for _ in range(3):
        await change_refusal(settings, OUTSIDER, CHANNEL, groups=groups)
    assert len(slack.calls_to("usergroups.users.list")) == 1
    assert await change_refusal(settings, OPERATOR, CHANNEL, groups=groups) is None
    slack.add_usergroup(GROUP, [OUTSIDER])  # the group changes in Slack
    clock[0] += CACHE_S + 1
    assert await change_refusal(settings, OUTSIDER, CHANNEL, groups=groups) is None
    assert len(slack.calls_to("usergroups.users.list")) == 2
    # people allowed by name never cost a call
    await change_refusal(rules(f"{GROUP},{OPERATOR}"), OPERATOR, CHANNEL, groups=groups)
    assert len(slack.calls_to("usergroups.users.list")) == 2


async def test_a_group_that_cannot_be_read_refuses_saying_the_app_needs_usergroups_read(
    slack: SlackStub,
) -> None:
    slack.add_usergroup(GROUP, [OPERATOR])
    slack.missing_scopes.add("usergroups:read")
    refusal = await change_refusal(rules(GROUP), OPERATOR, CHANNEL, groups=groups_of(slack))
    assert refusal == slack_ui.usergroup_unreadable(GROUP)
    assert "usergroups:read" in refusal
    [call] = slack.calls_to("usergroups.users.list")
    assert call.error == "missing_scope"
    slack.missing_scopes.clear()  # an unknown group reads no better
    refusal = await change_refusal(rules("S0NOSUCH"), OPERATOR, CHANNEL, groups=groups_of(slack))
    assert refusal == slack_ui.usergroup_unreadable("S0NOSUCH")
    assert slack.calls_to("usergroups.users.list")[-1].error == "no_such_subteam"
    # without Slack (the console) no group can be read
    assert await change_refusal(rules(GROUP), OPERATOR, CHANNEL) == (
        slack_ui.usergroup_unreadable(GROUP)
    )


async def test_the_stub_checks_usergroups_users_list_as_slack_does(slack: SlackStub) -> None:
    slack.add_usergroup(GROUP, [OPERATOR])
    async with aiohttp.ClientSession() as session:
        url = slack.api_url + "usergroups.users.list"
        answers = []
        for headers, form in (
            ({"Authorization": "Bearer xoxb-wrong"}, {"usergroup": GROUP}),
            ({"Authorization": f"Bearer {slack.token}"}, {}),
            ({"Authorization": f"Bearer {slack.token}"}, {"usergroup": GROUP}),
        ):
            async with session.post(url, headers=headers, data=form) as response:
                answers.append(await response.json())
    assert [a.get("error") for a in answers] == ["invalid_auth", "invalid_arguments", None]
    assert answers[2] == {"ok": True, "users": [OPERATOR]}


async def test_environment_commands_follow_an_operators_user_group(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    bot: Bot = await make_bot(**account.env(containers.url), UAT_OPERATORS=GROUP)
    bot.slack.add_usergroup(GROUP, [OPERATOR])
    await bot.settle_startup()
    await label(bot)
    containers.ready(PR)
    await bot.runtime.services.environments.poll()
    refusal = slack_ui.operators_only((GROUP,), (DEPLOYER,), False)
    assert await answer(bot, "stop PR-2", OUTSIDER) == refusal
    assert await state(bot) == "ready"
    assert "now stops when idle" in await answer(bot, "extend PR-2 12", OPERATOR)
