"""`uat-bot staging|promote|rollback|images` as a person runs them: a subprocess, without a
terminal or, for the confirmation prompt, on a pseudo-terminal.

ECR commands talk to moto's server (the `aws_env` fixture); builds use the real docker engine
and the registry on 127.0.0.1 via UAT_REGISTRY. Errors must be one line on stderr, exit 1 (2 for
a usage error).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from bot import gateway_text
from bot.devtools import docs
from bot.images.operations import LOCK
from bot.slack import slack_ui
from bot.store import AuditEntry, SqliteStore
from tests.harness.bot import DEPLOYER
from tests.harness.gitrepo import SourceRepo, remove_built_images
from tests.harness.services import ensure_dockerd, ensure_registry, fetch_manifest, require

ROOT = Path(__file__).resolve().parents[1]
ECR_REPOSITORY = "test-tickets-uat"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
STAGING_SHA = "1111111"
LATEST_SHA = "2222222"


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.splitlines()

    @property
    def said(self) -> str:
        """stdout and stderr with line breaks folded, for wording checks."""
        return " ".join((self.stdout + "\n" + self.stderr).split())


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The machine's environment without anything uat-bot or AWS would read, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UAT_", "AWS_", "SLACK_", "GITHUB_"))
        and key not in ("COLUMNS", "LINES", "PYTHONPATH")
    }
    env.update(
        PYTHONPATH=str(ROOT),
        UAT_DB=str(tmp_path / "uat-bot.db"),
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.update(extra)
    return env


def uat_bot(tmp_path: Path, env: dict[str, str], *args: str) -> Run:
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(result.returncode, result.stdout, result.stderr)


def assert_exited(run: Run, code: int) -> None:
    """The command ended with `code` and no traceback anywhere in what it printed."""
    assert run.code == code, run
    assert "Traceback" not in run.stderr + run.stdout, run


def assert_one_line_error(run: Run, *phrases: str) -> None:
    assert_exited(run, 1)
    for phrase in phrases:
        assert phrase in run.said, run
    assert len(run.error_lines) == 1, run
    assert run.error_lines[0].startswith("error: "), run


# ------------------------------------------------------------------------------ ECR in moto


def manifest(sha: str) -> str:
    """A docker v2 image manifest (fake config and layer digests derived from `sha`)."""

    def digest(kind: str) -> str:
        return "sha256:" + hashlib.sha256(f"{kind}/{sha}".encode()).hexdigest()

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_V2,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 1469,
                "digest": digest("config"),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 3_370_706,
                    "digest": digest("layer"),
                }
            ],
        },
        indent=3,
    )


class Ecr:
    """The test's own boto3 client on moto: seeding and reading back."""

    def __init__(self, env: dict[str, str]) -> None:
        self.client: Any = boto3.client(
            "ecr",
            region_name=env["AWS_REGION"],
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def fresh(self) -> None:
        """An empty repository (moto's in-process backend outlives one server)."""
        with contextlib.suppress(self.client.exceptions.RepositoryNotFoundException):
            self.client.delete_repository(repositoryName=ECR_REPOSITORY, force=True)
        self.client.create_repository(repositoryName=ECR_REPOSITORY)

    def put(self, body: str, tag: str) -> str:
        digest = "sha256:" + hashlib.sha256(body.encode()).hexdigest()
        self.client.put_image(
            repositoryName=ECR_REPOSITORY,
            imageManifest=body,
            imageManifestMediaType=DOCKER_V2,
            imageTag=tag,
            imageDigest=digest,
        )
        return digest

    def digest_at(self, tag: str) -> str | None:
        try:
            response = self.client.describe_images(
                repositoryName=ECR_REPOSITORY, imageIds=[{"imageTag": tag}]
            )
        except self.client.exceptions.ImageNotFoundException:
            return None
        details = response["imageDetails"]
        return str(details[0]["imageDigest"]) if details else None


@pytest.fixture
def ecr(aws_env: dict[str, str]) -> Ecr:
    """moto's ECR with two images: `1111111` as :staging and `2222222` as :latest."""
    client = Ecr(aws_env)
    client.fresh()
    staging, latest = manifest(STAGING_SHA), manifest(LATEST_SHA)
    assert client.put(staging, STAGING_SHA) == client.put(staging, "staging")
    assert client.put(latest, LATEST_SHA) == client.put(latest, "latest")
    return client


@pytest.fixture
def cli_env(tmp_path: Path, aws_env: dict[str, str]) -> dict[str, str]:
    return base_env(tmp_path, **aws_env)


# ------------------------------------------------------------------------------ builds


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    remove_built_images(tmp_path, name)


@pytest.mark.docker
def test_staging_builds_and_pushes(tmp_path: Path, repository: str) -> None:
    require(ensure_dockerd)
    registry = require(ensure_registry)
    source = SourceRepo.create(tmp_path / "source", message="Terminal build")
    env = base_env(
        tmp_path,
        UAT_SOURCE_REPO=source.url,
        UAT_REGISTRY=registry,
        UAT_ECR_REPOSITORY=repository,
    )

    run = uat_bot(tmp_path, env, "staging", "--yes")

    assert_exited(run, 0)
    short = source.short()
    assert f":staging is now {short} — Terminal build" in run.said
    staging = fetch_manifest(registry, repository, "staging")[0]
    assert fetch_manifest(registry, repository, short)[0] == staging
    assert f"(digest {slack_ui.short(staging)}, by cli:" in run.said


def test_staging_without_a_docker_daemon_says_so(tmp_path: Path) -> None:
    source = SourceRepo.create(tmp_path / "source")
    env = base_env(
        tmp_path,
        UAT_SOURCE_REPO=source.url,
        UAT_REGISTRY="127.0.0.1:9",
        UAT_ECR_REPOSITORY=f"t-{uuid.uuid4().hex[:8]}",
        DOCKER_HOST="unix:///nonexistent.sock",
    )

    run = uat_bot(tmp_path, env, "staging", "--yes")

    assert_exited(run, 1)
    said = gateway_text.docker_unreachable("unix:///nonexistent.sock")
    assert run.stderr.startswith(f"error: {said}"), run
    assert "install Debian's docker.io and start dockerd, or set DOCKER_HOST" in run.said


# ------------------------------------------------------------------------------ ECR commands


def test_promote_needs_yes_without_a_terminal_then_copies_staging(
    tmp_path: Path, cli_env: dict[str, str], ecr: Ecr
) -> None:
    staging, latest = ecr.digest_at("staging"), ecr.digest_at("latest")
    assert staging and latest and staging != latest

    refused = uat_bot(tmp_path, cli_env, "promote")
    assert_one_line_error(refused, "--yes")
    assert ecr.digest_at("latest") == latest  # nothing moved

    run = uat_bot(tmp_path, cli_env, "promote", "--yes")
    assert_exited(run, 0)
    assert ecr.digest_at("latest") == staging
    assert f"{slack_ui.short(latest)} → {slack_ui.short(staging)}" in run.said
    assert f"undo: uat-bot rollback {LATEST_SHA}" in run.said

    again = uat_bot(tmp_path, cli_env, "promote", "--yes")
    assert_exited(again, 0)
    assert "nothing to promote" in again.said


def test_rollback_retags_and_images_shows_the_tags(
    tmp_path: Path, cli_env: dict[str, str], ecr: Ecr
) -> None:
    staging, latest = ecr.digest_at("staging"), ecr.digest_at("latest")

    run = uat_bot(tmp_path, cli_env, "rollback", STAGING_SHA, "--yes")
    assert_exited(run, 0)
    assert ecr.digest_at("latest") == staging
    assert f"rollback to {STAGING_SHA}" in run.said

    bad = uat_bot(tmp_path, cli_env, "rollback", "zzz")
    assert_exited(bad, 1)
    assert bad.said.startswith("error: zzz is not a sha.")
    assert ecr.digest_at("latest") == staging

    shown = uat_bot(tmp_path, cli_env, "images")
    assert shown.code == 0, shown
    assert shown.said.startswith(f":latest: {slack_ui.short(staging)} ({STAGING_SHA}), pushed")
    assert f":staging: {slack_ui.short(staging)} ({STAGING_SHA}), pushed" in shown.said
    assert f"{LATEST_SHA} {slack_ui.short(latest)}" in shown.said  # the recent sha images


def test_images_prints_readable_dates(tmp_path: Path, cli_env: dict[str, str], ecr: Ecr) -> None:
    shown = uat_bot(tmp_path, cli_env, "images")
    assert shown.code == 0, shown
    assert "<!date" not in shown.stdout and "{date_short_pretty}" not in shown.stdout, shown
    pushed = r"pushed \d{4}-\d\d-\d\d \d\d:\d\d UTC"
    assert re.search(rf":latest: \w{{12}} \({LATEST_SHA}\), {pushed}", shown.said), shown


def test_images_without_aws_configuration_is_one_line(tmp_path: Path) -> None:
    run = uat_bot(tmp_path, base_env(tmp_path), "images")
    assert_one_line_error(run, "set AWS_REGION")


@pytest.mark.parametrize("case", ["rollback zzz", "staging without docker"])
def test_long_errors_stay_on_one_line(tmp_path: Path, case: str) -> None:
    if case == "rollback zzz":
        env = base_env(tmp_path, AWS_REGION="us-east-1", AWS_ENDPOINT_URL="http://127.0.0.1:9")
        run = uat_bot(tmp_path, env, "rollback", "zzz")
        assert_one_line_error(run, "zzz is not a sha", "git rev-parse --short prints it.")
    else:
        source = SourceRepo.create(tmp_path / "source")
        env = base_env(
            tmp_path,
            UAT_SOURCE_REPO=source.url,
            UAT_REGISTRY="127.0.0.1:9",
            DOCKER_HOST="unix:///nonexistent.sock",
        )
        run = uat_bot(tmp_path, env, "staging", "--yes")
        assert_one_line_error(run, "No docker engine answers at unix:///nonexistent.sock")


# ----------------------------------------------------------------------- the terminal's words

SLACK_ONLY = ("channel", "button", "card", "/uat", "Slack")


@pytest.mark.parametrize("name", docs.CLI_TWINS)
def test_terminal_help_speaks_of_the_terminal(tmp_path: Path, name: str) -> None:
    shown = uat_bot(tmp_path, base_env(tmp_path, COLUMNS="200"), name, "--help")

    assert shown.code == 0, shown
    for phrase in SLACK_ONLY:
        assert phrase not in shown.stdout, f"{phrase!r} in `uat-bot {name} --help`:\n{shown.stdout}"
    assert ("--yes" in shown.stdout) == (name not in docs.ASKS_NOTHING), shown.stdout


def test_images_has_no_yes_option(tmp_path: Path) -> None:
    run = uat_bot(tmp_path, base_env(tmp_path), "images", "--yes")

    assert_exited(run, 2)
    assert "No such option: --yes" in run.said


def test_rollback_without_a_sha_lists_the_choices_and_says_how_to_pick(
    tmp_path: Path, cli_env: dict[str, str], ecr: Ecr
) -> None:
    staging, latest = ecr.digest_at("staging"), ecr.digest_at("latest")

    run = uat_bot(tmp_path, cli_env, "rollback")

    assert_exited(run, 2)
    pushed = r"pushed \d{4}-\d\d-\d\d \d\d:\d\d UTC"
    head, *rows = run.stdout.splitlines()
    assert head == "Recent sha images, newest first:", run
    [live] = [row for row in rows if row.startswith(LATEST_SHA)]
    [other] = [row for row in rows if row.startswith(STAGING_SHA)]
    assert len(rows) == 2, run
    assert re.fullmatch(
        rf"{LATEST_SHA} {slack_ui.short(latest)} {pushed} ← live now \(:latest\)", live
    )
    assert re.fullmatch(rf"{STAGING_SHA} {slack_ui.short(staging)} {pushed}", other), run
    assert run.error_lines == [f"error: {slack_ui.plain(slack_ui.NAME_THE_SHA).replace('`', '')}"]
    assert "uat-bot rollback <sha>" in run.stderr
    assert ecr.digest_at("latest") == latest


# ------------------------------------------------------------------------------ a lock refuses


async def _freeze(db: Path) -> None:
    store = SqliteStore(str(db))
    await store.open()
    try:
        await store.acquire_lock(LOCK, f"freeze:{DEPLOYER}", "release freeze", 600)
    finally:
        await store.close()


async def _audit(db: Path) -> list[AuditEntry]:
    store = SqliteStore(str(db))
    await store.open()
    try:
        return await store.recent_audit(20)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "args", [["promote"], ["rollback", STAGING_SHA], ["rollback"], ["latest"], ["staging"]]
)
def test_a_locked_operation_is_refused_in_one_line_before_anything_else(
    tmp_path: Path, cli_env: dict[str, str], ecr: Ecr, args: list[str]
) -> None:
    latest = ecr.digest_at("latest")
    db = Path(cli_env["UAT_DB"])
    asyncio.run(_freeze(db))

    run = uat_bot(tmp_path, cli_env, *args)  # no --yes, no terminal: the lock speaks first

    assert_one_line_error(run, "locked by @" + DEPLOYER, "release freeze")
    assert run.stdout == "", run  # no plan, no list, no prompt before the refusal
    assert ecr.digest_at("latest") == latest
    [entry] = asyncio.run(_audit(db))
    assert (entry.actor, entry.result) == (f"cli:{getpass.getuser()}", "refused")
    assert entry.detail == f"locked by <@{DEPLOYER}>: release freeze"


# ------------------------------------------------------------------------------ the prompt


def read_until(fd: int, wanted: str, timeout: float = 60.0) -> str:
    """What the pseudo-terminal shows until `wanted` appears (or EOF, or the timeout)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other end is closed
            break
        if not chunk:
            break
        seen += chunk.decode(errors="replace")
    return seen


@pytest.mark.parametrize(
    ("stdout", "answer"), [("terminal", "y"), ("piped", "y"), ("terminal", "n")]
)
def test_the_confirmation_prompt_is_shown_before_the_answer_is_read(
    tmp_path: Path, cli_env: dict[str, str], ecr: Ecr, stdout: str, answer: str
) -> None:
    staging, latest = ecr.digest_at("staging"), ecr.digest_at("latest")
    question = "Promote :staging to :latest? [y/N] "
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "promote"],
        cwd=tmp_path,
        env={**cli_env, "TERM": "dumb"},
        stdin=terminal,
        stdout=terminal if stdout == "terminal" else subprocess.PIPE,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    try:
        before_answer = read_until(controller, question)
        assert question in before_answer, before_answer  # shown while the bot waits for us
        assert ecr.digest_at("latest") == latest
        os.write(controller, f"{answer}\n".encode())
        after_answer = read_until(controller, "\x00", timeout=60)  # to the end of the output
        piped = process.stdout.read().decode() if process.stdout else ""
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)

    said = " ".join((before_answer + after_answer + piped).split())
    if answer == "y":
        assert code == 0, said
        assert ecr.digest_at("latest") == staging
        assert f"{slack_ui.short(latest)} → {slack_ui.short(staging)}" in said
    else:
        assert code == 1, said
        assert f"error: {slack_ui.CANCELLED}" in said
        assert ecr.digest_at("latest") == latest
    if stdout == "piped":
        assert question not in piped  # the prompt goes where the person is, not into the pipe
