"""`/slack/events` through the real HTTP server: signing, /uat dispatch, errors after the ack."""

from __future__ import annotations

import asyncio
import time
import types
from urllib.parse import parse_qsl, urlencode

from bot.app import Runtime
from bot.errors import UserError
from bot.slack import slack_ui
from bot.slack.context import CommandContext
from bot.slack.dispatch import command_from_module
from tests.harness.bot import SIGNING_SECRET, Bot, BotFactory, reference
from tests.harness.signing import event_body, slack_headers, slack_signature, slash_command_body


def test_signer_matches_slacks_documented_vector() -> None:
    vector = reference("signing_test_vectors.json")["slack_request_signing"]
    signature = slack_signature(
        vector["signing_secret"], vector["X-Slack-Request-Timestamp"], vector["body"].encode()
    )
    assert signature == vector["X-Slack-Signature"]


async def test_documented_vector_is_refused_as_stale(bot: Bot) -> None:
    """The doc's request is correctly signed but from 2018: older than 5 minutes -> 401."""
    vector = reference("signing_test_vectors.json")["slack_request_signing"]
    body = vector["body"].encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": vector["X-Slack-Request-Timestamp"],
        "X-Slack-Signature": slack_signature(
            SIGNING_SECRET, vector["X-Slack-Request-Timestamp"], body
        ),
    }
    status, _ = await bot.post_slack(body, headers)
    assert status == 401


async def test_documented_slash_command_payload_dispatches_end_to_end(bot: Bot) -> None:
    documented = reference("signing_test_vectors.json")["slack_slash_command_payload_example"]
    fields = dict(parse_qsl(documented["raw_body_as_documented"]))
    fields.update(command="/uat", text="help", response_url=bot.slack.new_response_url())
    body = urlencode(fields).encode()
    status, text = await bot.post_slack(body, slack_headers(SIGNING_SECRET, body))
    assert status == 200
    assert slack_ui.HELP_HEADER in text
    assert "/uat help" in text


async def test_help_lists_every_command_module(bot: Bot) -> None:
    status, text = await bot.slash("help")
    assert status == 200
    for command in bot.runtime.dispatcher.table.values():
        assert f"/uat {command.name}" in text
    status, bare = await bot.slash("")
    assert status == 200 and bare == text


async def test_unknown_subcommand_suggests_the_nearest(bot: Bot) -> None:
    status, text = await bot.slash("hlep")
    assert status == 200
    assert "`/uat hlep` is not a command" in text
    assert "Did you mean `/uat help`" in text


async def test_unbalanced_quotes_get_a_clear_answer(bot: Bot) -> None:
    status, text = await bot.slash('rollback "oops')
    assert status == 200
    assert "Check your quotes" in text


async def test_unsigned_wrong_and_tampered_requests_are_refused(bot: Bot) -> None:
    body = slash_command_body("help", response_url=bot.slack.new_response_url())
    assert (await bot.post_slack(body, {"Content-Type": "application/x-www-form-urlencoded"}))[
        0
    ] == 401
    wrong = slack_headers("not-the-secret", body)
    assert (await bot.post_slack(body, wrong))[0] == 401
    signed = slack_headers(SIGNING_SECRET, body)
    tampered = body.replace(b"text=help", b"text=stop")
    assert (await bot.post_slack(tampered, signed))[0] == 401
    stale = slack_headers(SIGNING_SECRET, body, timestamp=int(time.time()) - 301)
    assert (await bot.post_slack(body, stale))[0] == 401
    fresh = slack_headers(SIGNING_SECRET, body, timestamp=int(time.time()) - 200)
    assert (await bot.post_slack(body, fresh))[0] == 200


async def test_ssl_check_is_answered(bot: Bot) -> None:
    body = urlencode({"ssl_check": "1", "token": "x"}).encode()
    status, _ = await bot.post_slack(body, slack_headers(SIGNING_SECRET, body))
    assert status == 200


async def test_message_events_are_acknowledged(bot: Bot) -> None:
    body = event_body(
        {"type": "message", "channel": "C0UAT", "user": "U1", "text": "hi", "ts": "1.2"}
    )
    headers = slack_headers(SIGNING_SECRET, body) | {"Content-Type": "application/json"}
    status, _ = await bot.post_slack(body, headers)
    assert status == 200


def _command(name: str, doc: str, run: object) -> types.ModuleType:
    module = types.ModuleType(f"commands.{name}")
    module.NAME = name  # type: ignore[attr-defined]
    module.__doc__ = doc
    module.run = run  # type: ignore[attr-defined]
    return module


def _add(runtime: Runtime, module: types.ModuleType) -> None:
    command = command_from_module(module)
    runtime.dispatcher.table[command.name] = command


async def test_a_crash_after_the_ack_reaches_the_user_with_a_reference(
    make_bot: BotFactory,
) -> None:
    async def run(ctx: CommandContext, args: object) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("boom with internal detail")

    bot: Bot = await make_bot(lambda rt: _add(rt, _command("explode", "Fail on purpose.", run)))
    status, text = await bot.slash("explode")
    assert (status, text) == (200, "")  # acknowledged before the work ran
    await bot.settle()
    [answer] = bot.slack.responses
    message = answer.body["text"]
    assert message.startswith("Something went wrong (ref `")
    assert "boom" not in message and "Traceback" not in message
    # the server is still up and answering
    assert (await bot.slash("help"))[0] == 200
    async with bot.http.get(f"{bot.url}/healthz") as health:
        assert health.status == 200


async def test_a_user_error_is_shown_as_written(make_bot: BotFactory) -> None:
    async def run(ctx: CommandContext, args: object) -> None:
        raise UserError("Nothing to promote: push :staging first with /uat staging.")

    bot: Bot = await make_bot(lambda rt: _add(rt, _command("refuse", "Refuse politely.", run)))
    await bot.slash("refuse")
    await bot.settle()
    assert bot.slack.responses[0].body["text"] == (
        "Nothing to promote: push :staging first with /uat staging."
    )
    assert bot.slack.responses[0].body["response_type"] == "ephemeral"


async def test_answer_falls_back_to_an_ephemeral_post_when_response_url_fails(
    make_bot: BotFactory,
) -> None:
    async def run(ctx: CommandContext, args: object) -> None:
        await ctx.reply("done")

    bot: Bot = await make_bot(lambda rt: _add(rt, _command("quick", "Say done.", run)))
    bot.slack.fail("response_url", status=404, retry_after=None)
    await bot.slash("quick", user="U0ASKER")
    await bot.settle()
    [ephemeral] = bot.slack.calls_to("chat.postEphemeral")
    assert ephemeral.ok
    assert ephemeral.params["user"] == "U0ASKER" and ephemeral.params["text"] == "done"


async def test_work_after_the_ack_is_cancelled_on_shutdown(make_bot: BotFactory) -> None:
    cancelled = asyncio.Event()

    async def run(ctx: CommandContext, args: object) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    bot: Bot = await make_bot(lambda rt: _add(rt, _command("forever", "Never end.", run)))
    assert (await bot.slash("forever"))[0] == 200
    await asyncio.sleep(0.05)
    assert len(bot.runtime.services.tasks) == 1
    await bot.runtime.stop()
    assert cancelled.is_set()
    assert len(bot.runtime.services.tasks) == 0
