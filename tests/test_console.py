"""`uat-bot console` driven through a pipe, as a person's script would drive it.

Each test runs `python -m bot.cli console` as a subprocess with no AWS, Slack or UAT variables and
HOME / XDG_STATE_HOME in a temporary directory, so the console starts its embedded world (moto on
127.0.0.1, seeded; stand-in containers) and everything it prints is what a person would see.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot import slack_ui
from bot.config import load_settings
from bot.console import ConsoleChat, render
from bot.local import LATEST_COMMIT, STAGING_COMMIT, aws_configuration, digest_of, manifest_for

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180


def console_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "UAT_", "SLACK_", "GITHUB_")) and k != "DOCKER_HOST"
    }
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        PYTHONPATH=str(ROOT),
        PYTHONIOENCODING="utf-8",
        DOCKER_HOST="unix:///nonexistent/docker.sock",  # nothing here builds for real
    )
    env.update(extra)
    return env


def run_console(tmp_path: Path, script: str, **extra: str) -> subprocess.CompletedProcess[str]:
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "console"],
        input=script,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=console_env(tmp_path, **extra),
        cwd=cwd,
        timeout=TIMEOUT_S,
    )


def after(out: str, line: str) -> str:
    """What the console printed from the echo of `line` on."""
    echo = f"uat> {line}\n"
    assert echo in out, f"{line!r} was not read:\n{out}"
    return out[out.index(echo) :]


SESSION = """\
/uat help
/uat images
label 42 uat
wait 60 for is ready at
/uat status
/uat prompt PR-42 add a footer
wait 60 for succeeded
/uat promote
1
/uat history
close 42
quit
"""


def test_a_scripted_session_from_label_to_close(tmp_path: Path) -> None:
    result = run_console(tmp_path, SESSION)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert out.startswith("uat-bot console.")
    assert "AWS is embedded" in out

    assert "`/uat promote` — Promote :staging to :latest" in after(out, "/uat help")

    latest = slack_ui.short(digest_of(manifest_for(LATEST_COMMIT)))
    staging = slack_ui.short(digest_of(manifest_for(STAGING_COMMIT)))
    images = after(out, "/uat images")
    assert f":latest: `{latest}` (`{LATEST_COMMIT[:7]}`)" in images
    assert f":staging: `{staging}` (`{STAGING_COMMIT[:7]}`)" in images

    launch = after(out, "label 42 uat")
    assert "github: you added the label `uat` to example/app#42" in launch
    assert "bot [1]: #42 Console PR" in launch
    assert "State: 🟢 Ready" in launch
    assert re.search(r"↳ bot \[1\]: #42 is ready at http://127\.0\.0\.1:\d+/app/42\.", launch)

    status = after(out, "/uat status")
    assert re.search(r"example/app#42 `uat` `\w{7}` 🟢 Ready", status)

    prompt = after(out, "/uat prompt PR-42 add a footer")
    assert "@you asked the agent" in prompt
    assert "> add a footer" in prompt
    assert "✅ succeeded" in prompt
    assert "Done: add a footer" in prompt

    promote = after(out, "/uat promote")
    assert "[1] Promote  [2] Cancel" in promote
    clicked = after(out, "1")
    assert "you clicked [1] Promote" in clicked
    assert f"@you moved `:latest` (promote): `{latest}` → `{staging}`" in clicked

    history = after(out, "/uat history")
    assert f"@you promote `{latest}` → `{staging}`: ok" in history

    closing = after(out, "close 42")
    assert "github: you closed example/app#42" in closing
    assert "State: ⏹ Stopped" in closing
    assert "#42 stopped: PR closed by you." in closing

    # only the loopback was ever given out: never one of the 10.x addresses moto invents
    urls = re.findall(r"https?://[^\s)`]+", out)
    assert urls
    assert all(u.startswith("http://127.0.0.1:") for u in urls), urls
    # the state was not left in the working directory, nor in the user's state directory
    assert list((tmp_path / "cwd").iterdir()) == []
    assert not (tmp_path / "state").exists()


def test_the_end_of_the_input_ends_the_console(tmp_path: Path) -> None:
    empty = run_console(tmp_path, "")
    assert empty.returncode == 0, empty.stdout + empty.stderr
    assert "uat-bot console." in empty.stdout

    no_quit = run_console(tmp_path, "/uat images")  # no newline, no quit
    assert no_quit.returncode == 0, no_quit.stdout + no_quit.stderr
    assert ":latest: `" in after(no_quit.stdout, "/uat images")


def test_unknown_words_are_answered_and_the_console_carries_on(tmp_path: Path) -> None:
    script = "help\nfoo bar\n/deploy now\n7\nlabel 42\nwait soon\n/uat bogus\nquit\n"
    result = run_console(tmp_path, script)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "label <pr> <label>" in after(out, "help")
    assert "`foo` is not a console word. Type help" in after(out, "foo bar")
    assert "`/deploy` is not a command here" in after(out, "/deploy now")
    assert "There are no buttons to click." in after(out, "7")
    assert "Usage: label <pr> <label>" in after(out, "label 42")
    assert "Usage: wait <seconds>" in after(out, "wait soon")
    assert "`/uat bogus` is not a command." in after(out, "/uat bogus")


def test_with_aws_configured_the_console_uses_it(tmp_path: Path, moto_server: str) -> None:
    result = run_console(
        tmp_path,
        "/uat images\nquit\n",
        AWS_ENDPOINT_URL=moto_server,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"AWS as configured: AWS_ENDPOINT_URL={moto_server}" in out
    # that account has no repository: the bot says so, as it would in Slack
    assert "RepositoryNotFoundException" in after(out, "/uat images")
    assert (tmp_path / "state" / "uat-bot" / "console.db").exists()


def test_what_counts_as_aws_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    assert aws_configuration(load_settings({})) is None

    endpoint = load_settings({"AWS_ENDPOINT_URL": "http://127.0.0.1:1"})
    assert aws_configuration(endpoint) == "AWS_ENDPOINT_URL=http://127.0.0.1:1"

    (tmp_path / "credentials").write_text(
        "[default]\naws_access_key_id = a\naws_secret_access_key = b\n"
    )
    assert aws_configuration(load_settings({})) == "AWS credentials (shared-credentials-file)"
    (tmp_path / "credentials").unlink()

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    assert aws_configuration(load_settings({})) == "AWS credentials (env)"


def test_cards_render_compactly_with_numbered_buttons() -> None:
    text, blocks = slack_ui.confirm_card(
        "Roll :latest back to `abc1234`?",
        ["*:latest now*: `x`"],
        "uat.rollback.confirm",
        "{}",
        "Go",
    )
    body, buttons = render(text, blocks)
    assert body == "Roll :latest back to `abc1234`?\n:latest now: `x`\n[1] Go  [2] Cancel"
    assert [b.action_id for b in buttons] == ["uat.rollback.confirm", "uat.cancel"]
    body, _ = render("x", [slack_ui.text_block("<@U0CONSOLE> &lt;b&gt; <https://e.x/a|the app>")])
    assert body == "@you <b> the app (https://e.x/a)"


async def test_a_file_the_bot_shares_is_saved_where_the_console_says() -> None:
    out = io.StringIO()
    chat = ConsoleChat(out)
    root = await chat.post("C1", "the card")
    content = "".join(f"line {n}\n" for n in range(500))
    where = await chat.upload("C1", root, "prompt-j1-output.txt", content, "Output of prompt j1")
    saved = Path(where)
    assert await asyncio.to_thread(saved.read_text, encoding="utf-8") == content
    assert saved.name == "prompt-j1-output.txt"
    said = f"📎 Output of prompt j1: {where} (501 lines, {len(content):,} characters)"
    assert said in out.getvalue()
    assert await chat.find("C1", "prompt-j1-output.txt", root) == where  # keyed by its name
    await asyncio.to_thread(saved.unlink)
