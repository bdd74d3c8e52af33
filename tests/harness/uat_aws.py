"""A UAT account in moto: VPC, subnet, security group, cluster, base task definition, images.

Tasks are held where ECS puts them (moto's `ecs::task` transitions set to manual), so tests
move them explicitly. A small aiohttp app on 127.0.0.1 plays the containers' prompt servers;
the bot reaches it through UAT_CONTAINER_URL, never through the 10.x addresses moto invents.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

import boto3
from aiohttp import web

from bot.devtools import local
from bot.store import Environment, Facts
from tests.harness.ecr_seed import fresh_repository, tag_sha

CLUSTER = "uat"
# the DynamoDB operations the bot's store uses, made one at a time by `atomic_dynamodb`
DYNAMODB_OPERATIONS = ("put_item", "update_item", "delete_item", "get_item", "query")
# the conditional writes alone: what a soak of several replicas needs (bench/environments.py)
DYNAMODB_WRITES = ("put_item", "update_item", "delete_item")
BASE_FAMILY = "uat-base"
CONTAINER = "app"
OWN_FAMILY = f"{BASE_FAMILY}-uat-bot"


@dataclass
class UatAccount:
    endpoint: str
    subnet: str
    security_group: str
    digests: dict[str, str]
    ecs: Any
    ecr: Any
    ec2: Any

    def env(self, container_url: str) -> dict[str, str]:
        """Bot settings pointing at this account and at the local container stand-in."""
        return {
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "UAT_ECS_CLUSTER": CLUSTER,
            "UAT_TASK_DEFINITION": BASE_FAMILY,
            "UAT_CONTAINER_NAME": CONTAINER,
            "UAT_SUBNETS": self.subnet,
            "UAT_SECURITY_GROUPS": self.security_group,
            "UAT_CONTAINER_URL": container_url,
            "UAT_APP_URL": "https://pr-{pr}.uat.example.com",
            "UAT_POLL_SECONDS": "3600",  # tests poll explicitly
            "UAT_QUICK_POLL_SECONDS": "3600",  # and probe starting environments explicitly
        }

    def tasks(self, desired: str | None = None) -> list[dict[str, Any]]:
        arns = self.ecs.list_tasks(cluster=CLUSTER)["taskArns"]
        if not arns:
            return []
        found = self.ecs.describe_tasks(cluster=CLUSTER, tasks=arns, include=["TAGS"])["tasks"]
        return [t for t in found if desired is None or t["desiredStatus"] == desired]

    def running(self) -> list[dict[str, Any]]:
        return [t for t in self.tasks() if t["lastStatus"] == "RUNNING"]

    def revisions(self, family: str, status: str = "ACTIVE") -> list[str]:
        arns = self.ecs.list_task_definitions(familyPrefix=family, status=status)
        return [a for a in arns["taskDefinitionArns"] if f"/{family}:" in a]

    def run_pr_task(self, definition: str, pr: int, session: str) -> str:
        """A task for `pr` started and tagged as the bot starts one; its ARN (it must run)."""
        task = self.ecs.run_task(
            cluster=CLUSTER,
            taskDefinition=definition,
            launchType="FARGATE",
            count=1,
            startedBy=session,
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": [self.subnet],
                    "securityGroups": [self.security_group],
                    "assignPublicIp": "DISABLED",
                }
            },
            tags=[
                {"key": "managed-by", "value": "uat-bot"},
                {"key": "pr", "value": str(pr)},
                {"key": "session", "value": session},
            ],
        )["tasks"][0]
        if task["lastStatus"] != "RUNNING":
            raise RuntimeError(f"moto started a {task['lastStatus']} task")
        return str(task["taskArn"])

    def image_of(self, task_definition_arn: str) -> str:
        definition = self.ecs.describe_task_definition(taskDefinition=task_definition_arn)
        [container] = [
            c
            for c in definition["taskDefinition"]["containerDefinitions"]
            if c["name"] == CONTAINER
        ]
        return str(container["image"])


def alb_listener(ec2: Any, elb: Any, network: int) -> tuple[str, str]:
    """A VPC 10.`network`.0.0/16 with a subnet in two zones, the ALB `uat` on them and its HTTP
    listener on port 80 that answers 404 unless a rule matches: (VPC id, listener ARN)."""
    vpc = ec2.create_vpc(CidrBlock=f"10.{network}.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.{network}.{i}.0/24", AvailabilityZone=f"us-east-1{z}"
        )["Subnet"]["SubnetId"]
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
    return str(vpc), str(listener)


def running_environment(
    repo: str, pr: int, session: str, task_arn: str, digest: str, definition: str, now: float
) -> Environment:
    """The record of a running environment as the bot keeps it, started at `now`."""
    return Environment(
        repo=repo,
        pr=pr,
        state="running",
        label="uat",
        task_arn=task_arn,
        image_digest=digest,
        facts=Facts.from_json(
            {
                "title": f"PR {pr}",
                "branch": f"branch-{pr}",
                "session": session,
                "launch_started": now,
                "requested_by": "bench",
                "idle_until": now + 8 * 3600,
                "warned": False,
                "health": None,
                "last_seen": "RUNNING",
                "reason": "",
                "task_definition": definition,
            }
        ),
    )


def register_base_definition(
    ecs: Any, container: dict[str, Any] | None = None, **definition: Any
) -> None:
    """The operators' base task definition (the embedded world's, in family BASE_FAMILY)."""
    local.register_base_definition(ecs, BASE_FAMILY, container, **definition)


def set_up_account(endpoint: str) -> UatAccount:
    kw: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    ec2, ecs, ecr = (boto3.client(s, **kw) for s in ("ec2", "ecs", "ecr"))
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="uat", Description="uat", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName=CLUSTER)
    register_base_definition(ecs)
    fresh_repository(ecr)
    digests = {
        "latest": tag_sha(ecr, "1111111", "latest"),
        "staging": tag_sha(ecr, "2222222", "staging"),
    }
    tag_sha(ecr, "1111111", "1111111")
    tag_sha(ecr, "2222222", "2222222")
    hold_tasks(endpoint)
    return UatAccount(endpoint, subnet, group, digests, ecs, ecr, ec2)


def hold_tasks(endpoint: str) -> None:
    """Tasks stay in their state until a test moves them (moto's state manager)."""
    body = json.dumps(
        {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}}
    ).encode()
    request = urllib.request.Request(
        f"{endpoint}/moto-api/state-manager/set-transition",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request)


@dataclass
class Containers:
    """Stand-in prompt servers for every PR, on 127.0.0.1, answering /health /version /status."""

    health: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    hits: list[tuple[int, str]] = field(default_factory=list)
    health_delay_s: float = 0.0  # how long each /health takes to answer
    in_flight: int = 0  # /health requests being answered now
    most_in_flight: int = 0  # the most at any one time
    runner: web.AppRunner | None = None
    url: str = ""

    def ready(self, pr: int) -> None:
        self.health[pr] = (200, {"ready": True, "phase": "ready"})

    def failing(self, pr: int, error: str) -> None:
        self.health[pr] = (503, {"ready": False, "phase": "failed", "error": error})

    async def start(self) -> None:
        async def health(request: web.Request) -> web.Response:
            pr = int(request.match_info["pr"])
            self.hits.append((pr, "health"))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.health_delay_s)
            finally:
                self.in_flight -= 1
            status, body = self.health.get(pr, (503, {"ready": False, "phase": "installing"}))
            return web.json_response(body, status=status)

        async def version(request: web.Request) -> web.Response:
            return web.json_response(
                {
                    "commit": "c" * 40,
                    "short": "ccccccc",
                    "branch": "changes",
                    "date": "2026-11-27",
                    "subject": "Update README",
                }
            )

        async def status(request: web.Request) -> web.Response:
            return web.json_response({"running": None, "queue": [{"id": "j1"}], "recent": []})

        async def anything_else(request: web.Request) -> web.Response:
            pr = int(request.match_info["pr"])
            self.hits.append((pr, f"{request.method} {request.match_info['rest']}"))
            return web.json_response({"error": "no such job"}, status=404)

        app = web.Application()
        app.router.add_get("/pr/{pr}/health", health)
        app.router.add_get("/pr/{pr}/version", version)
        app.router.add_get("/pr/{pr}/status", status)
        app.router.add_route("*", "/pr/{pr}/{rest:.*}", anything_else)  # recorded, then 404
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/pr/{{pr}}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def atomic_dynamodb(
    patch: Callable[[Any, str, Any], None] = setattr,
    operations: tuple[str, ...] = DYNAMODB_OPERATIONS,
) -> None:
    """Make moto's DynamoDB item operations atomic, as DynamoDB's are (in this process).

    moto's server answers requests on several threads and checks a condition, then writes,
    without a lock: two replicas' compare-and-sets on one item could both pass (a lost update
    real DynamoDB never makes), and a query can see its table change under it. `patch` is
    `setattr`, or a test's `monkeypatch.setattr` so that it is undone after the test;
    `operations` the ones made atomic."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in operations:
        original = getattr(DynamoDBBackend, name)

        def locked(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(*args, **kwargs)

        patch(DynamoDBBackend, name, wraps(original)(locked))


def partition_queries(patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """Make a moto Query on a table's own key read that key's partition only, as DynamoDB's does.

    moto walks every item of the table for each Query, so its cost grows with the whole table.
    The soak's table gains a claim for every delivery, answer and card: after a few minutes the
    replicas' Queries (each prompt follower's, the watcher's, each takeover round's) kept moto's
    server busy, every store call waited seconds, and inbox items a kill left behind were taken
    over too late to settle. Real DynamoDB reads the one partition. Queries on an index are left
    as moto makes them. `patch` as for `atomic_dynamodb`."""
    from moto.dynamodb.models.table import Table

    partition = threading.local()  # the hash key the Query on this thread reads, if any
    every_item, query = Table.all_items, Table.query
    signature = inspect.signature(query)

    def all_items(self: Any) -> Any:
        key = getattr(partition, "key", None)
        if key is None:
            return every_item(self)
        found = self.items.get(key)  # never `self.items[key]`: a defaultdict would grow
        if found is None:
            return []
        return list(found.values()) if self.range_key_attr else [found]

    def partition_query(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs).arguments
        if bound.get("index_name") or bound.get("hash_key") is None:
            return query(self, *args, **kwargs)
        partition.key = bound["hash_key"]
        try:
            return query(self, *args, **kwargs)
        finally:
            partition.key = None

    patch(Table, "all_items", wraps(every_item)(all_items))
    patch(Table, "query", wraps(query)(partition_query))
