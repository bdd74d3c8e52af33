"""Slack's names and numbers are defined once: the action ids the cards send are the ones the
handlers answer and the listener takes, and every block is cut to Slack's limits."""

from __future__ import annotations

from bot.slack import action_ids, limits, slack_ui
from bot.slack.dispatch import load_commands
from bot.slack.listeners.actions import BUTTONS

IDS = {value for name, value in vars(action_ids).items() if name.isupper() and name != "PREFIX"}


def test_every_action_id_has_one_handler_and_the_listener_takes_it() -> None:
    _, handlers = load_commands()
    assert set(handlers) == IDS
    assert all(BUTTONS.match(action_id) for action_id in IDS)
    assert not BUTTONS.match("other.app.button")


def test_blocks_are_cut_to_slacks_limits() -> None:
    section = slack_ui.text_block("s" * (limits.SECTION_TEXT + 10))
    assert len(section["text"]["text"]) == limits.SECTION_TEXT
    button = slack_ui.button("b" * 100, action_ids.CANCEL, "v" * (limits.BUTTON_VALUE + 10))
    assert len(button["text"]["text"]) == limits.BUTTON_TEXT
    assert len(button["value"]) == limits.BUTTON_VALUE
    text, blocks = slack_ui.fit("t" * limits.MESSAGE_TEXT, [section] * (limits.BLOCKS + 5))
    assert len(text) < limits.MESSAGE_TEXT
    assert blocks is not None and len(blocks) == limits.BLOCKS
