"""Thin typed gateways over boto3: small dataclasses out, domain errors out.

boto3 is blocking, so each call runs in a thread; `ClientError` and friends never leave this
module: they become `AwsError`, whose message says what to check.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)

from bot import gateway_text
from bot.config import Settings
from bot.errors import UserError

logger = logging.getLogger(__name__)

T = TypeVar("T")

SHA_TAG = re.compile(r"^[0-9a-f]{7,40}$")

# "standard" retries: exponential backoff with jitter, throttling included. Not "adaptive",
# whose client-side rate limiter, once AWS throttled a client, makes every later call of that
# client wait in its thread for a token at the rate it measured: after a few seconds of
# ThrottlingException a replica's ECS calls queued for minutes behind one another (5-minute
# soak: launches held their leases with no progress, 60 calls waiting for threads).
RETRIES = Config(
    retries={"max_attempts": 6, "mode": "standard"}, connect_timeout=5, read_timeout=30
)

HINTS = gateway_text.AWS_HINTS


# Failures botocore's own retries may not have waited out, but a later try can mend: AWS
# throttling, its 5xx answers, a connection that failed or timed out.
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerError",
        "InternalFailure",
        "ServerException",  # ECS's 5xx
        "EndpointConnection",
        "ReadTimeoutError",
        "ConnectTimeoutError",
    }
)


class AwsError(UserError):
    """An AWS call failed; the message names the call and what to check."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code

    @property
    def transient(self) -> bool:
        """Whether trying again later may succeed (throttling, AWS's 5xx, the network)."""
        return self.code in TRANSIENT_CODES


@dataclass(frozen=True)
class ImageInfo:
    """One image in the repository."""

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime | None
    size_bytes: int = 0

    @property
    def sha_tags(self) -> tuple[str, ...]:
        return tuple(t for t in self.tags if SHA_TAG.match(t))


@dataclass(frozen=True)
class Manifest:
    """An image manifest as ECR stores it: promote and rollback copy these, nothing else."""

    digest: str
    media_type: str
    body: str


@dataclass(frozen=True)
class RegistryAuth:
    """Where to push, and the credentials docker needs for it."""

    registry: str
    username: str
    password: str


def boto3_session(settings: Settings) -> boto3.session.Session:
    return boto3.session.Session(region_name=settings.aws_region)


# ECR, ECS, ELBv2 and CodeBuild operations that change nothing start with one of these;
# GetAuthorizationToken does not count among them: it is the docker login a build pushes with.
READING = ("Describe", "List", "Get", "BatchGet")
GUARDED_SERVICES = ("ecr", "ecs", "elastic-load-balancing-v2", "codebuild")


class ChangesRefused(BotoCoreError):
    """A call that would change ECR, ECS, ELBv2 or CodeBuild on a session told to change
    nothing."""

    fmt = "{operation} was not called"


def refuse_changes(session: boto3.session.Session) -> None:
    """From now on every ECR, ECS, ELBv2 and CodeBuild call of `session` that would change
    something fails before it is sent (`ChangesRefused`, an AwsError for the caller); reading
    still works."""

    def guard(model: Any, **_: Any) -> None:
        name = str(model.name)
        if name.startswith(READING) and name != "GetAuthorizationToken":
            return
        raise ChangesRefused(operation=name)

    for service in GUARDED_SERVICES:
        session.events.register(f"before-call.{service}", guard)


async def caller_identity(settings: Settings, session: boto3.session.Session) -> str:
    """The account and identity `session` acts as (STS GetCallerIdentity), e.g. `1234… (arn…)`."""

    def run() -> str:
        sts = session.client("sts", endpoint_url=settings.aws_endpoint_url, config=RETRIES)
        answer = sts.get_caller_identity()
        return f"{answer['Account']} ({answer['Arn']})"

    return await aws_call("GetCallerIdentity", run)


async def aws_call(what: str, fn: Callable[[], T], executor: Executor | None = None) -> T:
    """Run a blocking boto3 call in a thread (of `executor`, else asyncio's default); its
    failures become an AwsError saying what to do."""
    try:
        if executor is not None:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)
        return await asyncio.to_thread(fn)
    except ChangesRefused as exc:
        raise AwsError(gateway_text.aws_read_only(what), "ReadOnly") from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        hint = HINTS.get(code, str(error.get("Message", "")) or "see the bot's log")
        raise AwsError(gateway_text.aws_failed(what, hint, code), code) from None
    except BotoCoreError as exc:
        why, code = _before_aws_answered(exc)
        raise AwsError(gateway_text.aws_failed(what, why), code) from None


def _before_aws_answered(exc: BotoCoreError) -> tuple[str, str]:
    """What to do about a call that failed before AWS answered it, and the failure's code."""
    if isinstance(exc, NoCredentialsError):
        return gateway_text.AWS_NO_CREDENTIALS, "NoCredentials"
    if isinstance(exc, NoRegionError):
        return gateway_text.AWS_NO_REGION, "NoRegion"
    if isinstance(exc, EndpointConnectionError):
        endpoint = str(exc.kwargs.get("endpoint_url", "AWS"))
        return gateway_text.aws_unreachable(endpoint), "EndpointConnection"
    return str(exc), type(exc).__name__


def _image(detail: Any) -> ImageInfo:
    return ImageInfo(
        digest=detail["imageDigest"],
        tags=tuple(detail.get("imageTags", ())),
        pushed_at=detail.get("imagePushedAt"),
        size_bytes=int(detail.get("imageSizeInBytes", 0)),
    )


ErrorHook = Callable[[str, str], None]


class _Gateway:
    """What the gateways share: boto3 clients made on first use, the calls made (by API name),
    and errors counted (for /metrics) on their way out."""

    on_error: ErrorHook | None = None

    def __init__(self, settings: Settings, session: boto3.session.Session | None = None) -> None:
        self._settings = settings
        self._session = session
        self._clients: dict[str, Any] = {}
        self.calls: dict[str, int] = {}

    def _client(self, service: str) -> Any:
        """Made on first use (inside `aws_call`), so a missing region is a clear AwsError."""
        if service not in self._clients:
            session = self._session or boto3_session(self._settings)
            self._clients[service] = session.client(
                service,  # type: ignore[call-overload]
                endpoint_url=self._settings.aws_endpoint_url,
                config=RETRIES,
            )
        return self._clients[service]

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def _guarded(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await aws_call(what, fn)
        except AwsError as exc:
            if self.on_error is not None:
                self.on_error(what, exc.code)
            raise


class Ecr(_Gateway):
    """The image repository (`UAT_ECR_REPOSITORY`) through ECR's API."""

    def __init__(self, settings: Settings, session: boto3.session.Session | None = None) -> None:
        super().__init__(settings, session)
        self.repository = settings.uat_ecr_repository

    async def describe(self, tag: str) -> ImageInfo | None:
        """The image a tag points at, or None when no image has that tag."""

        def run() -> ImageInfo | None:
            self._count("DescribeImages")
            try:
                response = self._client("ecr").describe_images(
                    repositoryName=self.repository, imageIds=[{"imageTag": tag}]
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ImageNotFoundException":
                    return None
                raise
            details = response.get("imageDetails", [])
            return _image(details[0]) if details else None

        return await self._guarded("DescribeImages", run)

    async def images(self) -> list[ImageInfo]:
        """Every image in the repository, newest push first."""

        def run() -> list[ImageInfo]:
            found: list[ImageInfo] = []
            paginator = self._client("ecr").get_paginator("describe_images")
            for page in paginator.paginate(repositoryName=self.repository):
                self._count("DescribeImages")
                found += [_image(d) for d in page.get("imageDetails", [])]
            return sorted(found, key=lambda i: i.pushed_at or datetime.min, reverse=True)

        return await self._guarded("DescribeImages", run)

    async def manifest(self, *, tag: str | None = None, digest: str | None = None) -> Manifest:
        """The manifest behind a tag or digest (BatchGetImage)."""
        image_id = {"imageTag": tag} if tag else {"imageDigest": digest or ""}

        def run() -> Manifest:
            self._count("BatchGetImage")
            response = self._client("ecr").batch_get_image(
                repositoryName=self.repository,
                imageIds=[image_id],
                acceptedMediaTypes=[
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.oci.image.index.v1+json",
                ],
            )
            images = response.get("images", [])
            if not images:
                ref = tag or digest or "?"
                raise AwsError(gateway_text.no_image_in_repository(ref, self.repository))
            image = images[0]
            return Manifest(
                digest=image["imageId"]["imageDigest"],
                media_type=image.get("imageManifestMediaType", ""),
                body=image["imageManifest"],
            )

        return await self._guarded("BatchGetImage", run)

    async def put_tag(self, manifest: Manifest, tag: str) -> None:
        """Point `tag` at `manifest` (PutImage): no pull, no layers moved."""

        def run() -> None:
            self._count("PutImage")
            kwargs: dict[str, Any] = {
                "repositoryName": self.repository,
                "imageManifest": manifest.body,
                "imageTag": tag,
                "imageDigest": manifest.digest,
            }
            if manifest.media_type:
                kwargs["imageManifestMediaType"] = manifest.media_type
            try:
                self._client("ecr").put_image(**kwargs)
            except ClientError as exc:
                # The tag already points at exactly this manifest: nothing to change.
                if exc.response.get("Error", {}).get("Code") != "ImageAlreadyExistsException":
                    raise

        await self._guarded("PutImage", run)

    async def repository_uri(self) -> str:
        """`<account>.dkr.ecr.<region>.amazonaws.com/<name>`, for pinning images by digest."""

        def run() -> str:
            self._count("DescribeRepositories")
            response = self._client("ecr").describe_repositories(repositoryNames=[self.repository])
            return str(response["repositories"][0]["repositoryUri"])

        return await self._guarded("DescribeRepositories", run)

    async def authorization(self) -> RegistryAuth:
        """The registry ECR names, and a docker login for it (GetAuthorizationToken)."""

        def run() -> RegistryAuth:
            self._count("GetAuthorizationToken")
            data = self._client("ecr").get_authorization_token()["authorizationData"][0]
            user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
            registry = data["proxyEndpoint"].removeprefix("https://").removeprefix("http://")
            return RegistryAuth(registry=registry, username=user, password=password)

        return await self._guarded("GetAuthorizationToken", run)


# The tag naming the installation that started a task (Settings.installation): a bot acts on
# no task whose tag names another installation.
INSTANCE_TAG = "uat-instance"
# What a task's container overrides may tell about its PR, read back when a bot adopts a task
# (its environment's other variables, the prompt token among them, are never read).
TASK_FACTS = ("PR_NUMBER", "BRANCH", "REPO", "HEAD_SHA", "SESSION_ID")


@dataclass(frozen=True)
class TaskInfo:
    """What ECS says about one task."""

    arn: str
    last_status: str
    desired_status: str
    task_definition_arn: str = ""
    started_by: str = ""
    private_ip: str | None = None
    stopped_reason: str = ""
    stop_code: str = ""
    exit_code: int | None = None
    tags: dict[str, str] | None = None
    facts: dict[str, str] | None = None  # TASK_FACTS from its container overrides
    cpu: int = 0  # CPU units (1024 a vCPU) and memory (MiB) of the task, 0 when not said
    memory: int = 0

    @property
    def task_id(self) -> str:
        return self.arn.rsplit("/", 1)[-1]

    def installation(self) -> str | None:
        """The installation its tag names, or None for a task without the tag."""
        return (self.tags or {}).get(INSTANCE_TAG)


class LaunchRefused(AwsError):
    """RunTask did not start a task; the message is AWS's reason."""


def task_info(raw: Any) -> TaskInfo:
    """A task as DescribeTasks, or an ECS Task State Change event's `detail`, describes it."""
    return _task(raw)


def _task(raw: Any, essential: str | None = None) -> TaskInfo:
    """A DescribeTasks / RunTask task; its exit code is the `essential` container's (the one
    that runs the PR) when it has one, else the first container's that has one."""
    ip = None
    for attachment in raw.get("attachments", []):
        for detail in attachment.get("details", []):
            if detail.get("name") == "privateIPv4Address":
                ip = detail.get("value")
    containers = raw.get("containers", [])
    exits = [c for c in containers if c.get("name") == essential and "exitCode" in c]
    exit_codes = [c["exitCode"] for c in exits or containers if "exitCode" in c]
    facts = {
        variable["name"]: str(variable.get("value", ""))
        for override in (raw.get("overrides") or {}).get("containerOverrides", [])
        for variable in override.get("environment", [])
        if variable.get("name") in TASK_FACTS
    }
    return TaskInfo(
        arn=raw["taskArn"],
        last_status=raw.get("lastStatus", ""),
        desired_status=raw.get("desiredStatus", ""),
        task_definition_arn=raw.get("taskDefinitionArn", ""),
        started_by=raw.get("startedBy", ""),
        private_ip=ip,
        stopped_reason=raw.get("stoppedReason", ""),
        stop_code=raw.get("stopCode", ""),
        exit_code=exit_codes[0] if exit_codes else None,
        tags={t["key"]: t["value"] for t in raw.get("tags", [])},
        facts=facts,
        cpu=_units(raw.get("cpu")),
        memory=_units(raw.get("memory")),
    )


def _units(value: Any) -> int:
    """A task's `cpu` or `memory` as ECS gives it ("1024", or "1 vCPU" / "2 GB" as registered)."""
    text = str(value or "").strip().lower()
    number = text.split()[0] if text else ""
    try:
        amount = float(number)
    except ValueError:
        return 0
    return int(amount * 1024) if text.endswith(("vcpu", "gb")) else int(amount)


def registrable(ecs: Any, described: dict[str, Any]) -> dict[str, Any]:
    """The fields of a DescribeTaskDefinition answer that RegisterTaskDefinition takes back, by
    the client's own service model (AWS adds read-only fields such as `deleteRequestedAt`;
    botocore refuses any parameter its model does not know). Tags are passed separately."""
    shape = ecs.meta.service_model.operation_model("RegisterTaskDefinition").input_shape
    accepted = set(shape.members) - {"tags"}
    return {k: v for k, v in described.items() if k in accepted}


ECS_STOPPING = frozenset({"DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED", "DELETED"})
DESCRIBE_BATCH = 100  # DescribeTasks takes at most 100 tasks per call
STOP_REASON = 255  # StopTask's reason: ECS refuses a longer one, so it is cut to this


class Ecs(_Gateway):
    """ECS (tasks, task definitions) and ELBv2 routing cleanup for PR environments."""

    def __init__(self, settings: Settings, session: boto3.session.Session | None = None) -> None:
        super().__init__(settings, session)
        self.cluster = settings.uat_ecs_cluster or "default"
        self.installation = settings.installation

    async def register_pinned(
        self, base_family: str, family: str, container: str, image: str, tags: dict[str, str]
    ) -> str:
        """Copy the base task definition's latest revision into `family`, running `image`."""

        def run() -> str:
            ecs = self._client("ecs")
            self._count("DescribeTaskDefinition")
            base = ecs.describe_task_definition(taskDefinition=base_family)["taskDefinition"]
            spec = registrable(ecs, base)
            names = [c["name"] for c in spec["containerDefinitions"]]
            if container not in names:
                raise AwsError(gateway_text.no_container(base_family, container, names))
            for definition in spec["containerDefinitions"]:
                if definition["name"] == container:
                    definition["image"] = image
            spec["family"] = family
            self._count("RegisterTaskDefinition")
            registered = ecs.register_task_definition(
                **spec, tags=[{"key": k, "value": v} for k, v in tags.items()]
            )
            return str(registered["taskDefinition"]["taskDefinitionArn"])

        return await self._guarded("RegisterTaskDefinition", run)

    async def task_size(self, task_definition_arn: str) -> tuple[int, int]:
        """A task definition's CPU units and memory (MiB), for what its tasks cost: the task's
        own, else its containers' together; (0, 0) when it says neither."""

        def run() -> tuple[int, int]:
            self._count("DescribeTaskDefinition")
            definition = self._client("ecs").describe_task_definition(
                taskDefinition=task_definition_arn
            )["taskDefinition"]
            containers = definition.get("containerDefinitions", [])
            cpu = _units(definition.get("cpu")) or sum(_units(c.get("cpu")) for c in containers)
            memory = _units(definition.get("memory")) or sum(
                _units(c.get("memory")) for c in containers
            )
            return cpu, memory

        return await self._guarded("DescribeTaskDefinition", run)

    async def deregister(self, task_definition_arn: str) -> None:
        def run() -> None:
            self._count("DeregisterTaskDefinition")
            try:
                self._client("ecs").deregister_task_definition(taskDefinition=task_definition_arn)
            except ClientError as exc:
                if "INACTIVE" not in str(exc) and "not found" not in str(exc).lower():
                    raise

        await self._guarded("DeregisterTaskDefinition", run)

    async def run_task(
        self,
        task_definition_arn: str,
        *,
        started_by: str,
        environment: dict[str, str],
        container: str,
        tags: dict[str, str],
    ) -> TaskInfo:
        settings = self._settings

        def run() -> TaskInfo:
            self._count("RunTask")
            response = self._client("ecs").run_task(
                cluster=self.cluster,
                taskDefinition=task_definition_arn,
                launchType="FARGATE",
                count=1,
                startedBy=started_by,
                clientToken=started_by,  # a retried RunTask whose answer was lost starts nothing
                networkConfiguration={
                    "awsvpcConfiguration": {
                        "subnets": list(settings.uat_subnets),
                        "securityGroups": list(settings.uat_security_groups),
                        "assignPublicIp": settings.uat_assign_public_ip,
                    }
                },
                overrides={
                    "containerOverrides": [
                        {
                            "name": container,
                            "environment": [
                                {"name": k, "value": v} for k, v in environment.items()
                            ],
                        }
                    ]
                },
                tags=[{"key": k, "value": v} for k, v in tags.items()],
                enableECSManagedTags=True,
                propagateTags="TASK_DEFINITION",
            )
            tasks = response.get("tasks", [])
            if not tasks:
                reasons = [
                    f"{f.get('reason', '?')}" + (f" ({f['detail']})" if f.get("detail") else "")
                    for f in response.get("failures", [])
                ]
                raise LaunchRefused(gateway_text.ecs_refused(reasons))
            return _task(tasks[0])

        return await self._guarded("RunTask", run)

    async def describe(self, arns: list[str]) -> dict[str, TaskInfo]:
        """The tasks by ARN, one DescribeTasks call per 100; vanished ARNs are left out."""

        def run() -> dict[str, TaskInfo]:
            found: dict[str, TaskInfo] = {}
            for start in range(0, len(arns), DESCRIBE_BATCH):
                batch = arns[start : start + DESCRIBE_BATCH]
                self._count("DescribeTasks")
                response = self._client("ecs").describe_tasks(
                    cluster=self.cluster, tasks=batch, include=["TAGS"]
                )
                for raw in response.get("tasks", []):
                    if raw["taskArn"] in batch:
                        found[raw["taskArn"]] = _task(raw, self._settings.uat_container_name)
            return found

        if not arns:
            return {}
        return await self._guarded("DescribeTasks", run)

    async def stop_task(self, arn: str, reason: str) -> None:
        """Stop a task, unless its tag names another installation (then it is left alone and
        the log says so): a store that is not this installation's cannot make it stop theirs."""

        def run() -> None:
            self._count("DescribeTasks")
            described = self._client("ecs").describe_tasks(
                cluster=self.cluster, tasks=[arn], include=["TAGS"]
            )
            for raw in described.get("tasks", []):
                owner = _task(raw).installation()
                if owner is not None and owner != self.installation:
                    logger.warning(
                        "not stopping %s: it is installation %r's, not %r's",
                        arn,
                        owner,
                        self.installation,
                    )
                    return
            self._count("StopTask")
            try:
                self._client("ecs").stop_task(
                    cluster=self.cluster, task=arn, reason=reason[:STOP_REASON]
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                    "InvalidParameterException",
                    "ResourceNotFoundException",
                ):
                    raise

        await self._guarded("StopTask", run)

    async def tag_task(self, arn: str, tags: dict[str, str]) -> None:
        """Add or change tags of a task (TagResource): a claimed warm-pool task gets its PR's."""

        def run() -> None:
            self._count("TagResource")
            self._client("ecs").tag_resource(
                resourceArn=arn, tags=[{"key": k, "value": v} for k, v in tags.items()]
            )

        await self._guarded("TagResource", run)

    async def tasks_started_by(self, started_by: str | None = None) -> list[str]:
        """ARNs of the cluster's tasks (running or recently stopped), optionally by startedBy."""

        def run() -> list[str]:
            arns: list[str] = []
            paginator = self._client("ecs").get_paginator("list_tasks")
            kwargs: dict[str, Any] = {"cluster": self.cluster}
            if started_by:
                kwargs["startedBy"] = started_by
            for page in paginator.paginate(**kwargs):
                self._count("ListTasks")
                arns += page.get("taskArns", [])
            return arns

        return await self._guarded("ListTasks", run)

    async def live_tasks(self) -> list[TaskInfo]:
        """Every task of the cluster that is not stopping or stopped, with its tags, whoever
        started it (callers keep to their installation's: `TaskInfo.installation`)."""
        found = await self.describe(await self.tasks_started_by())
        return [t for t in found.values() if t.last_status not in ECS_STOPPING]

    async def task_definitions(self, family: str) -> list[str]:
        """Active revisions of `family` (the bot's own)."""

        def run() -> list[str]:
            arns: list[str] = []
            paginator = self._client("ecs").get_paginator("list_task_definitions")
            for page in paginator.paginate(familyPrefix=family, status="ACTIVE"):
                self._count("ListTaskDefinitions")
                arns += page.get("taskDefinitionArns", [])
            return [a for a in arns if a.rsplit("/", 1)[-1].rsplit(":", 1)[0] == family]

        return await self._guarded("ListTaskDefinitions", run)

    async def routing(self) -> list[tuple[str, str]]:
        """ELBv2 listener rules and target groups tagged SESSION_ID, as (arn, session)."""

        def run() -> list[tuple[str, str]]:
            elb = self._client("elbv2")
            candidates: list[str] = []
            listener = self._settings.uat_alb_listener_arn
            if listener:
                for page in elb.get_paginator("describe_rules").paginate(ListenerArn=listener):
                    self._count("DescribeRules")
                    rules = page.get("Rules", [])
                    candidates += [r["RuleArn"] for r in rules if not r.get("IsDefault")]
            for page in elb.get_paginator("describe_target_groups").paginate():
                self._count("DescribeTargetGroups")
                candidates += [g["TargetGroupArn"] for g in page.get("TargetGroups", [])]
            found: list[tuple[str, str]] = []
            for start in range(0, len(candidates), 20):  # DescribeTags takes 20 at most
                self._count("DescribeTags")
                described = elb.describe_tags(ResourceArns=candidates[start : start + 20])
                for item in described.get("TagDescriptions", []):
                    tags = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
                    if tags.get("SESSION_ID"):
                        found.append((item["ResourceArn"], tags["SESSION_ID"]))
            return found

        return await self._guarded("ELBv2 DescribeTags", run)

    async def delete_routing(self, arns: list[str]) -> None:
        """Delete listener rules first, then the target groups they forwarded to."""

        def run() -> None:
            elb = self._client("elbv2")
            for arn in sorted(arns, key=lambda a: ":targetgroup/" in a):
                if ":targetgroup/" in arn:
                    self._count("DeleteTargetGroup")
                    elb.delete_target_group(TargetGroupArn=arn)
                else:
                    self._count("DeleteRule")
                    elb.delete_rule(RuleArn=arn)

        await self._guarded("ELBv2 cleanup", run)

    async def remove_routing(self, session_id: str) -> list[str]:
        """Delete the routing registered for one session; returns what was removed."""
        arns = [arn for arn, session in await self.routing() if session == session_id]
        if arns:
            await self.delete_routing(arns)
        return arns
