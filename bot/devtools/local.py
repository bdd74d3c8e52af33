"""The console's embedded world: moto's AWS on 127.0.0.1, seeded as a UAT account, stand-ins for
the PR containers, and builds that work, so `uat-bot console` needs no AWS account or Slack.

`uat-bot console` always starts it (only `--aws` acts on real AWS), whatever AWS settings the
shell has: before anything makes a boto3 client, `isolate_boto3` replaces every AWS_* variable
of this process with moto's fake credentials, no config or credentials file, and (once moto
listens) moto's endpoint, so no profile, key or endpoint of the shell's is ever read or used.

* AWS: `ThreadedMotoServer` on 127.0.0.1 (moto is the optional extra `uat-bot[local]`), seeded
  with an ECR repository (`:latest`, `:staging` and sha images, docker v2 manifests whose digest
  is the sha256 of their bytes), an ECS cluster, a base task definition (awsvpc, FARGATE,
  container `app`) and a VPC with a subnet and security group. moto's tasks start RUNNING and
  stay so until stopped (its clock-driven progression would run them into STOPPING); the
  stand-in container is what takes a couple of seconds to become ready.
* Builds (`/uat staging`, `/uat latest`): from UAT_SOURCE_REPO, or else a sample app made in the
  world's state directory (a git repo whose Dockerfile is `FROM scratch` plus one COPY'd file:
  nothing is pulled). They need a docker engine; they push to UAT_REGISTRY if it answers, or to
  a registry started on 127.0.0.1 (Debian's docker-registry), and `MirroredDocker` then puts the
  pushed manifest into moto's ECR under the same tags: ECR stays the one truth about tags, and
  `/uat images`, `/uat history` and a launch all see the image just built. What is missing for
  builds is said at start and in the answer to a build.

The stand-in (`StandInContainers`) answers on 127.0.0.1 for every PR's task, at
`/pr/{pr}/{task_id}`: /health (cloning, installing, then ready ~2 s after its first probe),
/version, /status, and a fake agent behind POST /prompt (bearer token), GET and DELETE
/prompts/{id} that "succeeds" a second after a prompt starts, echoing it. Every URL the bot is
given is on the loopback: the 10.x addresses moto invents for tasks are never contacted.

Nothing here runs at import: moto is imported when the world starts, clients are made per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from aiohttp import web
from pydantic import SecretStr

from bot.aws.gateways import Ecr, Manifest
from bot.config import Settings
from bot.errors import UserError
from bot.images import registry
from bot.images.docker_build import REF, Docker, LogSink
from bot.slack import slack_ui

logger = logging.getLogger(__name__)

REGION = "us-east-1"
CLUSTER = "uat-console"
BASE_FAMILY = "uat-console-base"
CONTAINER = "app"
CHANNEL = "C0CONSOLE"
NOT_STARTED = "the local world is not started: call start() first"
POLL_SECONDS = 1.0
FAKE_KEY = "testing"
FAKE_SECRET = "testing"

# Seeded commits, oldest first; each is an image tagged with its first 7 characters.
SEED_COMMITS = tuple(hashlib.sha1(f"uat-console-{n}".encode()).hexdigest() for n in range(1, 6))
LATEST_COMMIT = SEED_COMMITS[3]
STAGING_COMMIT = SEED_COMMITS[4]
PUSH_INTERVAL_S = 3600

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

PHASES = ((1.0, "cloning"), (2.0, "installing"))  # (until seconds after first probe, phase)
# where the stand-ins' output goes, as the base task definition's awslogs options say
LOG_GROUP = "/ecs/uat"
LOG_PREFIX = "uat"
# what a stand-in container prints as it reaches each phase (its entrypoint's words)
PHASE_LINES = {
    "cloning": ("uat-entrypoint: fetching refs/pull/{pr}/head",),
    "installing": (
        "uat-entrypoint: checked out pr-{pr}",
        "uat-entrypoint: installing dependencies",
    ),
    "ready": (
        "uat-entrypoint: starting the app on port 3001",
        "app: listening on http://0.0.0.0:3001",
        "uat-entrypoint: the app answers: ready",
    ),
}
AGENT_SECONDS = 1.0


# ---------------------------------------------------------------------- the process's AWS


def isolate_boto3(endpoint: str | None = None, region: str = REGION) -> None:
    """Let boto3 in this process see moto's fake credentials and nothing of the shell's AWS.

    Every AWS_* variable goes (profiles, keys, endpoints, config and credentials files); then
    fake keys, no config or credentials file, no instance metadata, the region and, when given,
    `endpoint` for every service. The bot's clients take credentials the way boto3 does, from
    the environment: the embedded world is the only writer of os.environ, and this the only place.
    """
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID=FAKE_KEY,
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_REGION=region,
        AWS_DEFAULT_REGION=region,
    )
    if endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint


def user_state_dir() -> Path:
    """`$XDG_STATE_HOME/uat-bot`, by default ~/.local/state/uat-bot (a path, not a setting)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "uat-bot"


# ---------------------------------------------------------------------- ECR images


def fake_digest(*parts: str) -> str:
    return "sha256:" + hashlib.sha256("/".join(parts).encode()).hexdigest()


def manifest_for(commit: str) -> str:
    """The docker v2 manifest of the image built from `commit` (a config and one layer)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_V2,
        "config": {"mediaType": CONFIG_V1, "size": 1469, "digest": fake_digest("config", commit)},
        "layers": [
            {"mediaType": LAYER_GZIP, "size": 3_370_706, "digest": fake_digest("layer", commit)}
        ],
    }
    return json.dumps(manifest, indent=3)


def digest_of(manifest: str) -> str:
    """The digest a registry gives `manifest`: the sha256 of its bytes."""
    return "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


def put_image(ecr: Any, repository: str, commit: str, tag: str) -> str:
    manifest = manifest_for(commit)
    digest = digest_of(manifest)
    ecr.put_image(
        repositoryName=repository,
        imageManifest=manifest,
        imageManifestMediaType=DOCKER_V2,
        imageTag=tag,
        imageDigest=digest,  # without it moto derives the digest from the layers alone
    )
    return digest


# ---------------------------------------------------------------------- the embedded account


@dataclass(frozen=True)
class SeededAccount:
    """What the embedded AWS holds, as the bot's settings name it."""

    endpoint: str
    region: str
    repository: str
    subnet: str
    security_group: str
    digests: dict[str, str]  # tag -> digest


class EmbeddedAws:
    """moto's server in this process, on 127.0.0.1 and a free port."""

    def __init__(self, region: str = REGION) -> None:
        self.region = region
        self.endpoint = ""
        self._server: Any = None

    def start(self) -> str:
        """Start the server (blocking: call it in a thread); returns its URL."""
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise RuntimeError(
                "the embedded AWS needs moto: pip install 'uat-bot[local]' "
                "(or configure AWS: set AWS_ENDPOINT_URL or AWS credentials)"
            ) from None
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        isolate_boto3(region=self.region)  # before any client: nothing of the shell's is read
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        isolate_boto3(self.endpoint, self.region)
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _client(self, service: str) -> Any:
        session = boto3.session.Session(
            aws_access_key_id=FAKE_KEY, aws_secret_access_key=FAKE_SECRET, region_name=self.region
        )
        return session.client(service, endpoint_url=self.endpoint)  # type: ignore[call-overload]

    def task_token(self, task_id: str) -> str | None:
        """The prompt token the bot gave the task `task_id` (its UAT_PROMPT_TOKEN override), as
        the real container reads it from its environment; None for an unknown task."""
        described = self._client("ecs").describe_tasks(cluster=CLUSTER, tasks=[task_id])
        for task in described.get("tasks") or []:
            for override in (task.get("overrides") or {}).get("containerOverrides") or []:
                for variable in override.get("environment") or []:
                    if variable.get("name") == "UAT_PROMPT_TOKEN":
                        return str(variable.get("value") or "") or None
        return None

    def write_log(self, task_id: str, lines: Sequence[str]) -> None:
        """Put a stand-in container's output into its awslogs stream, as ECS's log driver
        would (`prefix/container/task-id`, created on the first line)."""
        logs = self._client("logs")
        stream = f"{LOG_PREFIX}/{CONTAINER}/{task_id}"
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        now = int(time.time() * 1000)
        events = [{"timestamp": now, "message": line} for line in lines]
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)

    def seed(self, repository: str) -> SeededAccount:
        """A UAT account: VPC, subnet, security group, cluster, base task definition, images."""
        _hold_tasks()
        ec2, ecs, ecr = self._client("ec2"), self._client("ecs"), self._client("ecr")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(
            GroupName="uat-console", Description="uat-bot console", VpcId=vpc
        )["GroupId"]
        ecs.create_cluster(clusterName=CLUSTER)
        register_base_definition(ecs, BASE_FAMILY)
        self._client("logs").create_log_group(logGroupName=LOG_GROUP)
        with contextlib.suppress(ecr.exceptions.RepositoryNotFoundException):
            ecr.delete_repository(repositoryName=repository, force=True)
        ecr.create_repository(repositoryName=repository)
        digests = {c[:7]: put_image(ecr, repository, c, c[:7]) for c in SEED_COMMITS}
        space_out_pushes(ecr, repository, [digests[c[:7]] for c in SEED_COMMITS])
        digests["staging"] = put_image(ecr, repository, STAGING_COMMIT, "staging")
        digests["latest"] = put_image(ecr, repository, LATEST_COMMIT, "latest")
        return SeededAccount(self.endpoint, self.region, repository, subnet, group, digests)


def register_base_definition(
    ecs: Any, family: str, container: dict[str, Any] | None = None, **definition: Any
) -> None:
    """An operators' base task definition as the embedded world and the tests use it: Fargate,
    1 vCPU, 2 GB, container `app` on a placeholder image logging to CloudWatch Logs as
    docs/uat-task-definition.json does (more `container` settings and `definition` fields where
    wanted)."""
    logging_to = {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": LOG_GROUP,
            "awslogs-region": ecs.meta.region_name,
            "awslogs-stream-prefix": LOG_PREFIX,
        },
    }
    ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="1024",
        memory="2048",
        containerDefinitions=[
            {
                "name": CONTAINER,
                "image": "placeholder:latest",
                "memory": 2048,
                "essential": True,
                "logConfiguration": logging_to,
                **(container or {}),
            }
        ],
        **definition,
    )


def space_out_pushes(ecr: Any, repository: str, digests: Sequence[str]) -> None:
    """Give images pushed together times an hour apart, oldest first: moto stamps pushes with
    whole seconds, so they would tie. Only when moto runs in this process (its backend is
    adjusted directly); otherwise the pushes keep moto's times."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ecr.models import ecr_backends

    repo = ecr_backends[DEFAULT_ACCOUNT_ID][ecr.meta.region_name].repositories.get(repository)
    if repo is None:  # moto in another process
        return
    now = int(time.time())
    by_digest = {image.get_image_digest(): image for image in repo.images}
    for age, digest in enumerate(reversed(digests), start=1):
        if digest in by_digest:
            by_digest[digest].image_pushed_at = now - age * PUSH_INTERVAL_S


def _hold_tasks() -> None:
    """Tasks keep the state ECS gives them (moto's default runs a described task into STOPPING)."""
    from moto.moto_api import state_manager

    state_manager.set_transition(
        model_name="ecs::task", transition={"progression": "manual", "times": 10**9}
    )


# ---------------------------------------------------------------------- stand-in containers


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class FakeJob:
    """One prompt in a stand-in container, shaped like the real prompt server's jobs."""

    id: str
    prompt: str
    user: str | None
    thread: str | None
    created: float
    created_at: str = field(default_factory=_now_iso)
    state: str = "queued"
    started: float | None = None
    finished: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    summary: str | None = None
    error: str | None = None

    def view(self, position: int | None) -> dict[str, Any]:
        duration = None
        if self.started is not None and self.finished is not None:
            duration = round(self.finished - self.started, 1)
        return {
            "id": self.id,
            "prompt": self.prompt,
            "user": self.user,
            "thread": self.thread,
            "created_at": self.created_at,
            "state": self.state,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "summary": self.summary,
            "output_tail": "",
            "cost_usd": None,
            "duration_s": duration,
            "usage": None,
            "commit": None,
            "pushed": None,
            "files_changed": [],
            "exit_code": 0 if self.state == "succeeded" else None,
            "error": self.error,
            "position": position,
        }


class FakeContainer:
    """One task's container: ready a couple of seconds after its first probe; a FIFO fake agent.

    The agent's work is worked out from the clock whenever someone asks, so nothing runs in the
    background: a job starts when the one before it ends and takes AGENT_SECONDS.
    """

    def __init__(self, pr: int, clock: Callable[[], float]) -> None:
        self.pr = pr
        self.clock = clock
        self.born = clock()
        self.jobs: dict[str, FakeJob] = {}
        self.order: list[FakeJob] = []
        self.output: list[str] = []  # printed, not yet in its log stream
        self.printed: set[str] = set()  # the phases and job states it has printed
        self.crashed: str | None = None  # why its app died (the console's `crash`)

    def emit(self, key: str, lines: Sequence[str]) -> None:
        """Print `lines` once per `key`, as the real container's output would go."""
        if key not in self.printed:
            self.printed.add(key)
            self.output += [line.format(pr=self.pr) for line in lines]

    def crash(self, error: str, lines: Sequence[str]) -> None:
        """Its app dies: /health says failed with `error`, its output ends with `lines`."""
        self.crashed = error
        self.emit("crash", lines)

    def health(self) -> tuple[int, dict[str, Any]]:
        if self.crashed is not None:
            return 503, {"ready": False, "phase": "failed", "error": self.crashed}
        age = self.clock() - self.born
        for until, phase in PHASES:
            if age < until:
                self.emit(phase, PHASE_LINES.get(phase, ()))
                return 503, {"ready": False, "phase": phase, "error": None}
        for _, passed in PHASES:
            self.emit(passed, PHASE_LINES.get(passed, ()))
        self.emit("ready", PHASE_LINES["ready"])
        return 200, {"ready": True, "phase": "ready", "error": None}

    def version(self) -> dict[str, Any]:
        commit = hashlib.sha1(f"pr-{self.pr}".encode()).hexdigest()
        return {
            "commit": commit,
            "short": commit[:7],
            "branch": f"pr-{self.pr}",
            "date": _now_iso()[:10],
            "subject": f"The head of PR {self.pr} (stand-in container)",
        }

    def advance(self) -> None:
        now = self.clock()
        free_at = 0.0
        for job in self.order:
            if job.finished is not None:
                if job.started is not None:
                    free_at = max(free_at, job.finished)
                continue
            start = max(job.created, free_at)
            if now < start:
                return  # it and everything after it wait
            if job.started is None:
                job.started, job.started_at, job.state = start, _now_iso(), "running"
                self.emit(f"{job.id}:running", [f"prompt-server: job {job.id} running"])
            end = job.started + AGENT_SECONDS
            if now < end:
                return
            job.finished, job.finished_at, job.state = end, _now_iso(), "succeeded"
            job.summary = f"Done: {job.prompt} (a stand-in agent: nothing was changed)"
            self.emit(f"{job.id}:done", [f"prompt-server: job {job.id} succeeded"])
            free_at = end

    def position(self, job: FakeJob) -> int | None:
        if job.state != "queued":
            return None
        ahead = 0
        for other in self.order:
            if other is job:
                return ahead
            if other.state in ("queued", "running"):
                ahead += 1
        return ahead

    def submit(self, prompt: str, user: str | None, thread: str | None) -> FakeJob:
        self.advance()
        job = FakeJob(secrets.token_hex(6), prompt, user, thread, created=self.clock())
        self.jobs[job.id] = job
        self.order.append(job)
        return job

    def cancel(self, job: FakeJob) -> None:
        job.state, job.error = "cancelled", "cancelled by the bot"
        job.finished, job.finished_at = self.clock(), _now_iso()

    def status(self) -> dict[str, Any]:
        self.advance()
        running = next((j for j in self.order if j.state == "running"), None)
        queue = [j for j in self.order if j.state == "queued"]
        recent = [j for j in reversed(self.order) if j.finished is not None]
        return {
            "running": running.view(None) if running else None,
            "queue": [j.view(self.position(j)) for j in queue],
            "recent": [j.view(None) for j in recent[:50]],
        }


# what a crashed stand-in prints (the console's `crash <pr>`)
CRASH_LINES = (
    "app: GET /checkout 500",
    "app: TypeError: Cannot read properties of undefined (reading 'total')",
    "app:     at Cart.summary (/app/src/cart.js:42:17)",
    "uat-entrypoint: the app exited with code 1",
)


class StandInContainers:
    """Every PR task's container, on 127.0.0.1: what UAT_CONTAINER_URL and UAT_APP_URL reach."""

    def __init__(self, token: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.token = token
        self.clock = clock
        self.containers: dict[tuple[int, str], FakeContainer] = {}
        self.base = ""
        self._runner: web.AppRunner | None = None
        # a task's id -> the prompt token the bot gave it (see EmbeddedAws.task_token)
        self.token_of: Callable[[str], str | None] | None = None
        self._tokens: dict[str, str] = {}
        # where a task's output goes (EmbeddedAws.write_log): its id, its new lines
        self.log_to: Callable[[str, Sequence[str]], None] | None = None

    @property
    def container_url(self) -> str:
        return f"{self.base}/pr/{{pr}}/{{task_id}}"

    @property
    def app_url(self) -> str:
        return f"{self.base}/app/{{pr}}"

    def _container(self, request: web.Request) -> FakeContainer:
        try:
            pr = int(request.match_info["pr"])
        except ValueError:
            raise web.HTTPNotFound() from None
        key = (pr, request.match_info["task"])
        if key not in self.containers:
            self.containers[key] = FakeContainer(pr, self.clock)
        return self.containers[key]

    async def _refuse(self, request: web.Request) -> web.Response | None:
        """Each container takes only its own task's token (what the bot gave that task)."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        task = request.match_info["task"]
        token = self._tokens.get(task)
        if token is None and self.token_of is not None:
            token = await asyncio.to_thread(self.token_of, task)
            if token:
                self._tokens[task] = token
        if token and scheme.lower() == "bearer" and secrets.compare_digest(given.strip(), token):
            return None
        return web.json_response({"error": "missing or wrong bearer token"}, status=401)

    async def flush(self) -> None:
        """Send what the containers printed to their log streams."""
        for (_, task), container in list(self.containers.items()):
            lines, container.output = container.output, []
            if lines and self.log_to is not None:
                await asyncio.to_thread(self.log_to, task, lines)

    def crash(self, pr: int) -> bool:
        """The console's `crash <pr>`: the PR's app dies with a stack trace (False: it has no
        container yet)."""
        found = [c for (number, _), c in self.containers.items() if number == pr]
        for container in found:
            container.crash("the app exited with code 1", CRASH_LINES)
        return bool(found)

    @web.middleware
    async def _flushing(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        await self.flush()
        return response

    async def _health(self, request: web.Request) -> web.Response:
        status, body = self._container(request).health()
        return web.json_response(body, status=status)

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(self._container(request).version())

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self._container(request).status())

    async def _submit(self, request: web.Request) -> web.Response:
        if (refused := await self._refuse(request)) is not None:
            return refused
        container = self._container(request)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            return web.json_response({"error": "prompt is missing"}, status=400)
        job = container.submit(prompt, body.get("user"), body.get("thread"))
        container.advance()
        answer = {"id": job.id, "position": container.position(job), "state": job.state}
        return web.json_response(answer, status=202)

    def _job(self, request: web.Request) -> tuple[FakeContainer, FakeJob]:
        container = self._container(request)
        container.advance()
        job = container.jobs.get(request.match_info["id"])
        if job is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"no job {request.match_info['id']}"}),
                content_type="application/json",
            )
        return container, job

    async def _get_job(self, request: web.Request) -> web.Response:
        container, job = self._job(request)
        return web.json_response(job.view(container.position(job)))

    async def _cancel_job(self, request: web.Request) -> web.Response:
        if (refused := await self._refuse(request)) is not None:
            return refused
        container, job = self._job(request)
        if job.state not in ("queued", "running"):
            return web.json_response({"error": f"job {job.id} already ended"}, status=409)
        container.cancel(job)
        return web.json_response(job.view(None))

    async def _app(self, request: web.Request) -> web.Response:
        pr = request.match_info["pr"]
        page = f"<!doctype html><title>PR {pr}</title><h1>PR {pr}: the UAT app (stand-in)</h1>\n"
        return web.Response(text=page, content_type="text/html")

    async def start(self) -> None:
        app = web.Application(middlewares=[self._flushing])
        prefix = "/pr/{pr}/{task}"
        app.router.add_get(prefix + "/health", self._health)
        app.router.add_get(prefix + "/version", self._version)
        app.router.add_get(prefix + "/status", self._status)
        app.router.add_post(prefix + "/prompt", self._submit)
        app.router.add_get(prefix + "/prompts/{id}", self._get_job)
        app.router.add_delete(prefix + "/prompts/{id}", self._cancel_job)
        app.router.add_get("/app/{pr}", self._app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# ---------------------------------------------------------------------- builds

SAMPLE_FILE = "hello.txt"
SAMPLE_DOCKERFILE = f"FROM scratch\nCOPY {SAMPLE_FILE} /{SAMPLE_FILE}\n"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "uat-bot console",
    "GIT_AUTHOR_EMAIL": "console@uat-bot.invalid",
    "GIT_COMMITTER_NAME": "uat-bot console",
    "GIT_COMMITTER_EMAIL": "console@uat-bot.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def sample_source(directory: Path, build_path: str, branch: str) -> Path:
    """A git repo holding a sample UAT app at `branch`: `<build_path>/Dockerfile`, FROM scratch
    with one COPY'd file, so a build needs no base image from anywhere."""
    branch = branch if REF.match(branch) and ".." not in branch else "main"
    folder = directory / build_path
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(SAMPLE_DOCKERFILE)
    (folder / SAMPLE_FILE).write_text("hello from the uat-bot console's sample app\n")
    env = {**os.environ, **_GIT_ENV}
    for args in (
        ["init", "-q", "-b", branch],
        ["add", "-A"],
        ["commit", "-q", "-m", "The console's sample UAT app"],
    ):
        subprocess.run(["git", *args], cwd=directory, env=env, check=True, capture_output=True)
    return directory


class MirroredDocker(Docker):
    """Docker whose pushes (to the console's registry) also land in the embedded ECR: the pushed
    manifest is put into it under the same tags, with the registry's digest (PutImage)."""

    puts_into_ecr = True

    def __init__(self, registry_address: str | None, unavailable: str | None, ecr: Ecr) -> None:
        super().__init__()
        self.registry = registry_address
        self.unavailable = unavailable
        self.ecr = ecr

    async def ready(self) -> None:
        await super().ready()
        if self.unavailable:
            raise UserError(slack_ui.console_no_builds(self.unavailable))

    async def _pushed(
        self, repository: str, digest: str, pushed: list[str], log: LogSink
    ) -> tuple[str, list[str]]:
        name = repository.removeprefix(f"{self.registry}/")
        digest, media_type, body = await asyncio.to_thread(
            registry.fetch_manifest, str(self.registry), name, digest
        )
        manifest = Manifest(digest=digest, media_type=media_type, body=body.decode())
        for tag in pushed:
            await self.ecr.put_tag(manifest, tag)
        log(f"put into the embedded ECR as {', '.join(':' + t for t in pushed)}")
        return digest, pushed


# ---------------------------------------------------------------------- together


class LocalWorld:
    """The embedded AWS account, the stand-in containers, builds, and a throw-away state directory.

    The state (SQLite, the sample source, the registry's storage) lives and dies with the world:
    moto starts empty every time, so environments remembered from an earlier session would name
    tasks that no longer exist.
    """

    def __init__(self, base: Settings) -> None:
        self.base = base
        self.repository = base.uat_ecr_repository
        self.aws = EmbeddedAws(base.aws_region or REGION)
        self.containers = StandInContainers(secrets.token_urlsafe(24))
        self.account: SeededAccount | None = None
        self.docker_at = Docker().where
        self.registry: str | None = None
        self.source: str | None = base.uat_source_repo
        self.no_builds: str | None = None  # why builds cannot run, when they cannot
        self._registry: registry.LocalRegistry | None = None
        self._state: tempfile.TemporaryDirectory[str] | None = None

    @property
    def state(self) -> Path:
        if self._state is None:
            raise RuntimeError(NOT_STARTED)
        return Path(self._state.name)

    @property
    def db(self) -> Path:
        return self.state / "console.db"

    async def start(self) -> None:
        self._state = tempfile.TemporaryDirectory(prefix="uat-bot-console-")
        try:
            await asyncio.to_thread(self.aws.start)
            self.account = await asyncio.to_thread(self.aws.seed, self.repository)
            self.containers.token_of = self.aws.task_token
            self.containers.log_to = self.aws.write_log
            await self.containers.start()
            await self._prepare_builds()
        except BaseException:
            await self.stop()
            raise

    async def _prepare_builds(self) -> None:
        """A source, a docker engine and a registry, or why builds cannot run."""
        if self.source is None:
            path = await asyncio.to_thread(
                sample_source,
                self.state / "sample-app",
                self.base.uat_build_path,
                self.base.uat_source_ref,
            )
            self.source = str(path)
        try:
            await Docker().ready()
        except UserError as exc:
            self.no_builds = slack_ui.plain(str(exc))
            return
        if self.base.uat_registry:
            why = await asyncio.to_thread(registry.problem, self.base.uat_registry)
            if why is not None:
                self.no_builds = slack_ui.registry_not_answering(self.base.uat_registry)
                return
            self.registry = self.base.uat_registry
        else:
            program = registry.binary()
            if program is None:
                self.no_builds = slack_ui.NO_REGISTRY_FOR_BUILDS
                return
            self._registry = registry.LocalRegistry(program, self.state / "registry")
            try:
                self.registry = await asyncio.to_thread(self._registry.start)
            except RuntimeError as exc:
                self.no_builds = str(exc)
                return

    async def stop(self) -> None:
        await self.containers.stop()
        await asyncio.to_thread(self.aws.stop)
        if self._registry is not None:
            await asyncio.to_thread(self._registry.stop)
            self._registry = None
        if self._state is not None:
            self._state.cleanup()
            self._state = None

    def settings(self) -> Settings:
        """The base settings pointed at this world; those not about AWS, containers or builds
        are kept."""
        account = self.account
        if account is None:
            raise RuntimeError(NOT_STARTED)
        return self.base.model_copy(
            update={
                "aws_endpoint_url": account.endpoint,
                "aws_region": account.region,
                "uat_ecs_cluster": CLUSTER,
                "uat_task_definition": BASE_FAMILY,
                "uat_container_name": CONTAINER,
                "uat_subnets": (account.subnet,),
                "uat_security_groups": (account.security_group,),
                "uat_assign_public_ip": "DISABLED",
                "uat_alb_listener_arn": None,
                "uat_channel": CHANNEL,
                "uat_container_url": self.containers.container_url,
                "uat_app_url": self.containers.app_url,
                "uat_prompt_token": SecretStr(self.containers.token),
                "uat_registry": self.registry,
                "uat_source_repo": self.source,
                "uat_poll_seconds": POLL_SECONDS,
                "uat_store": "sqlite",
                "uat_db": str(self.db),
            }
        )

    def docker(self, settings: Settings) -> Docker:
        """The docker the bot builds with here: its pushes end in the embedded ECR."""
        return MirroredDocker(self.registry, self.no_builds, Ecr(settings))

    def describe(self) -> list[str]:
        """What the console says about this world when it starts."""
        account = self.account
        if account is None:
            raise RuntimeError(NOT_STARTED)
        lines = [
            f"AWS is embedded: moto at {account.endpoint}, cluster `{CLUSTER}`, ECR "
            f"`{account.repository}` with :latest, :staging and {len(SEED_COMMITS)} sha images "
            "(`--aws` for real AWS).",
            f"PR containers are stand-ins at {self.containers.base}.",
        ]
        if self.no_builds or self.registry is None:
            lines.append(slack_ui.console_no_builds(self.no_builds or ""))
        else:
            source = self.source or ""
            if self.base.uat_source_repo is None:
                source = f"the sample app in {source}"
            ref = self.base.uat_source_ref
            lines.append(slack_ui.console_builds(source, ref, self.docker_at, self.registry))
        return lines
