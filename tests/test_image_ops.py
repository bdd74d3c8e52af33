"""Promote, rollback, undo, images, history and lock, as a channel lives them.

Everything goes through the real HTTP server (signed slash commands and button clicks), a real
moto server speaking the ECR API, and the Slack stub: the answers the bot gives at each
response_url, what it announces in the channel, and what :latest points at in ECR afterwards.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from bot.aws.gateways import ImageInfo
from bot.images.operations import LOCK
from bot.slack import slack_ui
from bot.store import AuditEntry
from tests.harness.bot import CHANNEL, DEPLOYER, DEVELOPER, Bot, BotFactory
from tests.harness.ecr_seed import digest_at, seed, tag_sha

# Four commits of the UAT app, oldest first.
FIRST = "1f3c5a7e9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a"
SECOND = "2a4c6e8b0d1f3a5c7e9b2d4f6a8c0e1b3d5f7a9c"
THIRD = "3b5d7f9a1c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d"
FOURTH = "4c6e8a0b2d3f5a7c9e1b3d5f7a9c2e4b6d8f0a1c"
COMMITS = [FIRST, SECOND, THIRD, FOURTH]

Body = dict[str, Any]
Button = dict[str, Any]


# ------------------------------------------------------------------ fixtures and conversation


@pytest.fixture
def bot(ecr_bot: Bot) -> Bot:
    """Every test here talks to the bot whose Ecr gateway is on moto."""
    return ecr_bot


async def ask(bot: Bot, text: str, *, user: str = DEPLOYER) -> Body:
    """`/uat <text>`; the one answer that reaches the command's response_url."""
    seen = len(bot.slack.responses)
    status, ack = await bot.slash(text, user=user)
    assert status == 200, ack
    await bot.settle()
    answers = bot.slack.responses[seen:]
    assert [a.error for a in answers] == [None], bot.slack.dump()
    return answers[0].body


async def click(bot: Bot, button: Button, *, user: str = DEPLOYER) -> list[Body]:
    """Click `button`; every answer at its response_url."""
    answers = await bot.click(button["action_id"], button["value"], user=user)
    assert all(a.error is None for a in answers), bot.slack.dump()
    return [a.body for a in answers]


def button(message: Body, label: str) -> Button:
    """The one button labelled `label` in a message's blocks."""
    found = [b for b in all_buttons(message) if b["text"]["text"] == label]
    assert len(found) == 1, f"{label!r} in {[b['text']['text'] for b in all_buttons(message)]}"
    return found[0]


def all_buttons(message: Body) -> list[Button]:
    found: list[Button] = []
    for block in message.get("blocks") or []:
        found += [e for e in block.get("elements", []) if e.get("type") == "button"]
        if block.get("accessory", {}).get("type") == "button":
            found.append(block["accessory"])
    return found


def shown(message: Body) -> str:
    """Everything a person reads in a message: its text and its blocks' texts."""
    parts = [message.get("text") or ""]
    for block in message.get("blocks") or []:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts += [e["text"] for e in block.get("elements", []) if e.get("type") == "mrkdwn"]
    return "\n".join(parts)


def texts(answers: list[Body]) -> list[str]:
    return [a["text"] for a in answers]


def announcements(bot: Bot) -> list[Body]:
    """What the bot posted in the channel (chat.postMessage), oldest first."""
    calls = bot.slack.calls_to("chat.postMessage")
    assert all(c.ok and c.params["channel"] == CHANNEL for c in calls), bot.slack.dump()
    return [c.params for c in calls]


def ecr_calls(bot: Bot) -> Counter[str]:
    return Counter(bot.runtime.services.pipeline.ecr.calls)


async def audit(bot: Bot) -> list[AuditEntry]:
    """The audit trail, newest first."""
    return await bot.runtime.services.store.recent_audit(100)


def short(digest: str | None) -> str:
    return slack_ui.short(digest)


def image(digest: str) -> ImageInfo:
    return ImageInfo(digest=digest, tags=(), pushed_at=None)


# ------------------------------------------------------------------ promote


async def test_deployer_promotes_staging_to_latest(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)

    card = await ask(bot, "promote")

    assert card["response_type"] == "ephemeral"
    assert short(digests[THIRD]) in shown(card)  # :latest now
    assert short(digests[FOURTH]) in shown(card)  # :staging
    promote, cancel = button(card, "Promote"), button(card, "Cancel")
    assert promote["action_id"] == "uat.promote.confirm"
    assert cancel["action_id"] == "uat.cancel"
    assert json.loads(promote["value"])["digest"] == digests[FOURTH]

    before = ecr_calls(bot)
    answers = await click(bot, promote)
    spent = ecr_calls(bot) - before

    assert texts(answers) == [slack_ui.PROMOTING, slack_ui.RETAG_ANNOUNCED]
    assert all(a["replace_original"] for a in answers)  # the card, then "Promoting …", replaced
    assert digest_at(ecr, "latest") == digest_at(ecr, "staging") == digests[FOURTH]
    assert spent["BatchGetImage"] == 1
    assert spent["PutImage"] == 1
    assert set(spent) <= {"BatchGetImage", "PutImage", "DescribeImages"}

    [announcement] = announcements(bot)
    assert f"moved `:latest` (promote): `{short(digests[THIRD])}` → " in announcement["text"]
    assert short(digests[FOURTH]) in announcement["text"]
    assert slack_ui.mention(DEPLOYER) in announcement["text"]
    undo = button(announcement, "Undo")
    assert undo["action_id"] == "uat.undo"
    assert json.loads(undo["value"])["digest"] == digests[THIRD]

    [entry] = await audit(bot)
    assert (entry.actor, entry.action, entry.result) == (DEPLOYER, "promote", "ok")
    assert (entry.from_digest, entry.to_digest) == (digests[THIRD], digests[FOURTH])


async def test_a_promote_card_works_once(bot: Bot, ecr: Any) -> None:
    seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    card = await ask(bot, "promote")
    await click(bot, button(card, "Promote"))
    trail = await audit(bot)
    puts = ecr_calls(bot)["PutImage"]

    again = await click(bot, button(card, "Promote"))
    cancel = await click(bot, button(card, "Cancel"))

    assert texts(again) == [slack_ui.CARD_USED]
    assert texts(cancel) == [slack_ui.CARD_USED]
    assert await audit(bot) == trail
    assert ecr_calls(bot)["PutImage"] == puts
    assert len(announcements(bot)) == 1


async def test_a_double_click_promotes_once(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    card = await ask(bot, "promote")

    first, second = await asyncio.gather(
        click(bot, button(card, "Promote")), click(bot, button(card, "Promote"))
    )

    assert texts(first + second).count(slack_ui.CARD_USED) == 1
    assert digest_at(ecr, "latest") == digests[FOURTH]
    assert ecr_calls(bot)["PutImage"] == 1
    assert len(announcements(bot)) == 1
    assert [e.action for e in await audit(bot)] == ["promote"]


async def test_the_first_promote_ever_has_nothing_to_undo(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH)

    card = await ask(bot, "promote")

    assert slack_ui.image_line(":latest now", None) in shown(card)
    await click(bot, button(card, "Promote"))
    assert digest_at(ecr, "latest") == digests[FOURTH]
    [announcement] = announcements(bot)
    assert f"(promote): `nothing` → `{short(digests[FOURTH])}`" in announcement["text"]
    assert all_buttons(announcement) == []


async def test_cancel_closes_the_card_and_changes_nothing(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    card = await ask(bot, "promote")

    cancelled = await click(bot, button(card, "Cancel"))
    late = await click(bot, button(card, "Promote"))

    assert cancelled == [
        {"text": slack_ui.CANCELLED, "replace_original": True, "response_type": "ephemeral"}
    ]
    assert texts(late) == [slack_ui.CARD_USED]
    assert digest_at(ecr, "latest") == digests[THIRD]
    assert ecr_calls(bot)["PutImage"] == 0


async def test_only_deployers_promote(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    refusal = slack_ui.deployers_only("promote", [DEPLOYER])

    asked = await ask(bot, "promote", user=DEVELOPER)
    assert asked["text"] == refusal
    assert f"<@{DEPLOYER}>" in refusal

    card = await ask(bot, "promote")  # the deployer's card, clicked by a developer
    clicked = await click(bot, button(card, "Promote"), user=DEVELOPER)
    assert texts(clicked) == [refusal]
    assert digest_at(ecr, "latest") == digests[THIRD]
    assert ecr_calls(bot)["PutImage"] == 0
    assert announcements(bot) == []

    await click(bot, button(card, "Promote"))  # the refusal did not use the card up
    assert digest_at(ecr, "latest") == digests[FOURTH]


async def test_promote_when_latest_already_is_staging(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=FOURTH)
    same = image(digests[FOURTH])

    card = await ask(bot, "promote")

    assert card["text"] == slack_ui.promote_card(same, same, "")[0]
    assert "already" in card["text"]
    assert all_buttons(card) == []
    assert ecr_calls(bot)["PutImage"] == 0


async def test_a_card_clicked_after_latest_caught_up_changes_nothing(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    card = await ask(bot, "promote")
    tag_sha(ecr, FOURTH, "latest")  # someone else got there first

    answers = await click(bot, button(card, "Promote"))

    unchanged = SimpleNamespace(changed=False, current=image(digests[FOURTH]))
    assert answers[-1]["text"] == slack_ui.retag_done(unchanged, DEPLOYER, None)[0]
    assert "already" in answers[-1]["text"]
    assert ecr_calls(bot)["PutImage"] == 0
    assert announcements(bot) == []
    [entry] = await audit(bot)
    assert (entry.action, entry.result) == ("promote", "unchanged")


async def test_promote_without_staging(bot: Bot, ecr: Any) -> None:
    seed(ecr, COMMITS, latest=THIRD)

    answer = await ask(bot, "promote")

    assert answer["text"] == slack_ui.NO_STAGING
    assert ecr_calls(bot)["PutImage"] == 0


async def test_a_stale_card_does_not_promote_what_it_did_not_show(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=THIRD, latest=SECOND)
    card = await ask(bot, "promote")
    tag_sha(ecr, FOURTH, "staging")  # a new build lands on :staging meanwhile

    answers = await click(bot, button(card, "Promote"))

    assert texts(answers) == [slack_ui.PROMOTING, slack_ui.STAGING_MOVED]
    assert all(a["replace_original"] for a in answers)  # "Promoting …" is not left behind
    assert digest_at(ecr, "latest") == digests[SECOND]
    assert ecr_calls(bot)["PutImage"] == 0
    assert announcements(bot) == []
    [entry] = await audit(bot)
    assert (entry.action, entry.result) == ("promote", "refused")


# ------------------------------------------------------------------ undo


async def test_undo_puts_the_previous_latest_back(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    card = await ask(bot, "promote")
    await click(bot, button(card, "Promote"))
    [promoted] = announcements(bot)

    await click(bot, button(promoted, "Undo"))

    assert digest_at(ecr, "latest") == digests[THIRD]
    assert digest_at(ecr, "staging") == digests[FOURTH]
    undone = announcements(bot)[-1]
    assert f"(undo): `{short(digests[FOURTH])}` → `{short(digests[THIRD])}`" in undone["text"]
    assert [e.action for e in await audit(bot)] == ["undo", "promote"]

    again = await click(bot, button(promoted, "Undo"))
    assert texts(again) == [slack_ui.CARD_USED]


async def test_an_old_undo_does_not_throw_away_later_changes(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=THIRD, latest=SECOND)
    await click(bot, button(await ask(bot, "promote"), "Promote"))  # SECOND -> THIRD
    [monday] = announcements(bot)
    tag_sha(ecr, FOURTH, "staging")
    await click(bot, button(await ask(bot, "promote"), "Promote"))  # THIRD -> FOURTH
    puts = ecr_calls(bot)["PutImage"]

    answers = await click(bot, button(monday, "Undo"))  # Monday's button, clicked on Wednesday

    assert digest_at(ecr, "latest") == digests[FOURTH]
    assert ecr_calls(bot)["PutImage"] == puts
    assert slack_ui.LATEST_MOVED in texts(answers)


# ------------------------------------------------------------------ rollback


async def test_rollback_picker_lists_recent_images_newest_first(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)

    picker = await ask(bot, "rollback")

    rows = [b for b in picker["blocks"][1:] if b["type"] == "section"]
    assert [row["text"]["text"].split("`")[1] for row in rows] == [
        FOURTH[:7],
        THIRD[:7],
        SECOND[:7],
        FIRST[:7],
    ]
    live = rows[1]
    assert "*live now*" in live["text"]["text"]
    assert short(digests[THIRD]) in live["text"]["text"]
    assert "accessory" not in live
    assert all("live now" not in r["text"]["text"] for r in rows if r is not live)
    assert [r["accessory"]["action_id"] for r in rows if r is not live] == ["uat.rollback.pick"] * 3
    assert button(picker, "Cancel")["action_id"] == "uat.cancel"

    [pick_first] = [r["accessory"] for r in rows if r["text"]["text"].startswith(f"`{FIRST[:7]}`")]
    [confirm_card] = await click(bot, pick_first)

    assert confirm_card["replace_original"] is True
    assert confirm_card["text"] == f"Roll :latest back to `{FIRST[:7]}`?"
    await click(bot, button(confirm_card, "Roll back"))

    assert digest_at(ecr, "latest") == digests[FIRST]
    assert f"(rollback to {FIRST[:7]})" in announcements(bot)[-1]["text"]


async def test_rollback_to_a_named_sha(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)

    card = await ask(bot, f"rollback {SECOND}")

    assert card["text"] == f"Roll :latest back to `{SECOND[:7]}`?"
    assert short(digests[THIRD]) in shown(card)  # :latest now
    assert short(digests[SECOND]) in shown(card)
    roll_back = button(card, "Roll back")
    assert roll_back["action_id"] == "uat.rollback.confirm"
    assert json.loads(roll_back["value"])["digest"] == digests[SECOND]

    before = ecr_calls(bot)
    await click(bot, roll_back)
    spent = ecr_calls(bot) - before

    assert digest_at(ecr, "latest") == digests[SECOND]
    assert (spent["BatchGetImage"], spent["PutImage"]) == (1, 1)
    [announcement] = announcements(bot)
    assert f"`{short(digests[THIRD])}` → `{short(digests[SECOND])}`" in announcement["text"]
    assert json.loads(button(announcement, "Undo")["value"])["digest"] == digests[THIRD]


async def test_rollback_to_an_unknown_sha_suggests_the_nearest(bot: Bot, ecr: Any) -> None:
    near = "deadbef0" + FIRST[8:]
    seed(ecr, [*COMMITS, near], staging=FOURTH, latest=THIRD)

    answer = await ask(bot, "rollback deadbee")

    _, _, nearest = answer["text"].partition("The nearest are")
    suggested = re.findall(r"`([0-9a-f]{7})`", nearest)
    assert answer["text"] == slack_ui.no_such_sha("deadbee", suggested)
    assert suggested[0] == near[:7]
    assert set(suggested) <= {sha[:7] for sha in [*COMMITS, near]}
    assert all_buttons(answer) == []


async def test_rollback_to_something_that_is_not_a_sha(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)

    answer = await ask(bot, "rollback xyz")

    assert answer["text"] == slack_ui.bad_sha("xyz")
    assert digest_at(ecr, "latest") == digests[THIRD]


async def test_only_deployers_roll_back(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    card = await ask(bot, f"rollback {FIRST[:7]}")

    asked = await ask(bot, "rollback", user=DEVELOPER)
    clicked = await click(bot, button(card, "Roll back"), user=DEVELOPER)

    refusal = slack_ui.deployers_only("roll back", [DEPLOYER])
    assert asked["text"] == refusal
    assert texts(clicked) == [refusal]
    assert digest_at(ecr, "latest") == digests[THIRD]


# ------------------------------------------------------------------ images and history


async def test_images_shows_latest_staging_and_the_sha_images(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)

    answer = await ask(bot, "images", user=DEVELOPER)

    latest_line, staging_line = answer["text"].split("\n")
    assert latest_line.startswith(f"*:latest*: `{short(digests[THIRD])}` (`{THIRD[:7]}`)")
    assert staging_line.startswith(f"*:staging*: `{short(digests[FOURTH])}` (`{FOURTH[:7]}`)")
    recent = answer["blocks"][1]["text"]["text"].split("\n")
    assert recent[0] == "*Recent sha images*"
    assert [line.split("`")[1] for line in recent[1:]] == [c[:7] for c in reversed(COMMITS)]
    assert recent[1].endswith("← :staging")
    assert recent[2].endswith("← :latest")
    assert short(digests[FIRST]) in recent[4]


async def test_history_tells_who_did_what(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    await ask(bot, "lock demo at 3pm")
    await ask(bot, "promote")  # refused before any card
    await ask(bot, "unlock")
    await click(bot, button(await ask(bot, "promote"), "Promote"))
    await click(bot, button(await ask(bot, f"rollback {FIRST[:7]}"), "Roll back"))

    answer = await ask(bot, "history", user=DEVELOPER)

    rows = answer["text"].split("\n")  # newest first
    me = slack_ui.mention(DEPLOYER)
    third, fourth, first = (short(digests[c]) for c in (THIRD, FOURTH, FIRST))
    assert len(rows) == 5
    assert rows[0].endswith(f"{me} *rollback to {FIRST[:7]}* `{fourth}` → `{first}`: ok")
    assert rows[1].endswith(f"{me} *promote* `{third}` → `{fourth}`: ok")
    assert rows[2].endswith(f"{me} *unlock*: ok — was: demo at 3pm")
    assert rows[3].endswith(f"{me} *promote*: refused — locked by {me}: demo at 3pm")
    assert "freeze:" not in answer["text"]
    assert rows[4].endswith(f"{me} *lock*: ok — demo at 3pm")
    assert all(row.startswith("<!date^") for row in rows)


async def test_history_when_nothing_happened(bot: Bot, ecr: Any) -> None:
    seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)

    answer = await ask(bot, "history")

    assert answer["text"] == slack_ui.history([])[0]


# ------------------------------------------------------------------ lock and unlock


async def test_a_freeze_stops_promotes_until_unlocked(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    card_before = await ask(bot, "promote")

    locked = await ask(bot, "lock release freeze")

    assert locked["text"] == slack_ui.frozen(DEPLOYER, "release freeze")
    assert locked["response_type"] == "in_channel"
    lock = await bot.runtime.services.store.get_lock(LOCK)
    assert lock is not None
    refusal = slack_ui.lock_held(lock)
    assert "release freeze" in refusal

    clicked = await click(bot, button(card_before, "Promote"))
    assert texts(clicked) == [refusal]  # at once: no "Promoting …" before it
    assert clicked[0]["replace_original"] is False  # the card stays, for after the unlock
    during = await ask(bot, "promote")
    assert during["text"] == refusal
    assert all_buttons(during) == []
    assert digest_at(ecr, "latest") == digests[THIRD]
    assert ecr_calls(bot)["PutImage"] == 0

    unlocked = await ask(bot, "unlock")

    assert unlocked["text"] == slack_ui.unfrozen(DEPLOYER)
    assert await bot.runtime.services.store.get_lock(LOCK) is None
    await click(bot, button(card_before, "Promote"))
    assert digest_at(ecr, "latest") == digests[FOURTH]


async def test_a_freeze_stops_rollbacks_too(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    await ask(bot, "lock investigating an outage")
    lock = await bot.runtime.services.store.get_lock(LOCK)

    named = await ask(bot, f"rollback {FIRST[:7]}")
    picker = await ask(bot, "rollback")

    assert named["text"] == picker["text"] == slack_ui.lock_held(lock)
    assert all_buttons(named) == all_buttons(picker) == []
    assert digest_at(ecr, "latest") == digests[THIRD]


async def test_only_deployers_lock_and_unlock(bot: Bot, ecr: Any) -> None:
    seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)

    locked = await ask(bot, "lock because I can", user=DEVELOPER)

    assert locked["text"] == slack_ui.deployers_only("lock image operations", [DEPLOYER])
    assert await bot.runtime.services.store.get_lock(LOCK) is None

    await ask(bot, "lock release freeze")
    unlocked = await ask(bot, "unlock", user=DEVELOPER)

    assert unlocked["text"] == slack_ui.deployers_only("unlock image operations", [DEPLOYER])
    assert await bot.runtime.services.store.get_lock(LOCK) is not None


async def test_unlock_when_nothing_is_locked(bot: Bot, ecr: Any) -> None:
    seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)

    answer = await ask(bot, "unlock")

    assert answer["text"] == slack_ui.NOT_FROZEN


# ------------------------------------------------------------------ a lock refuses at once


def progress_lines(answers: list[Body]) -> list[str]:
    """Answers that say an operation is under way."""
    return [t for t in texts(answers) if t.endswith("…")]


@pytest.mark.parametrize("text", ["promote", "rollback", f"rollback {FIRST[:7]}", "latest"])
@pytest.mark.parametrize("holder", ["frozen", "another operation"])
async def test_a_locked_operation_is_refused_before_any_card(
    bot: Bot, ecr: Any, text: str, holder: str
) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    store = bot.runtime.services.store
    if holder == "frozen":
        await ask(bot, "lock release freeze")
    else:
        await store.acquire_lock(LOCK, DEVELOPER, "roll back :latest to 2a4c6e8", 600)
    lock = await store.get_lock(LOCK)
    assert lock is not None

    answer = await ask(bot, text)

    assert answer["text"] == slack_ui.lock_held(lock)
    assert ("release freeze" if holder == "frozen" else "roll back :latest to 2a4c6e8") in answer[
        "text"
    ]
    assert slack_ui.mention(DEPLOYER if holder == "frozen" else DEVELOPER) in answer["text"]
    assert all_buttons(answer) == []
    assert announcements(bot) == []
    assert digest_at(ecr, "latest") == digests[THIRD]
    entry = (await audit(bot))[0]
    assert (entry.actor, entry.result) == (DEPLOYER, "refused")
    assert entry.detail == slack_ui.lock_refusal(lock)


async def test_a_lock_taken_after_the_check_turns_the_card_into_the_refusal(
    bot: Bot, ecr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is taken between the click's check and the promote itself: the used card says
    it was refused; nothing is left saying "Promoting …"."""
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    card = await ask(bot, "promote")
    store = bot.runtime.services.store
    await store.acquire_lock(LOCK, DEVELOPER, "roll back :latest to 2a4c6e8", 600)
    lock = await store.get_lock(LOCK)

    async def too_early(actor: str, action: str) -> None:
        """The check ran just before the other operation took the lock."""

    monkeypatch.setattr(bot.runtime.services.pipeline, "check_unlocked", too_early)
    answers = await click(bot, button(card, "Promote"))

    assert texts(answers) == [slack_ui.lock_held(lock)]
    assert answers[0]["replace_original"] is True
    assert progress_lines(answers) == []
    assert digest_at(ecr, "latest") == digests[THIRD]
    assert announcements(bot) == []


async def test_a_rollback_confirmed_under_a_lock_shows_no_progress(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    card = await ask(bot, f"rollback {FIRST[:7]}")
    await ask(bot, "lock investigating an outage")
    lock = await bot.runtime.services.store.get_lock(LOCK)

    answers = await click(bot, button(card, "Roll back"))

    assert texts(answers) == [slack_ui.lock_held(lock)]
    assert progress_lines(answers) == []
    assert digest_at(ecr, "latest") == digests[THIRD]

    await ask(bot, "unlock")
    answers = await click(bot, button(card, "Roll back"))  # the card outlived the refusal

    assert texts(answers) == [slack_ui.rolling_back(FIRST[:7]), slack_ui.RETAG_ANNOUNCED]
    assert all(a["replace_original"] for a in answers)
    assert digest_at(ecr, "latest") == digests[FIRST]


async def test_an_undo_under_a_lock_is_refused_and_keeps_its_button(bot: Bot, ecr: Any) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    await click(bot, button(await ask(bot, "promote"), "Promote"))
    [promoted] = announcements(bot)
    await ask(bot, "lock demo at 3pm")
    lock = await bot.runtime.services.store.get_lock(LOCK)

    refused = await click(bot, button(promoted, "Undo"))

    assert texts(refused) == [slack_ui.lock_held(lock)]
    assert refused[0]["replace_original"] is False  # the channel's announcement stays as it is
    assert digest_at(ecr, "latest") == digests[FOURTH]
    await ask(bot, "unlock")
    await click(bot, button(promoted, "Undo"))
    assert digest_at(ecr, "latest") == digests[THIRD]


# ------------------------------------------------------------------ failures are in the history


async def history_rows(bot: Bot) -> list[str]:
    return str((await ask(bot, "history", user=DEVELOPER))["text"]).split("\n")


async def test_failed_promotes_and_rollbacks_are_in_the_history(bot: Bot, ecr: Any) -> None:
    seed(ecr, COMMITS, latest=THIRD)  # no :staging yet
    me = slack_ui.mention(DEPLOYER)

    no_staging = await ask(bot, "promote")
    no_such = await ask(bot, "rollback deadbee")
    not_a_sha = await ask(bot, "rollback xyz")
    tag_sha(ecr, SECOND, "staging")
    card = await ask(bot, "promote")
    tag_sha(ecr, FOURTH, "staging")
    await click(bot, button(card, "Promote"))  # :staging moved since the card

    rows = await history_rows(bot)  # newest first
    assert rows[0].endswith(f"{me} *promote*: refused — staging changed since the card")
    assert rows[1].endswith(f"{me} *rollback to xyz*: failed — {not_a_sha['text']}")
    assert rows[2].endswith(f"{me} *rollback to deadbee*: failed — {no_such['text']}")
    assert rows[3].endswith(f"{me} *promote*: failed — {slack_ui.NO_STAGING}")
    assert no_staging["text"] == slack_ui.NO_STAGING
    assert len(rows) == 4


async def test_a_retag_ecr_did_not_apply_is_in_the_history(
    bot: Bot, ecr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    digests = seed(ecr, COMMITS, staging=FOURTH, latest=THIRD)
    card = await ask(bot, "promote")
    pipeline = bot.runtime.services.pipeline

    async def accepted_but_not_applied(manifest: Any, tag: str) -> None:
        """ECR answered PutImage with success; :latest reads back as before."""

    monkeypatch.setattr(pipeline.ecr, "put_tag", accepted_but_not_applied)
    answers = await click(bot, button(card, "Promote"))

    failure = slack_ui.retag_not_applied(digests[FOURTH], image(digests[THIRD]))
    assert texts(answers) == [slack_ui.PROMOTING, failure]
    assert answers[-1]["replace_original"] is True
    [row] = await history_rows(bot)
    assert row.endswith(
        f"*promote* `{short(digests[THIRD])}` → `{short(digests[FOURTH])}`: failed — {failure}"
    )


async def test_an_aws_failure_is_in_the_history(
    make_bot: BotFactory, aws_env: dict[str, str]
) -> None:
    bot = await make_bot(
        AWS_REGION=aws_env["AWS_REGION"],
        AWS_ENDPOINT_URL=aws_env["AWS_ENDPOINT_URL"],
        UAT_ECR_REPOSITORY="no-such-repository",
    )

    promoted = await ask(bot, "promote")
    rolled_back = await ask(bot, "rollback")

    assert promoted["text"].startswith("AWS ")
    rows = await history_rows(bot)
    me = slack_ui.mention(DEPLOYER)
    assert rows[0].endswith(f"{me} *rollback*: failed — {rolled_back['text']}")
    assert rows[1].endswith(f"{me} *promote*: failed — {promoted['text']}")
