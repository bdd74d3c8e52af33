"""`uat-bot console` driven through a pipe, as a person's script would drive it.

Each test runs `python -m bot.cli console` as a subprocess with no AWS, Slack or UAT variables and
HOME / XDG_STATE_HOME in a temporary directory, so the console starts its embedded world (moto on
127.0.0.1, seeded; stand-in containers) and everything it prints is what a person would see.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import gateway_text
from bot.devtools.console import ConsoleChat, render
from bot.devtools.local import LATEST_COMMIT, SEED_COMMITS, STAGING_COMMIT, digest_of, manifest_for
from bot.slack import slack_ui
from bot.slack.chat import Message, Upload
from tests.harness.gitrepo import remove_built_images
from tests.harness.services import ensure_dockerd, ensure_registry, require
from tests.harness.uat_aws import BASE_FAMILY, CLUSTER, CONTAINER, UatAccount

DEFAULT_ACCOUNT_ID = "123456789012"  # moto's
REPOSITORY = "test-tickets-uat"  # the default UAT_ECR_REPOSITORY, which both worlds use

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


GITHUB_TOKEN = "ghp_0123456789abcdefghijABCDEFGHIJ012345"
SESSION = """\
/uat help
/uat images
label 42 uat
wait 60 for is ready at
/uat status
/uat prompt PR-42 add a footer, ghp_0123456789abcdefghijABCDEFGHIJ012345 is mine
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
    # the PR page, as GitHub would show it: one deployment, in progress, then ready
    assert re.search(r"github: deployment 1 of example/app@\w{7} to uat/pr-42\n", launch)
    assert "github: deployment 1 in_progress: UAT environment starting" in launch
    assert re.search(
        r"github: deployment 1 success: UAT environment ready <http://127\.0\.0\.1:\d+/app/42>",
        launch,
    )
    assert re.search(r"github: uat status of \w{7} success: UAT environment ready", launch)

    status = after(out, "/uat status")
    assert re.search(r"example/app#42 `uat` `\w{7}` 🟢 Ready", status)

    prompt = after(out, f"/uat prompt PR-42 add a footer, {GITHUB_TOKEN} is mine")
    prompt = prompt.split("\n", 1)[1]  # what the console said, after the echo of what was typed
    assert "@you asked the agent" in prompt
    assert "> add a footer" in prompt
    assert "✅ succeeded" in prompt
    assert "Done: add a footer, [redacted] is mine" in prompt  # the agent's echo, scrubbed
    assert GITHUB_TOKEN not in prompt

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
    assert "github: deployment 1 inactive: UAT environment stopped" in closing
    assert "github: deployment 2" not in out  # one deployment, however many rounds

    # only the loopback was ever given out: never one of the 10.x addresses moto invents
    urls = re.findall(r"https?://[^\s)`]+", out)
    assert urls
    assert all(u.startswith("http://127.0.0.1:") for u in urls), urls
    # the state was not left in the working directory, nor in the user's state directory
    assert list((tmp_path / "cwd").iterdir()) == []
    assert not (tmp_path / "state").exists()


def test_close_and_reopen_change_the_prs_state_once_and_say_when_it_is_there_already(
    tmp_path: Path,
) -> None:
    result = run_console(tmp_path, "reopen 7\nclose 7\nclose 7\nreopen 7\nquit\n")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    steps = out.split("uat> ")
    assert "example/app#7 is open." in steps[1]
    assert "github: you closed example/app#7" in steps[2]
    assert "example/app#7 is already closed." in steps[3]
    assert "github" not in steps[3]
    assert "github: you reopened example/app#7" in steps[4]


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


class Listener:
    """An HTTP server on 127.0.0.1 that answers 500 to everything and remembers what it got."""

    def __init__(self) -> None:
        got: list[str] = []
        self.got = got

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                got.append(f"{self.command} {self.path}")
                self.send_response(500)
                self.end_headers()

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def test_the_shells_aws_settings_never_reach_the_embedded_world(
    tmp_path: Path, listener: Listener
) -> None:
    aws = tmp_path / "home" / ".aws"
    aws.mkdir(parents=True)
    (aws / "config").write_text(
        f"[profile shell]\nregion = eu-west-1\nendpoint_url = {listener.url}\n"
    )
    (aws / "credentials").write_text(
        "[shell]\naws_access_key_id = AKIASHELLPROFILE\naws_secret_access_key = shell\n"
    )
    script = "/uat images\nlabel 42 uat\nwait 60 for is ready at\nclose 42\nquit\n"
    result = run_console(
        tmp_path,
        script,
        AWS_PROFILE="shell",
        AWS_ACCESS_KEY_ID="AKIASHELLKEY",
        AWS_SECRET_ACCESS_KEY="shell",
        AWS_ENDPOINT_URL=listener.url,
        AWS_ENDPOINT_URL_ECR=listener.url,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "AWS is embedded: moto at http://127.0.0.1:" in out
    latest = slack_ui.short(digest_of(manifest_for(LATEST_COMMIT)))
    assert f":latest: `{latest}` (`{LATEST_COMMIT[:7]}`)" in after(out, "/uat images")
    assert "#42 is ready at" in after(out, "label 42 uat")
    assert listener.url not in out
    assert listener.got == []


def aws_console(
    tmp_path: Path, moto_server: str, script: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    """`uat-bot console --aws` on moto's server as the real AWS, seeded as a UAT account."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    env = console_env(
        tmp_path,
        AWS_ENDPOINT_URL=moto_server,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        UAT_ECS_CLUSTER=CLUSTER,
        UAT_TASK_DEFINITION=BASE_FAMILY,
        UAT_CONTAINER_NAME=CONTAINER,
        UAT_POLL_SECONDS="3600",
        **extra,
    )
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "console", "--aws"],
        input=script,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=cwd,
        timeout=TIMEOUT_S,
    )


def ecr_and_ecs(account: UatAccount) -> tuple[Any, ...]:
    """What the account's ECR and ECS hold: tags by digest, tasks, task definitions."""
    images = account.ecr.describe_images(repositoryName=REPOSITORY)["imageDetails"]
    tags = sorted((i["imageDigest"], sorted(i.get("imageTags", []))) for i in images)
    definitions = account.ecs.list_task_definitions()["taskDefinitionArns"]
    return tags, account.tasks(), sorted(definitions)


def test_with_aws_the_console_says_where_and_a_no_changes_nothing(
    tmp_path: Path, moto_server: str, account: UatAccount
) -> None:
    before = ecr_and_ecs(account)
    script = "n\n/uat promote\n1\nlabel 42 uat\nwait 3\n/uat images\nquit\n"
    result = aws_console(
        tmp_path,
        moto_server,
        script,
        UAT_DEPLOYERS="U0CONSOLE",
        UAT_SUBNETS=account.subnet,
        UAT_SECURITY_GROUPS=account.security_group,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    said = slack_ui.console_real_aws(
        f"{DEFAULT_ACCOUNT_ID} (arn:aws:sts::{DEFAULT_ACCOUNT_ID}:user/moto)",
        "us-east-1",
        CLUSTER,
        REPOSITORY,
    )
    assert said in out
    assert slack_ui.CONSOLE_ACT_QUESTION in out
    assert slack_ui.CONSOLE_READ_ONLY in out
    assert "AWS is embedded" not in out
    assert "was not called: this console was told not to change ECR or ECS" in after(out, "1")
    assert ":latest: `" in after(out, "/uat images")  # reading still works
    assert ecr_and_ecs(account) == before
    assert (tmp_path / "state" / "uat-bot" / "console.db").exists()


def test_the_console_user_is_a_deployer_only_in_the_embedded_world(
    tmp_path: Path, moto_server: str, account: UatAccount
) -> None:
    refused = aws_console(tmp_path, moto_server, "y\n/uat promote\nquit\n")
    assert refused.returncode == 0, refused.stdout + refused.stderr
    assert slack_ui.CONSOLE_MAY_CHANGE in refused.stdout
    assert "Only deployers can" in after(refused.stdout, "/uat promote")

    named = aws_console(
        tmp_path, moto_server, "y\n/uat promote\n1\nquit\n", UAT_DEPLOYERS="U0CONSOLE"
    )
    assert named.returncode == 0, named.stdout + named.stderr
    assert "@you moved `:latest` (promote)" in after(named.stdout, "1")
    latest = account.ecr.describe_images(
        repositoryName=REPOSITORY, imageIds=[{"imageTag": "latest"}]
    )
    assert latest["imageDetails"][0]["imageDigest"] == account.digests["staging"]

    embedded = run_console(tmp_path, "/uat promote\n1\nquit\n")  # no UAT_DEPLOYERS at all
    assert "@you moved `:latest` (promote)" in after(embedded.stdout, "1")


def test_without_docker_the_banner_and_a_build_say_what_to_install(tmp_path: Path) -> None:
    result = run_console(tmp_path, "/uat staging\nuat-bot staging\nquit\n")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    no_docker = gateway_text.docker_unreachable("unix:///nonexistent/docker.sock")
    assert "install Debian's docker.io and start dockerd, or set DOCKER_HOST" in no_docker
    assert slack_ui.console_no_builds(no_docker) in out
    assert "127.0.0.1:5000" not in out and "push to" not in out
    assert no_docker in after(out, "/uat staging")
    assert f"error: {no_docker}" in after(out, "uat-bot staging")


@pytest.mark.docker
def test_a_build_in_the_console_is_what_images_history_and_a_launch_see(tmp_path: Path) -> None:
    docker_host = require(ensure_dockerd)
    require(ensure_registry)  # the registry program is installed: the console starts its own
    script = (
        "/uat staging\n/uat images\n/uat history\nlabel 7 uat-staging\n"
        "wait 60 for is ready at\nclose 7\nuat-bot staging\nquit\n"
    )
    try:
        result = run_console(tmp_path, script, DOCKER_HOST=docker_host)
    finally:
        remove_built_images(tmp_path, REPOSITORY)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Builds: the sample app in " in out
    built = after(out, "/uat staging")
    found = re.search(
        r"`:staging` is now `([0-9a-f]{7})`.*?digest `(sha256:[0-9a-f]{64})`", built, re.S
    )
    assert found, built
    sha, digest = found[1], found[2]
    assert digest not in {digest_of(manifest_for(c)) for c in SEED_COMMITS}
    short = slack_ui.short(digest)
    assert f":staging: `{short}` (`{sha}`)" in after(out, "/uat images")
    history = after(out, "/uat history")
    assert re.search(rf"build :staging {sha} `[^`]*` → `{short}`: ok", history), history
    launch = after(out, "label 7 uat-staging")
    assert f"Image: `{sha}` `{short}`" in launch
    assert "State: 🟢 Ready" in launch
    # the terminal's `uat-bot staging`, typed in the console, builds the same commit again
    assert f":staging is now {sha} — The console's sample UAT app (digest {short}, by cli:" in (
        after(out, "uat-bot staging")
    )
    # the terminal's `uat-bot staging`, typed in the console, builds the same commit again
    assert f":staging is now {sha} — The console's sample UAT app (digest {short}, by cli:" in (
        after(out, "uat-bot staging")
    )


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
    root = await chat.post(Message("C1", "the card"))
    content = "".join(f"line {n}\n" for n in range(500))
    where = await chat.upload(
        Upload("C1", root, "prompt-j1-output.txt", content, "Output of prompt j1")
    )
    saved = Path(where)
    assert await asyncio.to_thread(saved.read_text, encoding="utf-8") == content
    assert saved.name == "prompt-j1-output.txt"
    said = f"📎 Output of prompt j1: {where} (501 lines, {len(content):,} characters)"
    assert said in out.getvalue()
    assert await chat.find("C1", "prompt-j1-output.txt", root) == where  # keyed by its name
    await asyncio.to_thread(saved.unlink)


LOGS_SESSION = """\
label 42 uat
wait 60 for is ready at
/uat logs PR-42
crash 42
wait 60 for #42 failed:
/uat logs PR-42 --grep TypeError
quit
"""


def test_logs_and_a_failure_card_read_the_stand_ins_output_from_cloudwatch_logs(
    tmp_path: Path,
) -> None:
    result = run_console(tmp_path, LOGS_SESSION)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    logs = after(out, "/uat logs PR-42").split("uat> crash 42")[0]
    assert "The last" in logs and "line(s) of #42's log" in logs
    assert "uat-entrypoint: fetching refs/pull/42/head" in logs
    assert "app: listening on http://0.0.0.0:3001" in logs
    assert re.search(r"Posted \d+ line\(s\) of #42's log in its thread\.", logs)
    crashed = after(out, "crash 42").split("uat> /uat logs PR-42 --grep")[0]
    assert "stand-in: the app of #42 crashed" in crashed
    assert "State: 🔴 Failed" in crashed
    assert "the container failed: the app exited with code 1" in crashed
    assert "Last" in crashed and "TypeError: Cannot read properties of undefined" in crashed
    grep = after(out, "/uat logs PR-42 --grep TypeError")
    assert "containing `TypeError`" in grep
    assert "TypeError: Cannot read properties" in grep
    assert "listening on" not in grep
