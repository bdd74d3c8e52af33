"""The README stays true to the code: commands, settings, error messages, layout."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bot import gateway_text
from bot.config import Settings
from bot.devtools import docs
from bot.slack import slack_ui
from bot.slack.dispatch import Dispatcher, load_commands
from tests.harness.bot import ROOT

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_the_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    lines = [line for line in first_block.splitlines()[1:] if line.strip()]
    assert lines[0].startswith("make run") and lines[1].startswith("make test")
    makefile = (ROOT / "Makefile").read_text()
    assert "uat-bot console" in makefile.split("\nrun:")[1].split("\n\n")[0]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_command_reference_is_generated_from_the_modules() -> None:
    assert docs.with_reference(README) == README, "run `make docs` to regenerate it"


def test_slack_help_is_the_reference_text() -> None:
    dispatcher = Dispatcher(*load_commands())
    for name, command in dispatcher.table.items():
        help_text = dispatcher.help_text(name)
        assert command.summary in help_text and command.description in help_text
        assert f"### `{command.usage}`" in README


@pytest.mark.parametrize("name", docs.CLI_TWINS)
def test_terminal_help_is_the_reference_text(name: str) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "bot.cli", name, "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "400", "PATH": ""},
        cwd=ROOT,
        timeout=60,
    ).stdout
    command = load_commands()[0][name]
    assert " ".join(command.summary.split()) in " ".join(shown.split())


def test_every_setting_is_in_the_environment_table() -> None:
    table = section("Setting it up for a real workspace")
    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in table, f"{name.upper()} is not documented"


def test_every_error_message_is_in_troubleshooting() -> None:
    sources = "\n".join(
        path.read_text() for folder in ("bot", "commands") for path in (ROOT / folder).rglob("*.py")
    )
    raised = set(
        re.findall(
            r"(?:UserError|UsageError|Recorded|AwsError|BuildError|LaunchRefused|ChatError)\("
            r"\s*(?:slack_ui|gateway_text)\.(\w+)",
            sources,
        )
    )
    assert len(raised) > 30  # the scan works
    documented = set(re.findall(r"^\| `(\w+)` \|", section("Troubleshooting"), re.M))
    assert raised - documented == set(), "add these to the README's Troubleshooting"
    assert documented - set(dir(slack_ui)) - set(dir(gateway_text)) == set(), (
        "these are not in bot/slack/slack_ui.py or bot/gateway_text.py any more"
    )


def test_the_architecture_diagram_names_every_module() -> None:
    diagram = section("Architecture").split("```mermaid")[1].split("```")[0]
    for path in (ROOT / "bot").rglob("*.py"):
        if path == ROOT / "bot" / "__init__.py" or path.parent.name == "listeners":
            continue  # the listeners are one node, listeners/*
        name = f"{path.parent.name}/" if path.name == "__init__.py" else path.name
        assert name in diagram, f"{path.relative_to(ROOT)} is missing from the diagram"
