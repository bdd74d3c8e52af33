"""The console's embedded world: moto's AWS on 127.0.0.1, seeded as a UAT account, and stand-ins
for the PR containers, so `uat-bot console` works with no AWS account, Slack or docker.

When does the console use it? `aws_configuration()` decides, and it is the only place that does:

* AWS counts as configured when AWS_ENDPOINT_URL is set (in the environment or `.env`, as every
  setting is read), or when botocore finds credentials *without asking the network*: environment
  variables (AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY), AWS_PROFILE and the shared credentials
  and config files (~/.aws/credentials, ~/.aws/config, incl. SSO, credential_process, role and
  web-identity profiles). A profile botocore cannot read also counts (AWS was meant; the bot's
  calls then say what is wrong). The EC2 instance and ECS container metadata endpoints are not
  consulted, so a laptop without AWS set up never waits on them.
* Otherwise the console starts the embedded world: `ThreadedMotoServer` on 127.0.0.1 (moto is the
  optional extra `uat-bot[local]`), seeded with an ECR repository (`:latest`, `:staging` and sha
  images, docker v2 manifests whose digest is the sha256 of their bytes), an ECS cluster, a base
  task definition (awsvpc, FARGATE, container `app`) and a VPC with a subnet and security group.
  moto's tasks start RUNNING and stay so until stopped (its clock-driven progression would run
  them into STOPPING); the stand-in container is what takes a couple of seconds to become ready.

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
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from aiohttp import web
from botocore.exceptions import BotoCoreError
from pydantic import SecretStr

from bot.config import Settings

logger = logging.getLogger(__name__)

REGION = "us-east-1"
CLUSTER = "uat-console"
BASE_FAMILY = "uat-console-base"
CONTAINER = "app"
CHANNEL = "C0CONSOLE"
LOCAL_REGISTRY = "127.0.0.1:5000"  # where embedded builds push: never a registry on the internet
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
AGENT_SECONDS = 1.0


# ---------------------------------------------------------------------- is AWS configured?


def aws_configuration(settings: Settings) -> str | None:
    """Where this process's AWS configuration comes from, or None when there is none.

    The rules are in the module docstring; the network is never asked.
    """
    if settings.aws_endpoint_url:
        return f"AWS_ENDPOINT_URL={settings.aws_endpoint_url}"
    try:
        session = botocore.session.Session()
        resolver: Any = session.get_component("credential_provider")
        for asks_the_network in ("container-role", "iam-role"):
            resolver.remove(asks_the_network)
        credentials = resolver.load_credentials()
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that is not there
        return f"an AWS configuration botocore cannot use ({exc})"
    if credentials is None:
        return None
    return f"AWS credentials ({credentials.method})"


def set_fake_aws_credentials_for_this_process() -> None:
    """Give boto3 in this process moto's fake credentials.

    The bot's own clients take credentials the way boto3 does, from the environment; the
    embedded world is the only user of this, and this is the only place it writes os.environ.
    """
    os.environ["AWS_ACCESS_KEY_ID"] = FAKE_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = FAKE_SECRET
    os.environ.pop("AWS_SESSION_TOKEN", None)


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


def _put_image(ecr: Any, repository: str, commit: str, tag: str) -> str:
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
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
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
        ecs.register_task_definition(
            family=BASE_FAMILY,
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
                }
            ],
        )
        with contextlib.suppress(ecr.exceptions.RepositoryNotFoundException):
            ecr.delete_repository(repositoryName=repository, force=True)
        ecr.create_repository(repositoryName=repository)
        digests = {c[:7]: _put_image(ecr, repository, c, c[:7]) for c in SEED_COMMITS}
        self._space_out_pushes(repository, [digests[c[:7]] for c in SEED_COMMITS])
        digests["staging"] = _put_image(ecr, repository, STAGING_COMMIT, "staging")
        digests["latest"] = _put_image(ecr, repository, LATEST_COMMIT, "latest")
        return SeededAccount(self.endpoint, self.region, repository, subnet, group, digests)

    def _space_out_pushes(self, repository: str, digests: list[str]) -> None:
        """Pushed an hour apart, oldest first (moto stamps whole seconds: seeded images tie)."""
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.ecr.models import ecr_backends

        repo = ecr_backends[DEFAULT_ACCOUNT_ID][self.region].repositories.get(repository)
        if repo is None:  # pragma: no cover - moto changed
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

    def health(self) -> tuple[int, dict[str, Any]]:
        age = self.clock() - self.born
        for until, phase in PHASES:
            if age < until:
                return 503, {"ready": False, "phase": phase, "error": None}
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
            end = job.started + AGENT_SECONDS
            if now < end:
                return
            job.finished, job.finished_at, job.state = end, _now_iso(), "succeeded"
            job.summary = f"Done: {job.prompt} (a stand-in agent: nothing was changed)"
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


class StandInContainers:
    """Every PR task's container, on 127.0.0.1: what UAT_CONTAINER_URL and UAT_APP_URL reach."""

    def __init__(self, token: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.token = token
        self.clock = clock
        self.containers: dict[tuple[int, str], FakeContainer] = {}
        self.base = ""
        self._runner: web.AppRunner | None = None

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

    def _refuse(self, request: web.Request) -> web.Response | None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(given.strip(), self.token):
            return None
        return web.json_response({"error": "missing or wrong bearer token"}, status=401)

    async def _health(self, request: web.Request) -> web.Response:
        status, body = self._container(request).health()
        return web.json_response(body, status=status)

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(self._container(request).version())

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self._container(request).status())

    async def _submit(self, request: web.Request) -> web.Response:
        if (refused := self._refuse(request)) is not None:
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
        if (refused := self._refuse(request)) is not None:
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
        app = web.Application()
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


# ---------------------------------------------------------------------- together


class LocalWorld:
    """The embedded AWS account, the stand-in containers and a throw-away state directory.

    The state (SQLite) lives and dies with the world: moto starts empty every time, so
    environments remembered from an earlier session would name tasks that no longer exist.
    """

    def __init__(self, repository: str, region: str | None = None) -> None:
        self.repository = repository
        self.aws = EmbeddedAws(region or REGION)
        self.containers = StandInContainers(secrets.token_urlsafe(24))
        self.account: SeededAccount | None = None
        self._state: tempfile.TemporaryDirectory[str] | None = None

    @property
    def db(self) -> Path:
        assert self._state is not None, "start() first"
        return Path(self._state.name) / "console.db"

    async def start(self) -> None:
        self._state = tempfile.TemporaryDirectory(prefix="uat-bot-console-")
        try:
            await asyncio.to_thread(self.aws.start)
            self.account = await asyncio.to_thread(self.aws.seed, self.repository)
            await self.containers.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.containers.stop()
        await asyncio.to_thread(self.aws.stop)
        if self._state is not None:
            self._state.cleanup()
            self._state = None

    def settings(self, base: Settings) -> Settings:
        """`base` pointed at this world; settings that are not about AWS or containers are kept."""
        account = self.account
        assert account is not None, "start() first"
        return base.model_copy(
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
                "uat_registry": base.uat_registry or LOCAL_REGISTRY,
                "uat_poll_seconds": POLL_SECONDS,
                "uat_store": "sqlite",
                "uat_db": str(self.db),
            }
        )

    def describe(self, settings: Settings) -> list[str]:
        """What the console says about this world when it starts (`settings`: as pointed here)."""
        account = self.account
        assert account is not None, "start() first"
        return [
            f"AWS is embedded (no AWS configuration found): moto at {account.endpoint}, cluster "
            f"`{CLUSTER}`, ECR `{account.repository}` with :latest, :staging and "
            f"{len(SEED_COMMITS)} sha images.",
            f"PR containers are stand-ins at {self.containers.base}; builds push to "
            f"{settings.uat_registry}.",
        ]
