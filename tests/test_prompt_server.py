"""The container's prompt server over real HTTP on 127.0.0.1, running tests/harness/fake_claude.py
as the agent in a real git repo: auth, limits, FIFO, results, timeouts, cancel, health,
persistence, full outputs."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from container import prompt_server
from container.prompt_server import (
    MAX_OUTPUT_BYTES,
    MAX_PROMPT_CHARS,
    OUTPUT_TAIL_CHARS,
    QUEUE_KEY,
    REDACTED,
    Config,
    ConfigError,
    Job,
    create_app,
    scrub,
    size_text,
)
from tests.harness.container_helpers import (
    PROMPT_SERVER,
    TOKEN,
    answers,
    fake_claude_cmd,
    free_port,
    git,
    http,
    kill_pids,
    make_repo,
    pid_alive,
    read_pids,
    wait_until,
)
from tests.harness.fake_claude import long_lines

FINAL_STATES = ("succeeded", "failed", "cancelled", "timed_out")


@dataclass
class Server:
    """A prompt server running in this test's event loop, and a client for it."""

    url: str
    config: Config
    session: aiohttp.ClientSession
    runner: web.AppRunner

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN, **kw: Any
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kw.pop("headers", {}))
        async with self.session.request(
            method, self.url + path, json=body, headers=headers, **kw
        ) as response:
            return response.status, await response.json()

    async def output(self, job_id: str, token: str | None = TOKEN) -> tuple[int, str, str]:
        """GET /prompts/{id}/output: (status, Content-Type, body as text)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(f"{self.url}/prompts/{job_id}/output", headers=headers) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.text()

    async def submit(self, prompt: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.call("POST", "/prompt", {"prompt": prompt, **fields})
        assert status == 202, body
        return body

    async def job(self, job_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/prompts/{job_id}")
        assert status == 200, body
        return body

    async def wait(self, job_id: str, states: tuple[str, ...] = FINAL_STATES) -> dict[str, Any]:
        async with asyncio.timeout(15):
            while True:
                job = await self.job(job_id)
                if job["state"] in states:
                    return job
                await asyncio.sleep(0.05)


Start = Callable[..., Awaitable[Server]]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "work")


@pytest.fixture
def agent_log(tmp_path: Path) -> Path:
    return tmp_path / "agent.log"


@pytest.fixture
async def start(repo: Path, agent_log: Path) -> AsyncIterator[Start]:
    """Start a prompt server in-process on a free port; `start(field=value)` overrides Config."""
    runners: list[web.AppRunner] = []
    async with aiohttp.ClientSession() as session:

        async def _start(**overrides: Any) -> Server:
            config = Config(
                work_dir=repo,
                host="127.0.0.1",
                port=0,
                app_port=free_port(),
                token=TOKEN,
                claude_cmd=tuple(shlex.split(fake_claude_cmd(agent_log))),
                timeout_s=30,
            )
            config = replace(config, **overrides)
            runner = web.AppRunner(create_app(config))
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            return Server(f"http://127.0.0.1:{port}", config, session, runner)

        yield _start
        for runner in runners:
            await runner.cleanup()


async def hang_then_queue(
    server: Server, pidfile: Path, queued_prompt: str
) -> tuple[str, str, list[int]]:
    """A job whose agent hangs, running (with its pids, read from `pidfile`), and another queued
    behind it: their ids and the pids."""
    running = (await server.submit(f"fake:hang {pidfile}"))["id"]
    queued = (await server.submit(queued_prompt))["id"]
    await server.wait(running, ("running",))
    await asyncio.to_thread(wait_until, pidfile.exists, 10, "the hanging agent")
    return running, queued, read_pids(pidfile)


def ran(agent_log: Path) -> list[str]:
    """The prompts the fake agent was started with, in order."""
    if not agent_log.exists():
        return []
    return [json.loads(line) for line in agent_log.read_text().splitlines()]


def full_output(prompt: str, lines: list[str]) -> str:
    """The full output the server keeps for a `fake:long` run: each piece shown, one per line."""
    shown = [f"Working on it ({prompt.split()[0]}).", "[tool: Bash]", *lines, "All done.", prompt]
    return "".join(f"{piece}\n" for piece in shown)


def created(repo: Path, *names: str) -> list[Path]:
    """Which of `names` exist in the repo or in the tests' working directory."""
    return [folder / n for folder in (repo, Path.cwd()) for n in names if (folder / n).exists()]


# ------------------------------------------------------------------------------ auth and limits


async def test_prompts_need_the_bearer_token(start: Start, agent_log: Path) -> None:
    server = await start()
    for token in (None, "wrong-token", TOKEN + "x"):
        status, body = await server.call("POST", "/prompt", {"prompt": "hello"}, token=token)
        assert status == 401, body
        assert "token" in body["error"]
    status, _ = await server.call(
        "POST", "/prompt", {"prompt": "hi"}, token=None, headers={"Authorization": f"Basic {TOKEN}"}
    )
    assert status == 401
    status, _ = await server.call("DELETE", "/prompts/anything", token="wrong")
    assert status == 401
    _, snapshot = await server.call("GET", "/status")
    assert snapshot == {"running": None, "queue": [], "recent": []}
    assert ran(agent_log) == []


async def test_every_endpoint_but_health_needs_the_bearer_token(start: Start) -> None:
    server = await start()
    job_id = (await server.wait((await server.submit("say hello"))["id"]))["id"]
    requests = [
        ("GET", "/status"),
        ("GET", "/version"),
        ("GET", f"/prompts/{job_id}"),
        ("GET", f"/prompts/{job_id}/output"),
        ("GET", "/prompts/0123456789ab"),
        ("DELETE", f"/prompts/{job_id}"),
        ("POST", "/prompt"),
    ]
    for method, path in requests:
        for token in (None, "wrong-token", TOKEN[:-1]):
            status, body = await server.call(method, path, {"prompt": "x"}, token=token)
            assert (method, path, status) == (method, path, 401), body
            assert "prompt-token" not in json.dumps(body)
    status, body = await server.call("GET", "/health", token=None)
    assert status in (200, 503)
    assert "phase" in body
    assert (await server.call("GET", "/status"))[0] == 200
    assert (await server.call("GET", f"/prompts/{job_id}"))[0] == 200


async def test_without_a_configured_token_every_prompt_is_refused(start: Start) -> None:
    server = await start(token=None)
    status, body = await server.call("POST", "/prompt", {"prompt": "hello"}, token="anything")
    assert status == 503
    assert "UAT_PROMPT_TOKEN is not set" in body["error"]
    for path in ("/status", "/version", "/prompts/0123456789ab"):
        assert (await server.call("GET", path, token="anything"))[0] == 503


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "prompt is missing"),
        (b'{"prompt": "   "}', "prompt is missing"),
        (b'{"prompt": 42}', "prompt is missing"),
        (json.dumps({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}).encode(), "the limit is 20000"),
        (b'{"prompt": "hi", "user": 7}', "user must be a string"),
    ],
)
async def test_bad_prompts_are_refused_with_the_reason(
    start: Start, agent_log: Path, raw: bytes, reason: str
) -> None:
    server = await start()
    status, body = await server.call(
        "POST", "/prompt", token=TOKEN, data=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert reason in body["error"]
    assert ran(agent_log) == []


async def test_a_prompt_of_exactly_the_limit_is_accepted(start: Start) -> None:
    server = await start()
    prompt = "y" * MAX_PROMPT_CHARS
    job = await server.wait((await server.submit(prompt))["id"])
    assert job["state"] == "succeeded"
    assert job["summary"] == prompt


async def test_unknown_jobs_are_404(start: Start) -> None:
    server = await start()
    assert (await server.call("GET", "/prompts/nope"))[0] == 404
    assert (await server.call("DELETE", "/prompts/nope"))[0] == 404


# ------------------------------------------------------------------------------ running jobs


async def test_a_job_records_the_agents_result(start: Start, repo: Path) -> None:
    server = await start()
    accepted = await server.submit("Make the button blue", user="U123", thread="1712.0001")
    assert accepted["position"] == 0
    job = await server.wait(accepted["id"])
    assert job["state"] == "succeeded", job
    assert job["summary"] == "Make the button blue"
    assert job["cost_usd"] == pytest.approx(0.0123)
    assert job["duration_s"] == pytest.approx(1.234)
    assert job["usage"] == {"input_tokens": 10, "output_tokens": 20}
    assert "Working on it" in job["output_tail"]
    assert "[tool: Bash]" in job["output_tail"]
    assert job["output_tail"].rstrip().endswith("Make the button blue")
    assert (job["user"], job["thread"], job["error"], job["exit_code"]) == (
        "U123",
        "1712.0001",
        None,
        0,
    )
    assert job["commit"] is None
    assert job["files_changed"] == []
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]


async def test_a_commit_and_the_changed_files_are_recorded(start: Start, repo: Path) -> None:
    before = git(repo, "rev-parse", "HEAD")
    server = await start()
    job = await server.wait((await server.submit("fake:commit feature.txt"))["id"])
    after = git(repo, "rev-parse", "HEAD")
    assert job["state"] == "succeeded", job
    assert after != before
    assert job["commit"] == after
    assert job["pushed"] is False  # no upstream in this repo
    assert job["files_changed"] == ["dirty.txt", "feature.txt"]


async def test_a_failing_agent_fails_the_job_with_its_stderr(start: Start) -> None:
    server = await start()
    job = await server.wait((await server.submit("fake:fail"))["id"])
    assert job["state"] == "failed"
    assert job["summary"] == "It did not work."
    assert "reported an error" in job["error"]
    assert "exit status 1" in job["error"]
    assert "boom" in job["error"]
    assert job["cost_usd"] == pytest.approx(0.0123)

    crashed = await server.wait((await server.submit("fake:crash"))["id"])
    assert crashed["state"] == "failed"
    assert "exit status 3" in crashed["error"]
    assert "segfault" in crashed["error"]


async def test_an_agent_that_cannot_start_fails_the_job(start: Start, tmp_path: Path) -> None:
    server = await start(claude_cmd=(str(tmp_path / "no-such-claude"),))
    job = await server.wait((await server.submit("hello"))["id"])
    assert job["state"] == "failed"
    assert "cannot start the agent" in job["error"]


async def test_jobs_run_one_at_a_time_in_order(start: Start, agent_log: Path) -> None:
    server = await start()
    prompts = [f"fake:slow 0.3 job{i}" for i in range(3)]
    accepted = [await server.submit(p) for p in prompts]
    assert [a["position"] for a in accepted] == [0, 1, 2]
    third = await server.job(accepted[2]["id"])
    assert third["state"] == "queued"
    assert third["position"] == 2
    _, snapshot = await server.call("GET", "/status")
    assert snapshot["running"]["id"] == accepted[0]["id"]
    assert [j["id"] for j in snapshot["queue"]] == [a["id"] for a in accepted[1:]]

    jobs = [await server.wait(a["id"]) for a in accepted]
    assert [j["state"] for j in jobs] == ["succeeded"] * 3
    assert ran(agent_log) == prompts
    for earlier, later in itertools.pairwise(jobs):
        assert earlier["finished_at"] <= later["started_at"]
    _, snapshot = await server.call("GET", "/status")
    assert snapshot["running"] is None
    assert snapshot["queue"] == []
    assert [j["id"] for j in snapshot["recent"]] == [a["id"] for a in reversed(accepted)]


async def test_the_prompt_reaches_the_agent_literally_never_through_a_shell(
    start: Start, repo: Path
) -> None:
    server = await start()
    prompt = "Fix it $(touch pwned) `touch pwned2`; touch pwned3 && echo '$HOME' \"x\" | cat"
    job = await server.wait((await server.submit(prompt))["id"])
    assert job["state"] == "succeeded"
    assert job["summary"] == prompt
    assert not created(repo, "pwned", "pwned2", "pwned3")


async def test_the_agent_does_not_see_the_prompt_token(start: Start) -> None:
    os.environ["UAT_PROMPT_TOKEN"] = TOKEN
    try:
        server = await start()
        job = await server.wait((await server.submit("fake:env UAT_PROMPT_TOKEN"))["id"])
    finally:
        del os.environ["UAT_PROMPT_TOKEN"]
    assert job["summary"] == "<unset>"


async def test_a_job_past_its_timeout_is_killed_with_its_process_group(
    start: Start, tmp_path: Path
) -> None:
    pidfile = tmp_path / "hang.pids"
    server = await start(timeout_s=1.0)
    job_id = (await server.submit(f"fake:hang {pidfile}"))["id"]
    job = await server.wait(job_id)
    assert job["state"] == "timed_out"
    assert "no result after 1 s" in job["error"]
    assert "Hanging now." in job["output_tail"]
    pids = read_pids(pidfile)
    try:
        wait_until(lambda: not any(pid_alive(p) for p in pids), 5, "the agent and its child")
    finally:
        kill_pids(pids)


async def test_what_an_agent_that_succeeded_left_running_is_killed_with_its_group(
    start: Start, tmp_path: Path
) -> None:
    pidfile = tmp_path / "orphan.pids"
    server = await start()
    job = await server.wait((await server.submit(f"fake:orphan {pidfile}"))["id"])
    assert job["state"] == "succeeded", job
    [grandchild] = read_pids(pidfile)
    try:
        wait_until(lambda: not pid_alive(grandchild), 5, "the agent's grandchild to be killed")
    finally:
        kill_pids([grandchild])


async def test_cancel_a_queued_job_and_a_running_one(
    start: Start, tmp_path: Path, agent_log: Path
) -> None:
    pidfile = tmp_path / "hang.pids"
    server = await start()
    running, queued, pids = await hang_then_queue(server, pidfile, "never runs")
    try:
        status, body = await server.call("DELETE", f"/prompts/{queued}")
        assert (status, body["state"]) == (200, "cancelled")
        assert (await server.job(running))["state"] == "running"

        status, body = await server.call("DELETE", f"/prompts/{running}")
        assert (status, body["state"]) == (200, "cancelled")
        assert not any(pid_alive(p) for p in pids)
    finally:
        kill_pids(pids)
    status, body = await server.call("DELETE", f"/prompts/{running}")
    assert status == 409
    assert "already ended" in body["error"]
    assert ran(agent_log) == [f"fake:hang {pidfile}"]
    _, snapshot = await server.call("GET", "/status")
    assert [j["state"] for j in snapshot["recent"]] == ["cancelled", "cancelled"]


async def test_stopping_the_server_kills_the_running_agent_and_saves_the_queue(
    start: Start, tmp_path: Path
) -> None:
    pidfile = tmp_path / "hang.pids"
    state = tmp_path / "state.json"
    server = await start(state_file=state)
    running, queued, pids = await hang_then_queue(server, pidfile, "later")
    try:
        await server.runner.cleanup()  # what SIGTERM does: cleanup_ctx cancels the worker
        await asyncio.to_thread(
            wait_until, lambda: not any(pid_alive(p) for p in pids), 5, "the agent to die"
        )
    finally:
        kill_pids(pids)
    saved = json.loads(state.read_text())
    assert saved["running"] is None
    assert [j["id"] for j in saved["queue"]] == [queued]
    interrupted = saved["recent"][0]
    assert (interrupted["id"], interrupted["state"], interrupted["error"]) == (
        running,
        "failed",
        "interrupted",
    )


# ------------------------------------------------------------------------------ health, version


async def test_health_follows_the_phase_file_and_the_app_port(start: Start, tmp_path: Path) -> None:
    phase_file = tmp_path / "phase.json"
    phase_file.write_text(json.dumps({"phase": "installing", "error": None}))
    server = await start(phase_file=phase_file)
    status, body = await server.call("GET", "/health")
    assert (status, body["ready"], body["phase"]) == (503, False, "installing")

    listener = await asyncio.start_server(
        lambda _r, w: w.close(), "127.0.0.1", server.config.app_port
    )
    async with listener:
        status, body = await server.call("GET", "/health")
        assert (status, body["ready"], body["phase"]) == (200, True, "ready")

        phase_file.write_text(json.dumps({"phase": "failed", "error": "npm ci exited with 1"}))
        status, body = await server.call("GET", "/health")
        assert (status, body["ready"], body["phase"]) == (503, False, "failed")
        assert body["error"] == "npm ci exited with 1"

    phase_file.write_text(json.dumps({"phase": "starting", "error": None}))
    status, body = await server.call("GET", "/health")
    assert (status, body["phase"]) == (503, "starting")
    assert "not answering" in body["error"]


async def test_version_reports_the_checkout(start: Start, repo: Path) -> None:
    server = await start()
    status, body = await server.call("GET", "/version")
    assert status == 200
    assert body == {
        "commit": git(repo, "rev-parse", "HEAD"),
        "short": git(repo, "rev-parse", "--short", "HEAD"),
        "branch": "main",
        "date": git(repo, "log", "-1", "--format=%cI"),
        "subject": "Start the app",
    }


async def test_version_before_the_clone_is_503(start: Start, tmp_path: Path) -> None:
    server = await start(work_dir=tmp_path / "not-cloned-yet")
    status, body = await server.call("GET", "/version")
    assert status == 503
    assert "no git checkout" in body["error"]


def test_config_is_read_from_the_environment(tmp_path: Path) -> None:
    config = Config.from_env(
        {
            "WORK_DIR": str(tmp_path),
            "PROMPT_PORT": "9090",
            "CLAUDE_CMD": "npx -y 'claude code' --model x",
            "PROMPT_TIMEOUT_S": "2.5",
            "PROMPT_STATE": str(tmp_path / "state.json"),
            "UAT_PROMPT_TOKEN": "secret-value",
        }
    )
    assert config.claude_cmd == ("npx", "-y", "claude code", "--model", "x")
    assert (config.port, config.app_port, config.timeout_s) == (9090, 3001, 2.5)
    assert "secret-value" not in repr(config)
    with pytest.raises(ConfigError, match=r"PROMPT_PORT.*APP_PORT.*PROMPT_TIMEOUT_S"):
        Config.from_env({"PROMPT_PORT": "x", "APP_PORT": "70000", "PROMPT_TIMEOUT_S": "-1"})


# ------------------------------------------------------------------------------ secrets

GIT_TOKEN_VALUE = "plain-git-token-value-42"  # this container's, in no credential shape
API_KEY_VALUE = "an-api-key-of-no-known-shape"
# One of each credential shape `scrub` knows (made up, in each issuer's format).
CREDENTIALS = {
    "github classic": "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8",
    "github app": "ghs_" + "Z9y8X7w6V5" * 3 + "u4T3s2",
    "github oauth": "gho_" + "0a" * 18,
    "github user": "ghu_" + "Q" * 36,
    "github refresh": "ghr_" + "r1" * 20,
    "github fine-grained": "github_pat_11ABCDEFG0" + "x" * 60,
    "slack bot": "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "slack user": "xoxp-1234567890-1234567890-1234567890123-0123456789abcdef",
    "slack app": "xapp-1-A0123456789-1234567890123-abcdef0123456789",
    "aws key id": "AKIAIOSFODNN7EXAMPLE",
    "aws temporary key id": "ASIAY34FZKBOKMUTVV7A",
    "anthropic": "sk-ant-api03-" + "k3Y_" * 20 + "AA",
}
NAMED = {  # the name stays, the value goes
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY": "wJalrXUtnFEMI",
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig": "eyJhbGci",
    "authorization:Basic dXNlcjpwYXNz": "dXNlcjpwYXNz",
}


@pytest.mark.parametrize("kind", sorted(CREDENTIALS))
def test_scrub_removes_each_credential_shape(kind: str) -> None:
    secret = CREDENTIALS[kind]
    text = f"it printed ({secret}) and went on"
    assert scrub(text) == f"it printed ({REDACTED}) and went on"


@pytest.mark.parametrize("line", sorted(NAMED))
def test_scrub_keeps_the_name_of_a_named_secret_and_removes_its_value(line: str) -> None:
    scrubbed = scrub(f"> {line}\nnext line")
    assert NAMED[line] not in scrubbed
    assert scrubbed.endswith(f"{REDACTED}\nnext line")
    assert scrubbed.split(":")[0].split("=")[0].strip("> ").lower() in line.lower()


def test_scrub_leaves_ordinary_text_and_removes_the_containers_own_secrets() -> None:
    ordinary = (
        "ghp_ tokens start with ghp_; AKIA is how key ids begin; sk-ant- keys; xoxb- tokens; "
        "the Authorization header; aws_secret_access_key is a setting; ASIAN food"
    )
    assert scrub(ordinary) == ordinary
    own = f"token {TOKEN} and {GIT_TOKEN_VALUE}."
    assert scrub(own, (TOKEN, GIT_TOKEN_VALUE)) == f"token {REDACTED} and {REDACTED}."
    assert scrub("short abc", ("abc",)) == "short abc"  # too short to be anyone's secret


def test_the_secrets_to_scrub_are_read_from_the_environment_and_token_files(
    tmp_path: Path,
) -> None:
    token_file, git_file = tmp_path / "prompt-token", tmp_path / "git-token"
    token_file.write_text(f"{TOKEN}\n")
    git_file.write_text(f"{GIT_TOKEN_VALUE}\n")
    config = Config.from_env(
        {
            "UAT_PROMPT_TOKEN_FILE": str(token_file),
            "GIT_TOKEN_FILE": str(git_file),
            "ANTHROPIC_API_KEY": API_KEY_VALUE,
        }
    )
    assert config.token == TOKEN
    assert set(config.hidden) == {TOKEN, GIT_TOKEN_VALUE, API_KEY_VALUE}
    assert TOKEN not in repr(config) and GIT_TOKEN_VALUE not in repr(config)
    with pytest.raises(ConfigError, match=r"UAT_PROMPT_TOKEN_FILE.*cannot be read"):
        Config.from_env({"UAT_PROMPT_TOKEN_FILE": str(tmp_path / "missing")})


async def test_status_jobs_and_outputs_show_no_secrets(start: Start, tmp_path: Path) -> None:
    secrets = [TOKEN, GIT_TOKEN_VALUE, API_KEY_VALUE, *CREDENTIALS.values()]
    prompt = "Echo these: " + " ".join(secrets) + " " + " | ".join(NAMED)
    server = await start(secrets=(GIT_TOKEN_VALUE, API_KEY_VALUE), output_dir=tmp_path / "outputs")
    job_id = (await server.submit(prompt))["id"]
    job = await server.wait(job_id)
    assert job["state"] == "succeeded"
    _, status = await server.call("GET", "/status")
    status_code, output_type, output = await server.output(job_id)
    assert (status_code, output_type) == (200, "text/plain; charset=utf-8")
    on_disk = (tmp_path / "outputs" / f"{job_id}.txt").read_text()
    shown = {
        "job": json.dumps(job),
        "status": json.dumps(status),
        "output": output,
        "output file": on_disk,
    }
    for where, text in shown.items():
        for secret in [*secrets, *NAMED.values()]:
            assert secret not in text, (where, secret)
        assert REDACTED in text, where
    assert "Echo these: " + REDACTED in job["summary"]
    assert job["output_tail"].count(REDACTED) == len(secrets) + len(NAMED) - 1  # one line
    # `Authorization: ...` takes the rest of its line, the `|`-joined names after it included


# ------------------------------------------------------------------------------ persistence


@dataclass
class ServerProcess:
    """`python container/prompt_server.py` as a real process; `start()` (re)starts it."""

    url: str
    env: dict[str, str]
    logs: Path
    procs: list[subprocess.Popen[bytes]]

    def start(self) -> subprocess.Popen[bytes]:
        with (self.logs / f"server{len(self.procs)}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(PROMPT_SERVER)], env=self.env, stdout=log, stderr=log
            )
        self.procs.append(proc)
        wait_until(lambda: answers(self.url + "/status"), 10, "the prompt server")
        return proc


@pytest.fixture
def server_process(repo: Path, tmp_path: Path, agent_log: Path) -> Iterator[ServerProcess]:
    port = free_port()
    env = {
        **os.environ,
        "PROMPT_HOST": "127.0.0.1",
        "PROMPT_PORT": str(port),
        "APP_PORT": str(free_port()),
        "WORK_DIR": str(repo),
        "UAT_PROMPT_TOKEN": TOKEN,
        "CLAUDE_CMD": fake_claude_cmd(agent_log),
        "PROMPT_TIMEOUT_S": "60",
        "PROMPT_STATE": str(tmp_path / "state" / "prompts.json"),
    }
    server = ServerProcess(f"http://127.0.0.1:{port}", env, tmp_path, [])
    yield server
    for proc in server.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def test_a_restart_keeps_queued_jobs_and_fails_the_interrupted_one(
    server_process: ServerProcess, tmp_path: Path, agent_log: Path
) -> None:
    pidfile = tmp_path / "hang.pids"
    url = server_process.url
    proc = server_process.start()
    status, first = http("POST", url + "/prompt", {"prompt": f"fake:hang {pidfile}"}, TOKEN)
    assert status == 202
    status, second = http("POST", url + "/prompt", {"prompt": "after the restart"}, TOKEN)
    assert (status, second["position"]) == (202, 1)
    wait_until(pidfile.exists, 10, "the hanging agent")
    assert http("GET", url + "/status", token=TOKEN)[1]["running"]["id"] == first["id"]

    proc.kill()  # SIGKILL: no chance to save anything more
    proc.wait(5)
    kill_pids(read_pids(pidfile))  # the orphaned agent, which a container restart would take along

    server_process.start()
    _, interrupted = http("GET", f"{url}/prompts/{first['id']}", token=TOKEN)
    assert (interrupted["state"], interrupted["error"]) == ("failed", "interrupted")
    assert interrupted["finished_at"]

    def finished() -> dict[str, Any] | None:
        job = http("GET", f"{url}/prompts/{second['id']}", token=TOKEN)[1]
        return job if job["state"] in FINAL_STATES else None

    done = wait_until(finished, 10, "the queued job")
    assert (done["state"], done["summary"]) == ("succeeded", "after the restart")
    assert ran(agent_log) == [f"fake:hang {pidfile}", "after the restart"]

    def saved_after_the_job() -> dict[str, Any] | None:  # the save lands just after the answer
        saved: dict[str, Any] = json.loads((tmp_path / "state" / "prompts.json").read_text())
        return saved if len(saved["recent"]) == 2 else None

    saved = wait_until(saved_after_the_job, 5, "the state file to record the finished job")
    assert [j["id"] for j in saved["recent"]] == [second["id"], first["id"]]
    assert saved["queue"] == []
    assert saved["running"] is None


# ------------------------------------------------------------------------------ full outputs

LONG = 1_000  # lines of `fake:long`: about 70,000 characters


async def test_the_full_output_is_kept_beyond_the_tail(start: Start) -> None:
    server = await start()
    prompt = f"fake:long {LONG}"
    job = await server.wait((await server.submit(prompt))["id"])
    expected = full_output(prompt, long_lines(LONG))
    assert len(expected) > 60_000
    assert len(expected.encode()) > len(expected)  # characters are counted, not bytes
    assert job["state"] == "succeeded", job
    assert (job["output_chars"], job["output_truncated"]) == (len(expected), False)
    assert len(job["output_tail"]) == OUTPUT_TAIL_CHARS
    assert job["output_tail"] == expected.rstrip("\n")[-OUTPUT_TAIL_CHARS:]

    status, content_type, text = await server.output(job["id"])
    assert (status, content_type) == (200, "text/plain; charset=utf-8")
    assert text == expected
    assert text.startswith("Working on it (fake:long).\n[tool: Bash]\nline 00000 of the long")
    last = f"line {LONG - 1:05d} of the long output: Grüße, naïve café, 😀 {'x' * 15}"
    assert text.endswith(f"\n{last}\nAll done.\n{prompt}\n")
    _, snapshot = await server.call("GET", "/status")
    assert snapshot["recent"][0]["output_chars"] == len(expected)

    # Without PROMPT_STATE the outputs live in a temporary folder, gone once the server stops.
    folder = server.runner.app[QUEUE_KEY].output_dir
    assert folder is not None
    assert (folder / f"{job['id']}.txt").read_text(encoding="utf-8") == expected
    await server.runner.cleanup()
    assert not folder.exists()


async def test_the_output_needs_the_token_and_a_job_that_ran(start: Start, tmp_path: Path) -> None:
    pidfile = tmp_path / "hang.pids"
    server = await start()
    running, queued, pids = await hang_then_queue(server, pidfile, "waits its turn")
    so_far = "Working on it (fake:hang).\n[tool: Bash]\nHanging now.\n"
    try:
        for token in (None, "wrong-token", TOKEN + "x"):
            status, _, text = await server.output(running, token=token)
            assert status == 401
            assert "token" in json.loads(text)["error"]

        async with asyncio.timeout(10):  # what the running agent said so far
            while (text := (await server.output(running))[2]) != so_far:
                assert so_far.startswith(text) or text.startswith("{"), text
                await asyncio.sleep(0.05)
        job = await server.job(running)
        assert (job["state"], job["output_chars"]) == ("running", len(so_far))

        status, _, text = await server.output(queued)
        assert status == 404
        assert "no output" in json.loads(text)["error"]
        status, _, text = await server.output("nope")
        assert status == 404
        assert "no job nope" in json.loads(text)["error"]

        assert (await server.call("DELETE", f"/prompts/{queued}"))[0] == 200
        assert (await server.call("DELETE", f"/prompts/{running}"))[0] == 200
    finally:
        kill_pids(pids)
    assert await server.output(running) == (200, "text/plain; charset=utf-8", so_far)
    assert (await server.output(queued))[0] == 404


async def test_the_output_is_cut_at_the_byte_limit(start: Start) -> None:
    limit = 8 * 1024
    server = await start(output_max_bytes=limit)
    prompt = f"fake:long {LONG}"
    job = await server.wait((await server.submit(prompt))["id"])
    expected = full_output(prompt, long_lines(LONG))
    assert job["state"] == "succeeded", job
    assert (job["output_chars"], job["output_truncated"]) == (len(expected), True)
    assert job["output_tail"] == expected.rstrip("\n")[-OUTPUT_TAIL_CHARS:]  # the tail goes on

    status, _, text = await server.output(job["id"])
    assert status == 200
    kept, marker = text.removesuffix("\n").rsplit("\n", 1)
    assert marker == "… output cut at 8 KiB"
    assert text.count("output cut at") == 1
    assert expected.startswith(kept)
    assert limit - 4 <= len(kept.encode()) <= limit  # a character that does not fit is dropped
    assert len(text.encode()) <= limit + len("\n… output cut at 8 KiB\n".encode())


async def test_the_output_of_a_job_dropped_from_recent_is_deleted(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prompt_server, "RECENT_LIMIT", 2)
    server = await start(state_file=tmp_path / "state.json")
    outputs = tmp_path / "state.json.outputs"  # the default: next to PROMPT_STATE
    ids: list[str] = []
    for n in range(3):
        job = await server.wait((await server.submit(f"job {n}"))["id"])
        ids.append(job["id"])
        assert (outputs / f"{job['id']}.txt").read_text().endswith(f"All done.\njob {n}\n")
    assert sorted(p.name for p in outputs.iterdir()) == sorted(f"{i}.txt" for i in ids[1:])
    assert (await server.output(ids[0]))[0] == 404
    assert (await server.output(ids[2]))[0] == 200
    _, snapshot = await server.call("GET", "/status")
    assert [j["id"] for j in snapshot["recent"]] == [ids[2], ids[1]]


def get_text(url: str, token: str | None = TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def test_outputs_survive_a_restart_and_forgotten_ones_are_deleted(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    url = server_process.url
    outputs = tmp_path / "state" / "prompts.json.outputs"
    pidfile = tmp_path / "hang.pids"
    proc = server_process.start()
    prompt = "fake:long 300"
    _, done = http("POST", url + "/prompt", {"prompt": prompt}, TOKEN)
    _, hung = http("POST", url + "/prompt", {"prompt": f"fake:hang {pidfile}"}, TOKEN)
    so_far = "Working on it (fake:hang).\n[tool: Bash]\nHanging now.\n"
    wait_until(lambda: get_text(f"{url}/prompts/{hung['id']}/output")[1] == so_far, 10, "output")
    (outputs / "0123456789ab.txt").write_text("a job nobody knows\n")
    (outputs / "notes.txt").write_text("not a job's output\n")

    proc.kill()  # SIGKILL: nothing saved since the hanging job started
    proc.wait(5)
    kill_pids(read_pids(pidfile))
    server_process.start()

    expected = full_output(prompt, long_lines(300))
    assert get_text(f"{url}/prompts/{done['id']}/output") == (200, expected)
    assert http("GET", f"{url}/prompts/{done['id']}", token=TOKEN)[1]["output_chars"] == len(
        expected
    )
    assert get_text(f"{url}/prompts/{hung['id']}/output") == (200, so_far)
    interrupted = http("GET", f"{url}/prompts/{hung['id']}", token=TOKEN)[1]
    assert (interrupted["state"], interrupted["error"]) == ("failed", "interrupted")
    assert interrupted["output_chars"] == len(so_far)  # counted from the file after the crash
    assert not (outputs / "0123456789ab.txt").exists()
    assert (outputs / "notes.txt").exists()
    assert get_text(f"{url}/prompts/{hung['id']}/output", token="wrong")[0] == 401


def test_output_settings_are_read_from_the_environment(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    config = Config.from_env({"WORK_DIR": str(tmp_path), "PROMPT_STATE": str(state)})
    assert config.output_max_bytes == MAX_OUTPUT_BYTES == 5 * 1024 * 1024
    assert config.outputs_folder == tmp_path / "state.json.outputs"
    assert Config.from_env({"WORK_DIR": str(tmp_path)}).outputs_folder is None
    config = Config.from_env(
        {
            "PROMPT_STATE": str(state),
            "PROMPT_OUTPUT_DIR": str(tmp_path / "out"),
            "PROMPT_OUTPUT_MAX_BYTES": "1024",
        }
    )
    assert (config.outputs_folder, config.output_max_bytes) == (tmp_path / "out", 1024)
    for bad in ("0", "-5", "5MiB"):
        with pytest.raises(ConfigError, match="PROMPT_OUTPUT_MAX_BYTES"):
            Config.from_env({"PROMPT_OUTPUT_MAX_BYTES": bad})
    sizes = [size_text(n) for n in (MAX_OUTPUT_BYTES, 8192, 1000)]
    assert sizes == ["5 MiB", "8 KiB", "1000 bytes"]


SAVED_JOB = {
    "id": "0123456789ab",
    "prompt": "p",
    "user": None,
    "thread": None,
    "created_at": "2026-01-01T00:00:00.000+00:00",
    "state": "queued",
}


@pytest.mark.parametrize(
    ("saved", "why"),
    [
        ([SAVED_JOB], "holds a list"),
        ({"queue": {"0123456789ab": SAVED_JOB}}, "queue is a dict"),
        ({"recent": "none"}, "recent is a str"),
        ({"queue": [{**SAVED_JOB, "id": 12}]}, "field id is a int"),
        ({"queue": [{**SAVED_JOB, "id": "../../etc/x"}]}, "is not 12 hex digits"),
        ({"recent": [{**SAVED_JOB, "state": "exploded"}]}, "unknown state 'exploded'"),
        ({"running": {**SAVED_JOB, "output_chars": True}}, "output_chars is a bool"),
        ({"queue": [{**SAVED_JOB, "files_changed": [1]}]}, "changed file"),
        ({"queue": [{"id": "0123456789ab"}]}, "lacks a field"),
        ({"queue": ["0123456789ab"]}, "a job is a str"),
    ],
)
async def test_a_state_file_of_the_wrong_shape_is_moved_aside_and_the_server_starts_empty(
    start: Start,
    tmp_path: Path,
    agent_log: Path,
    caplog: pytest.LogCaptureFixture,
    saved: Any,
    why: str,
) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps(saved))
    server = await start(state_file=state)
    _, snapshot = await server.call("GET", "/status")
    assert snapshot == {"running": None, "queue": [], "recent": []}
    [aside] = await asyncio.to_thread(lambda: list(tmp_path.glob("state.json.corrupt-*")))
    assert json.loads(aside.read_text()) == saved
    [line] = [r.getMessage() for r in caplog.records if "moved it to" in r.getMessage()]
    assert why in line
    assert str(aside) in line
    job = await server.wait((await server.submit("works again"))["id"])
    assert job["state"] == "succeeded"
    assert ran(agent_log) == ["works again"]


def test_a_saved_job_of_the_right_shape_loads() -> None:
    full = Job.from_dict(SAVED_JOB).to_dict()
    assert Job.from_saved(full) == Job.from_dict(SAVED_JOB)
    assert Job.from_saved({**full, "cost_usd": 1, "usage": {"x": 1}, "pushed": True}).pushed


def test_jobs_saved_before_full_outputs_existed_still_load() -> None:
    old = {"id": "0123456789ab", "prompt": "p", "user": None, "thread": None, "created_at": "t"}
    job = Job.from_dict({**old, "state": "succeeded", "output_tail": "done", "gone_field": 1})
    assert (job.state, job.output_tail, job.output_chars, job.output_truncated) == (
        "succeeded",
        "done",
        0,
        False,
    )


# ------------------------------------------------------------------------------ claim (pool mode)

POOL_TOKEN = "pool-token-0123456789abcdef"
PROMPT_TOKEN = "uatp_" + "Ab3-_" * 8 + "xyz"  # bot/prompt_tokens.py's shape: 43 after the prefix
SHA = "0123456789abcdef0123456789abcdef01234567"
CLAIM = {
    "repo": "https://github.com/acme/web.git",
    "git_ref": "refs/pull/7/head",
    "head_sha": SHA,
    "session_id": "pr7-0a1b2c3d",
    "prompt_token": PROMPT_TOKEN,
    "branch": "feature/blue-button",
    "pr_number": 7,
}


@pytest.fixture
async def pool_server(start: Start, tmp_path: Path) -> Server:
    """A prompt server in pool mode, as entrypoint.sh starts it: the pool token, where the claim
    and the prompt token go, and the phase "waiting"."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    phase_file = tmp_path / "phase.json"
    phase_file.write_text(json.dumps({"phase": "waiting", "error": None}))
    return await start(
        token=None,
        pool_token=POOL_TOKEN,
        claim_file=secrets / "claim",
        token_file=secrets / "prompt-token",
        phase_file=phase_file,
    )


async def test_a_pool_task_waits_for_a_claim_and_opens_nothing_before_it(
    pool_server: Server,
) -> None:
    status, body = await pool_server.call("GET", "/health", token=None)
    assert (status, body["ready"], body["phase"]) == (503, False, "waiting")
    assert "POST /claim" in body["error"]
    for token in (POOL_TOKEN, PROMPT_TOKEN, None):
        for method, path in (("GET", "/status"), ("GET", "/version"), ("POST", "/prompt")):
            status, body = await pool_server.call(method, path, {"prompt": "x"}, token=token)
            assert (path, status) == (path, 503), body
            assert "waits for a claim" in body["error"]


async def test_a_claim_needs_the_pool_token(pool_server: Server) -> None:
    for token in (None, "wrong-token", POOL_TOKEN[:-1], PROMPT_TOKEN):
        status, body = await pool_server.call("POST", "/claim", CLAIM, token=token)
        assert status == 401, body
        assert "pool token" in body["error"]
    status, _ = await pool_server.call(
        "POST", "/claim", CLAIM, token=None, headers={"Authorization": f"Basic {POOL_TOKEN}"}
    )
    assert status == 401
    assert pool_server.config.claim_file is not None and pool_server.config.token_file is not None
    assert not pool_server.config.claim_file.exists()
    assert not pool_server.config.token_file.exists()


async def test_a_claim_is_accepted_once_and_hands_the_task_to_the_environment(
    pool_server: Server,
) -> None:
    status, body = await pool_server.call("POST", "/claim", CLAIM, token=POOL_TOKEN)
    assert (status, body) == (200, {"claimed": True, "session_id": "pr7-0a1b2c3d"})
    claim_file, token_file = pool_server.config.claim_file, pool_server.config.token_file
    assert claim_file is not None and token_file is not None
    assert token_file.read_text() == f"{PROMPT_TOKEN}\n"
    assert claim_file.read_text().splitlines() == [
        "REPO=https://github.com/acme/web.git",
        "GIT_REF=refs/pull/7/head",
        f"HEAD_SHA={SHA}",
        "SESSION_ID=pr7-0a1b2c3d",
        "BRANCH=feature/blue-button",
        "PR_NUMBER=7",
    ]
    assert PROMPT_TOKEN not in claim_file.read_text()
    for path in (claim_file, token_file):
        assert path.stat().st_mode & 0o777 == 0o400
    assert [p.name for p in claim_file.parent.iterdir() if p.name.endswith(".tmp")] == []

    # A second claim, even a valid one for another environment, is refused and changes nothing.
    other = {**CLAIM, "session_id": "pr8-ffffffff", "prompt_token": "uatp_" + "z" * 43}
    status, body = await pool_server.call("POST", "/claim", other, token=POOL_TOKEN)
    assert status == 409, body
    assert "claimed already" in body["error"]
    assert token_file.read_text() == f"{PROMPT_TOKEN}\n"
    assert "pr7-0a1b2c3d" in claim_file.read_text()

    # The pool token opens nothing now; the environment's prompt token opens everything.
    for method, path in (("GET", "/status"), ("GET", "/version"), ("POST", "/prompt")):
        status, _ = await pool_server.call(method, path, {"prompt": "x"}, token=POOL_TOKEN)
        assert (path, status) == (path, 401)
    status, snapshot = await pool_server.call("GET", "/status", token=PROMPT_TOKEN)
    assert (status, snapshot) == (200, {"running": None, "queue": [], "recent": []})
    # Until the entrypoint writes its next phase, /health no longer says "waiting".
    status, body = await pool_server.call("GET", "/health", token=None)
    assert (status, body["phase"]) == (503, "cloning")


async def test_concurrent_claims_are_accepted_exactly_once(pool_server: Server) -> None:
    claims = [{**CLAIM, "session_id": f"pr7-{n:08x}"} for n in range(8)]
    answers = await asyncio.gather(
        *(pool_server.call("POST", "/claim", c, token=POOL_TOKEN) for c in claims)
    )
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] + [409] * 7
    [winner] = [body["session_id"] for status, body in answers if status == 200]
    assert pool_server.config.claim_file is not None
    assert f"SESSION_ID={winner}\n" in pool_server.config.claim_file.read_text()


HOSTILE_CLAIMS = [
    ({}, "repo, git_ref, head_sha, session_id, prompt_token missing"),
    ({"repo": None}, "repo missing"),
    ({"repo": "ext::sh -c touch% /tmp/pwned"}, "repo must be"),
    ({"repo": "--upload-pack=touch /tmp/pwned"}, "repo must be"),
    ({"repo": "https://user:ghp_secret@github.com/acme/web.git"}, "without credentials"),
    ({"repo": "https://github.com/acme/web.git\nGIT_REF=refs/heads/main"}, "repo must be"),
    ({"repo": "ssh://github.com/acme/web.git"}, "repo must be"),
    ({"git_ref": "main"}, "git_ref must be a full ref"),
    ({"git_ref": "refs/pull/7/../../heads/main"}, "git_ref must be"),
    ({"git_ref": "refs/heads/x.lock"}, "git_ref must be"),
    ({"git_ref": "refs/heads/.hidden"}, "git_ref must be"),
    ({"git_ref": "refs/heads//x"}, "git_ref must be"),
    ({"git_ref": "refs/pull/7/head "}, "git_ref must be"),
    ({"git_ref": "refs/heads/a;rm -rf ~"}, "git_ref must be"),
    ({"head_sha": SHA[:-1]}, "head_sha must be"),
    ({"head_sha": SHA.upper()}, "head_sha must be"),
    ({"head_sha": "HEAD"}, "head_sha must be"),
    ({"session_id": "PR7"}, "session_id must be a DNS label"),
    ({"session_id": "pr7.evil.example.com"}, "session_id must be"),
    ({"session_id": "-pr7"}, "session_id must be"),
    ({"session_id": "a" * 64}, "session_id must be"),
    ({"prompt_token": "not-a-token"}, "prompt_token must be"),
    ({"prompt_token": "uatp_short"}, "prompt_token must be"),
    ({"prompt_token": PROMPT_TOKEN + "\nGIT_REF=x"}, "prompt_token must be"),
    ({"branch": "feature\nREPO=file:///etc"}, "branch, when given"),
    ({"branch": 7}, "branch, when given"),
    ({"pr_number": "7"}, "pr_number, when given"),
    ({"pr_number": True}, "pr_number, when given"),
    ({"pr_number": -1}, "pr_number, when given"),
]


@pytest.mark.parametrize(("change", "reason"), HOSTILE_CLAIMS)
async def test_a_bad_claim_is_refused_with_the_field_that_is_wrong_and_writes_nothing(
    pool_server: Server, change: dict[str, Any], reason: str
) -> None:
    body = {} if change == {} else {**CLAIM, **change}
    status, answer = await pool_server.call("POST", "/claim", body, token=POOL_TOKEN)
    assert status == 400, answer
    assert reason in answer["error"]
    assert pool_server.config.claim_file is not None and pool_server.config.token_file is not None
    assert not pool_server.config.claim_file.exists()
    assert not pool_server.config.token_file.exists()
    # The task still waits, and a good claim still takes it.
    assert (await pool_server.call("POST", "/claim", CLAIM, token=POOL_TOKEN))[0] == 200


async def test_a_claim_that_is_not_json_is_refused(pool_server: Server) -> None:
    for raw, reason in ((b"{not json", "not valid JSON"), (b"[1]", "must be a JSON object")):
        status, body = await pool_server.call(
            "POST", "/claim", token=POOL_TOKEN, data=raw, headers={"Content-Type": "text/plain"}
        )
        assert status == 400
        assert reason in body["error"]


async def test_a_task_started_for_an_environment_cannot_be_claimed(start: Start) -> None:
    server = await start()  # a prompt token, no pool token
    status, body = await server.call("POST", "/claim", CLAIM, token=TOKEN)
    assert status == 409
    assert "not a warm-pool member" in body["error"]


def test_a_server_restarted_after_the_claim_starts_claimed(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    env = {
        "WORK_DIR": str(tmp_path),
        "UAT_POOL_TOKEN_FILE": str(secrets / "pool-token"),
        "UAT_CLAIM_FILE": str(secrets / "claim"),
        "UAT_PROMPT_TOKEN_FILE": str(secrets / "prompt-token"),
    }
    (secrets / "pool-token").write_text(f"{POOL_TOKEN}\n")
    waiting = Config.from_env(env)
    assert (waiting.claimable, waiting.token, waiting.pool_token) == (True, None, POOL_TOKEN)
    assert POOL_TOKEN not in repr(waiting)

    (secrets / "prompt-token").write_text(f"{PROMPT_TOKEN}\n")
    (secrets / "claim").write_text("REPO=x\n")
    (secrets / "pool-token").unlink()  # as entrypoint.sh does once it takes the claim
    claimed = Config.from_env(env)
    assert (claimed.claimable, claimed.token, claimed.pool_token) == (False, PROMPT_TOKEN, None)


def test_a_pool_token_without_where_the_claim_goes_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="UAT_CLAIM_FILE or UAT_PROMPT_TOKEN_FILE"):
        Config.from_env({"WORK_DIR": str(tmp_path), "UAT_POOL_TOKEN": POOL_TOKEN})
