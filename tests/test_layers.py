"""The arrows between layers hold: gateways import nothing from the domain, the listeners or Slack's
words, and `uat-bot serve` never loads the developer tools."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GATEWAYS = sorted(
    [
        *(ROOT / "bot" / "aws").glob("*.py"),
        *(ROOT / "bot" / "store").glob("*.py"),
        ROOT / "bot" / "container.py",
        ROOT / "bot" / "github_api.py",
        ROOT / "bot" / "gateway_text.py",
        ROOT / "bot" / "images" / "docker_build.py",
        ROOT / "bot" / "images" / "registry.py",
    ]
)
# What a gateway must not import: the domain, the commands, Slack's listeners.
DOMAIN = (
    "bot.environments",
    "bot.prompts",
    "bot.images.operations",
    "bot.github",
    "bot.commands",
    "commands",
)
LISTENERS = ("bot.slack.listeners",)
SLACK = ("bot.slack",)
DEVELOPER_ONLY = (
    "bot.devtools.console",
    "bot.devtools.local",
    "bot.devtools.terminal",
    "bot.devtools.docs",
    "bot.devtools.mutate",
)


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function, as dotted names (a `from
    package import name` counts as both `package` and `package.name`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_gateways_import_nothing_from_the_domain_or_the_listeners() -> None:
    crossing = {
        relative(path): sorted(n for n in imported(path) if within(n, DOMAIN + LISTENERS))
        for path in GATEWAYS
    }
    assert {path: names for path, names in crossing.items() if names} == {}


def test_gateways_import_nothing_from_the_slack_layer() -> None:
    speaking = {
        relative(path): sorted(n for n in imported(path) if within(n, SLACK)) for path in GATEWAYS
    }
    assert {path: names for path, names in speaking.items() if names} == {}


def test_the_container_gateway_knows_nothing_of_slack() -> None:
    names = imported(ROOT / "bot" / "container.py")
    assert not [n for n in names if n.startswith(("slack", "bot.slack", "bot.slack.chat"))], names


def test_the_import_check_sees_a_crossing_when_there_is_one(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.py"
    leaky.write_text(
        "def later():\n    from bot.environments import Environments\n    import commands.stop\n"
    )
    found = sorted(n for n in imported(leaky) if within(n, DOMAIN))
    assert found == ["bot.environments", "bot.environments.Environments", "commands.stop"]


SERVE = """
import json, sys
import bot.cli
from bot.app import build_runtime
from bot.config import load_settings
from bot.server import create_web_app

create_web_app(build_runtime(load_settings()))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("bot", "commands"))))
"""


def test_serve_never_loads_the_developer_tools(tmp_path: Path) -> None:
    env = {
        "PATH": "",
        "PYTHONPATH": str(ROOT),
        "SLACK_BOT_TOKEN": "xoxb-layers",
        "SLACK_SIGNING_SECRET": "layers-secret",
        "AWS_REGION": "us-east-1",
        "UAT_DB": str(tmp_path / "uat.db"),
    }
    done = subprocess.run(
        [sys.executable, "-c", SERVE],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "bot.app" in loaded and "bot.slack.listeners" in loaded  # it did build the runtime
    assert [m for m in loaded if within(m, DEVELOPER_ONLY)] == []


def test_no_assert_steers_the_code_in_bot_or_commands() -> None:
    """`python -O` strips asserts: a check the code relies on raises a proper error instead."""
    asserting = [
        f"{relative(path)}:{node.lineno}"
        for folder in ("bot", "commands")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Assert)
    ]
    assert asserting == []


def test_the_distribution_installs_every_package_and_no_top_level_commands() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "bot").rglob("__init__.py")
    }
    assert set(config["packages"]) == on_disk | {"bot.commands"}
    assert config["package-dir"]["bot.commands"] == "commands"
    assert not any(
        name == "commands" or name.startswith("commands.") for name in config["packages"]
    )
