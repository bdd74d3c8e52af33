"""From recorded AWS API calls to the IAM requests AWS authorizes for them.

The Service Authorization Reference (SAR) says, per action, which resource types it is authorized
on (a `*` marks the required ones) and which condition keys it supplies; parliament ships it as
`iam_definition.json`. For each recorded call this module looks the action up there, builds the
resource ARNs from the call's parameters (and response), and fills the condition keys it can from
the parameters: `aws:RequestTag/*` and `aws:TagKeys` from the tags sent, `aws:ResourceTag/*` from
the tags the recording saw on the resource, `ecs:cluster`. It adds the requests AWS makes on the
side of a call: tag-on-create (`ecs:TagResource` with `ecs:CreateAction`, AWS's "Grant permission
to tag resources on creation" in the ECS guide; `elasticloadbalancing:AddTags` with
`elasticloadbalancing:CreateAction`) and `iam:PassRole` with `iam:PassedToService` for the roles
a task definition names. An action or required resource the tables cannot build fails loudly, so
a new call in the code cannot slip past the IAM tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from tests.harness.iam_eval import Context, Request

ACCOUNT = "123456789012"  # moto's account


@dataclass
class Call:
    """One API call as botocore made it."""

    service: str  # the IAM prefix (botocore's signing name): ecs, ecr, elasticloadbalancing …
    operation: str  # the API name, which is the IAM action name for these services
    params: dict[str, Any]
    response: dict[str, Any]
    region: str

    def __str__(self) -> str:
        return f"{self.service}:{self.operation}"


@cache
def privileges() -> dict[str, dict[str, Any]]:
    """`prefix:Action` (lower case) → the SAR entry. Where parliament's copy lists a service twice
    (ELBv2 under two names), the entry with more condition keys is the newer one and wins."""
    data = json.loads(files("parliament").joinpath("iam_definition.json").read_text())
    found: dict[str, dict[str, Any]] = {}
    for service in data:
        for privilege in service["privileges"]:
            name = f"{service['prefix']}:{privilege['privilege']}".lower()
            keys = sum(len(r["condition_keys"]) for r in privilege["resource_types"])
            old = found.get(name)
            if old is None or keys > sum(len(r["condition_keys"]) for r in old["resource_types"]):
                found[name] = privilege
    return found


def privilege(action: str) -> dict[str, Any]:
    try:
        return privileges()[action.lower()]
    except KeyError:
        raise AssertionError(f"{action} is not in the Service Authorization Reference") from None


def _arn(call: Call, service: str, resource: str) -> str:
    return f"arn:aws:{service}:{call.region}:{ACCOUNT}:{resource}"


def _ecs_cluster(call: Call) -> str:
    cluster = str(call.params.get("cluster", "default"))
    return cluster if cluster.startswith("arn:") else _arn(call, "ecs", f"cluster/{cluster}")


def _ecs_task_definitions(call: Call) -> list[str] | None:
    answered = call.response.get("taskDefinition", {}).get("taskDefinitionArn")
    if answered:
        return [answered]
    ran = [t["taskDefinitionArn"] for t in call.response.get("tasks", [])]
    if ran:
        return ran
    named = call.params.get("taskDefinition") or call.params.get("family")
    if not named:
        return None
    named = str(named)
    if named.startswith("arn:"):
        return [named]
    return [_arn(call, "ecs", f"task-definition/{named}" + ("" if ":" in named else ":*"))]


def _ecs_tasks(call: Call) -> list[str] | None:
    given = call.params.get("tasks") or ([call.params["task"]] if "task" in call.params else [])
    if not given:
        return None
    cluster = _ecs_cluster(call).rsplit("/", 1)[-1]
    return [t if t.startswith("arn:") else _arn(call, "ecs", f"task/{cluster}/{t}") for t in given]


def _ecs_container_instances(call: Call) -> list[str]:
    """ListTasks is authorized on the cluster's container instances; with no instance named,
    that is all of them."""
    cluster = _ecs_cluster(call).rsplit("/", 1)[-1]
    named = call.params.get("containerInstance", "*")
    return [_arn(call, "ecs", f"container-instance/{cluster}/{named}")]


def _elb(kind: str, parameter: str) -> Any:
    def build(call: Call) -> list[str] | None:
        arns = [str(call.params[parameter])] if parameter in call.params else []
        if not arns and kind == "targetgroup":
            groups = call.response.get("TargetGroups", [])
            arns = [g["TargetGroupArn"] for g in groups]
            if not arns and "Name" in call.params:
                arns = [_arn(call, "elasticloadbalancing", f"targetgroup/{call.params['Name']}/*")]
        return [a for a in arns if f":{kind}/" in a] or None

    return build


def _by_name(service: str, template: str, parameter: str) -> Any:
    def build(call: Call) -> list[str] | None:
        if parameter not in call.params:
            return None
        return [_arn(call, service, template.format(call.params[parameter]))]

    return build


def _repositories(call: Call) -> list[str] | None:
    names = call.params.get("repositoryNames") or (
        [call.params["repositoryName"]] if "repositoryName" in call.params else []
    )
    return [_arn(call, "ecr", f"repository/{n}") for n in names] or None


def _log_group(call: Call) -> list[str] | None:
    """FilterLogEvents is authorized on the log group it reads."""
    group = call.params.get("logGroupName")
    return [_arn(call, "logs", f"log-group:{group}")] if group else None


def _log_stream(call: Call) -> list[str] | None:
    """GetLogEvents is authorized on the stream it reads, inside its group."""
    group, stream = call.params.get("logGroupName"), call.params.get("logStreamName")
    if not (group and stream):
        return None
    return [_arn(call, "logs", f"log-group:{group}:log-stream:{stream}")]


def _codebuild_project(call: Call) -> list[str] | None:
    """StartBuild names the project; BatchGetBuilds and StopBuild name builds, `<project>:<id>`."""
    named = call.params.get("projectName")
    builds = call.params.get("ids") or ([call.params["id"]] if "id" in call.params else [])
    projects = [named] if named else sorted({str(b).split(":", 1)[0] for b in builds})
    return [_arn(call, "codebuild", f"project/{p}") for p in projects] or None


def _sqs_queue(call: Call) -> list[str] | None:
    """A queue's URL (`https://<endpoint>/<account>/<name>`) as its ARN."""
    url = call.params.get("QueueUrl")
    if not url:
        return None
    account, name = str(url).rstrip("/").split("/")[-2:]
    return [f"arn:aws:sqs:{call.region}:{account}:{name}"]


# (IAM prefix, SAR resource type) → the ARNs a call names, from its parameters and response.
RESOURCES: dict[tuple[str, str], Any] = {
    ("ecs", "task-definition"): _ecs_task_definitions,
    ("ecs", "task"): _ecs_tasks,
    ("ecs", "container-instance"): _ecs_container_instances,
    ("ecs", "cluster"): lambda call: [_ecs_cluster(call)] if "cluster" in call.params else None,
    ("ecr", "repository"): _repositories,
    ("codebuild", "project"): _codebuild_project,
    ("logs", "log-group"): _log_group,
    ("logs", "log-stream"): _log_stream,
    ("dynamodb", "table"): _by_name("dynamodb", "table/{}", "TableName"),
    ("sqs", "queue"): _sqs_queue,
    ("elasticloadbalancing", "listener/app"): _elb("listener/app", "ListenerArn"),
    ("elasticloadbalancing", "listener/net"): _elb("listener/net", "ListenerArn"),
    ("elasticloadbalancing", "listener-rule/app"): _elb("listener-rule/app", "RuleArn"),
    ("elasticloadbalancing", "listener-rule/net"): _elb("listener-rule/net", "RuleArn"),
    ("elasticloadbalancing", "targetgroup"): _elb("targetgroup", "TargetGroupArn"),
}


def request_tags(call: Call) -> dict[str, str]:
    """The tags a call asks to put on what it creates."""
    tags = call.params.get("tags") or call.params.get("Tags") or []
    if isinstance(tags, dict):
        return {str(k): str(v) for k, v in tags.items()}
    return {str(t.get("key", t.get("Key"))): str(t.get("value", t.get("Value"))) for t in tags}


def _tag_context(tags: dict[str, str]) -> Context:
    context: Context = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    context["aws:TagKeys"] = sorted(tags)
    return context


def resource_tags(calls: Iterable[Call]) -> dict[str, dict[str, str]]:
    """ARN → tags, as the recording saw them (created with tags, or described)."""
    seen: dict[str, dict[str, str]] = {}
    for call in calls:
        tags = request_tags(call)
        created = [
            t["taskArn"] for t in call.response.get("tasks", []) if call.operation == "RunTask"
        ]
        created += [call.response.get("taskDefinition", {}).get("taskDefinitionArn", "")]
        created += [g["TargetGroupArn"] for g in call.response.get("TargetGroups", [])]
        created += [r["RuleArn"] for r in call.response.get("Rules", [])]
        if call.operation.startswith(("Create", "Register", "RunTask")):
            for arn in filter(None, created):
                seen.setdefault(arn, {}).update(tags)
        for item in call.response.get("TagDescriptions", []):
            found = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
            seen.setdefault(item["ResourceArn"], {}).update(found)
        for task in call.response.get("tasks", []):
            found = {t["key"]: t["value"] for t in task.get("tags", [])}
            seen.setdefault(task["taskArn"], {}).update(found)
    return seen


def _context(call: Call, keys: set[str], resource: str, tags: dict[str, dict[str, str]]) -> Context:
    context: Context = {}
    if "aws:RequestTag/${TagKey}" in keys or "aws:TagKeys" in keys:
        sent = request_tags(call)
        if sent:
            context.update(_tag_context(sent))
    if any(k.endswith("ResourceTag/${TagKey}") for k in keys):
        for key, value in tags.get(resource, {}).items():
            context[f"aws:ResourceTag/{key}"] = value
            context[f"{call.service}:ResourceTag/{key}"] = value
    if "ecs:cluster" in keys and call.service == "ecs":
        context["ecs:cluster"] = _ecs_cluster(call)
    return context


def _roles(definition: dict[str, Any]) -> list[str]:
    return [definition[k] for k in ("taskRoleArn", "executionRoleArn") if definition.get(k)]


def requests_for(calls: list[Call], principal: Context | None = None) -> list[Request]:
    """Every IAM request AWS makes for these calls, in order, with the principal's own keys."""
    tags = resource_tags(calls)
    registered: dict[str, dict[str, Any]] = {}  # task-definition ARN → what was registered
    found: list[Request] = []
    for call in calls:
        action = str(call)
        entry = privilege(action)
        types = entry["resource_types"]
        keys = {k for t in types for k in t["condition_keys"]}
        resources: list[str] = []
        required = [
            t["resource_type"].rstrip("*") for t in types if t["resource_type"].endswith("*")
        ]
        for kind in required:
            built = RESOURCES.get((call.service, kind), lambda _c: None)(call)
            resources += built or []
        if not required and "resourceArn" in call.params:  # TagResource names what it tags
            resources = [str(call.params["resourceArn"])]
        if required and not resources:
            raise AssertionError(
                f"{action}: cannot build its {required} ARN from {sorted(call.params)}; "
                "teach tests/harness/iam_context.py RESOURCES how"
            )
        for resource in resources or ["*"]:
            context = {**(principal or {}), **_context(call, keys, resource, tags)}
            found.append(Request(action, resource, context, why=action))
        found += _side_requests(call, registered, principal or {})
    return found


def _side_requests(
    call: Call, registered: dict[str, dict[str, Any]], principal: Context
) -> list[Request]:
    """Tag-on-create and PassRole, which AWS authorizes besides the call's own action."""
    side: list[Request] = []
    sent = request_tags(call)
    why = f"{call} with tags"
    if call.service == "ecs" and call.operation in ("RegisterTaskDefinition", "RunTask"):
        targets = (
            [call.response["taskDefinition"]["taskDefinitionArn"]]
            if call.operation == "RegisterTaskDefinition"
            else [t["taskArn"] for t in call.response.get("tasks", [])]
        )
        if sent:
            context = {**principal, **_tag_context(sent), "ecs:CreateAction": call.operation}
            side += [Request("ecs:TagResource", arn, context, why) for arn in targets]
        if call.operation == "RegisterTaskDefinition":
            registered[targets[0]] = call.response["taskDefinition"]
            roles = _roles(call.response["taskDefinition"])
        else:
            definition = registered.get(call.params["taskDefinition"], {})
            roles = _roles(definition) + _roles(call.params.get("overrides", {}))
        passed = {**principal, "iam:PassedToService": "ecs-tasks.amazonaws.com"}
        side += [Request("iam:PassRole", r, passed, f"{call} naming {r}") for r in roles]
    if call.service == "elasticloadbalancing" and sent:
        created = [g["TargetGroupArn"] for g in call.response.get("TargetGroups", [])]
        created += [r["RuleArn"] for r in call.response.get("Rules", [])]
        context = {
            **principal,
            **_tag_context(sent),
            "elasticloadbalancing:CreateAction": call.operation,
        }
        side += [Request("elasticloadbalancing:AddTags", arn, context, why) for arn in created]
    return side


def execution_role_requests(definition: dict[str, Any], region: str) -> list[Request]:
    """What ECS asks on the execution role's behalf to start a task of `definition`: pull its
    images from ECR, write its awslogs streams, read its Secrets Manager secrets."""
    found: list[Request] = []
    why = f"starting a task of {definition.get('family')}"
    for container in definition["containerDefinitions"]:
        image = str(container["image"])
        host, _, rest = image.partition("/")
        if ".dkr.ecr." in host:
            account = host.split(".", 1)[0]
            repository = rest.split("@", 1)[0].rsplit(":", 1)[0]
            arn = f"arn:aws:ecr:{region}:{account}:repository/{repository}"
            found.append(Request("ecr:GetAuthorizationToken", "*", {}, why))
            for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"):
                found.append(Request(action, arn, {}, why))
        logs = container.get("logConfiguration", {})
        if logs.get("logDriver") == "awslogs":
            options = logs["options"]
            group = options["awslogs-group"]
            stream = f"{options.get('awslogs-stream-prefix', '')}/{container['name']}/TASK_ID"
            arn = (
                f"arn:aws:logs:{options.get('awslogs-region', region)}:{ACCOUNT}:"
                f"log-group:{group}:log-stream:{stream}"
            )
            for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
                found.append(Request(action, arn, {}, why))
        for secret in container.get("secrets", []):
            arn = str(secret["valueFrom"]).split(":", 7)
            # valueFrom may name a JSON key after the ARN (…:secret:name:key:stage:version)
            found.append(Request("secretsmanager:GetSecretValue", ":".join(arn[:7]), {}, why))
    return found
