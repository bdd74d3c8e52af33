"""The deployment in docs/ works as written: each file is a request the AWS API takes (checked
against botocore's own service model), the bot's settings in it start `serve`, and the pieces
name each other consistently (roles, secrets, security groups, the buildspec)."""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
import botocore.session
import pytest
import yaml
from botocore.validate import ParamValidator

from bot import health
from bot.config import load_settings
from bot.environments.events import parse
from tests.harness.bot import ROOT, reference
from tests.harness.deploy_docs import DOCS, bot_environment, document
from tests.harness.iam_context import execution_role_requests
from tests.harness.iam_eval import evaluate

README = (ROOT / "README.md").read_text()


def problems(service: str, operation: str, params: dict[str, Any]) -> str:
    """What botocore's parameter validation refuses in `params` for that API call ("" if none)."""
    model = botocore.session.get_session().get_service_model(service)
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    return str(report.generate_report()) if report.has_errors() else ""


REQUESTS = [
    ("ecs-service.json", "taskDefinition", "ecs", "RegisterTaskDefinition"),
    ("ecs-service.json", "service", "ecs", "CreateService"),
    ("ecs-service.json", "targetGroup", "elbv2", "CreateTargetGroup"),
    ("uat-task-definition.json", None, "ecs", "RegisterTaskDefinition"),
    ("codebuild-project.json", None, "codebuild", "CreateProject"),
]


@pytest.mark.parametrize(("name", "part", "service", "operation"), REQUESTS)
def test_each_file_is_a_request_the_aws_api_takes(
    name: str, part: str | None, service: str, operation: str
) -> None:
    params = document(name)
    if part:
        params = params[part]
    assert problems(service, operation, params) == ""


def test_the_security_group_rules_are_requests_the_aws_api_takes() -> None:
    for rule in document("security-group-rules.json")["ingress"]:
        assert problems("ec2", "AuthorizeSecurityGroupIngress", rule) == ""


def test_the_validation_refuses_what_aws_refuses() -> None:
    definition = document("uat-task-definition.json")
    del definition["containerDefinitions"]
    assert "containerDefinitions" in problems("ecs", "RegisterTaskDefinition", definition)
    broken = {**document("codebuild-project.json"), "timeoutInMinutes": "sixty"}
    assert "timeoutInMinutes" in problems("codebuild", "CreateProject", broken)


def test_the_bots_service_builds_with_codebuild_and_starts_as_configured() -> None:
    settings = load_settings(bot_environment())
    assert settings.problems_for_serve() == []
    assert settings.uat_builder == "codebuild"
    project = document("codebuild-project.json")
    assert settings.uat_codebuild_project == project["name"]
    assert settings.uat_store == "dynamodb"  # two replicas
    assert document("ecs-service.json")["service"]["desiredCount"] == 2


def test_the_codebuild_project_runs_the_shipped_buildspec_which_pushes_the_sha_only() -> None:
    project = document("codebuild-project.json")
    path = ROOT / project["source"]["buildspec"]
    assert path == ROOT / "container" / "buildspec.yml" and path.is_file()
    assert project["environment"]["privilegedMode"] is True  # docker build needs it
    spec = yaml.safe_load(path.read_text())
    assert str(spec["version"]) == "0.2"
    commands = [c for phase in spec["phases"].values() for c in phase["commands"]]
    pushes = [c for c in commands if c.startswith("docker push")]
    assert pushes == ['docker push "$IMAGE_REPOSITORY_URI:$IMAGE_TAG"']
    assert not re.search(r":(staging|latest)\b", "\n".join(commands))
    builds = [c for c in commands if c.startswith("docker build")]
    assert builds and "$UAT_BUILD_PATH" in builds[0].replace("{", "").replace(":-container}", "")


def test_the_uat_task_definition_serves_both_ports_checks_health_and_reads_its_secrets() -> None:
    definition = document("uat-task-definition.json")
    [container] = definition["containerDefinitions"]
    assert {p["containerPort"] for p in container["portMappings"]} == {3001, 8080}
    assert "http://127.0.0.1:8080/health" in " ".join(container["healthCheck"]["command"])
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    assert {s["name"] for s in container["secrets"]} == {"ANTHROPIC_API_KEY", "GIT_TOKEN"}
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["UAT_DOMAIN"] and env["ALB_LISTENER_ARN"].startswith("arn:aws:elasticloadbalancing")
    assert bot_environment()["UAT_TASK_DEFINITION"] == definition["family"]
    assert bot_environment()["UAT_CONTAINER_NAME"] == container["name"]
    # what ECS asks of the execution role to start it is allowed by docs/iam
    policy = json.loads(
        (DOCS / "iam" / "task-execution-role-policy.json")
        .read_text()
        .replace("REGION", "us-east-1")
        .replace("ACCOUNT", "123456789012")
    )
    filled = json.loads(
        json.dumps(definition).replace("REGION", "us-east-1").replace("ACCOUNT", "123456789012")
    )
    requests = execution_role_requests(filled, "us-east-1")
    assert {r.action for r in requests} >= {"secretsmanager:GetSecretValue", "logs:PutLogEvents"}
    assert [str(r) for r in requests if not evaluate([policy], r).allowed] == []


def test_the_bot_reaches_the_uat_tasks_on_8080_through_the_security_groups() -> None:
    bot_groups = document("ecs-service.json")["service"]["networkConfiguration"][
        "awsvpcConfiguration"
    ]["securityGroups"]
    uat_groups = bot_environment()["UAT_SECURITY_GROUPS"].split(",")
    assert bot_environment()["UAT_CONTAINER_URL"].endswith(":8080")
    allowed = [
        (rule["GroupId"], permission["FromPort"], pair["GroupId"])
        for rule in document("security-group-rules.json")["ingress"]
        for permission in rule["IpPermissions"]
        for pair in permission["UserIdGroupPairs"]
    ]
    assert any(g in uat_groups and port == 8080 and s in bot_groups for g, port, s in allowed)


def test_the_readme_walk_through_names_every_file_in_docs() -> None:
    match = re.search(r"^## Deploying to AWS\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, "README has no '## Deploying to AWS' section"
    walk_through = match.group(1)
    for path in sorted(DOCS.rglob("*")):
        if path.is_file():
            name = str(path.relative_to(ROOT))
            assert f"`{name}`" in walk_through, f"{name} is not in the walk-through"
    steps = [int(n) for n in re.findall(r"^(\d+)\. \*\*", walk_through, re.M)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 6
    for words in ("manifest.yml", "webhook", "Secrets Manager", "Upgrading", "Backing up"):
        assert words in walk_through


def test_the_target_group_waits_on_healthz_and_the_container_check_restarts_on_livez() -> None:
    """Ready and alive are told apart: a replica whose store or Slack fails gets no traffic (the
    target group's check, /healthz) but is not restarted (the container's check, /livez)."""
    bot_service = document("ecs-service.json")
    group = bot_service["targetGroup"]
    assert (group["HealthCheckPath"], group["Matcher"]["HttpCode"]) == ("/healthz", "200")
    assert group["TargetType"] == "ip"  # awsvpc tasks register by address
    # ECS replaces a target that stays unhealthy: only after minutes, not a short outage
    assert group["UnhealthyThresholdCount"] * group["HealthCheckIntervalSeconds"] >= 300
    assert group["HealthCheckTimeoutSeconds"] > health.PROBE_TIMEOUT_S  # a slow probe is an answer
    [container] = bot_service["taskDefinition"]["containerDefinitions"]
    [port] = container["portMappings"]
    assert group["Port"] == port["containerPort"] == 3000
    check = " ".join(container["healthCheck"]["command"])
    assert "http://127.0.0.1:3000/livez" in check and "/healthz" not in check
    [balanced] = bot_service["service"]["loadBalancers"]
    assert balanced["targetGroupArn"].split(":targetgroup/")[1].split("/")[0] == group["Name"]
    assert (balanced["containerName"], balanced["containerPort"]) == (container["name"], 3000)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "127.0.0.1:3000/livez" in dockerfile and "/healthz" not in dockerfile
    for words in ("`/healthz`", "`/livez`", "GET /healthz", "GET /livez"):
        assert words in README


def events_requests(region: str = "REGION", account: str = "ACCOUNT") -> dict[str, Any]:
    """docs/ecs-events.json as the three requests it documents, placeholders filled in."""
    text = (DOCS / "ecs-events.json").read_text().replace("REGION", region)
    docs = json.loads(text.replace("ACCOUNT", account))
    return {
        "CreateQueue": {
            **docs["queue"],
            "Attributes": {
                **docs["queue"]["Attributes"],
                "Policy": json.dumps(docs["queuePolicy"]),
            },
        },
        "PutRule": {**docs["rule"], "EventPattern": json.dumps(docs["eventPattern"])},
        "PutTargets": docs["targets"],
        "queuePolicy": docs["queuePolicy"],
    }


def test_the_events_queue_rule_and_target_are_requests_the_aws_api_takes() -> None:
    found = events_requests()
    assert problems("sqs", "CreateQueue", found["CreateQueue"]) == ""
    assert problems("events", "PutRule", found["PutRule"]) == ""
    assert problems("events", "PutTargets", found["PutTargets"]) == ""
    # the queue lets EventBridge send only this rule's events, into this queue
    [statement] = found["queuePolicy"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    rule_arn = f"arn:aws:events:REGION:ACCOUNT:rule/{found['PutRule']['Name']}"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rule_arn}}
    [target] = found["PutTargets"]["Targets"]
    queue_arn = f"arn:aws:sqs:REGION:ACCOUNT:{found['CreateQueue']['QueueName']}"
    assert statement["Resource"] == target["Arn"] == queue_arn
    assert json.loads(found["PutRule"]["EventPattern"])["detail"]["clusterArn"] == [
        "arn:aws:ecs:REGION:ACCOUNT:cluster/uat"
    ]


def test_the_events_rule_puts_the_uat_clusters_task_changes_in_the_queue_and_no_others(
    aws_env: dict[str, str],
) -> None:
    kw = {"endpoint_url": aws_env["AWS_ENDPOINT_URL"], "region_name": "us-east-1"}
    sqs, events = boto3.client("sqs", **kw), boto3.client("events", **kw)
    found = events_requests("us-east-1", "123456789012")
    url = sqs.create_queue(**found["CreateQueue"])["QueueUrl"]
    events.put_rule(**found["PutRule"])
    events.put_targets(**found["PutTargets"])
    documented = reference("aws/ecs_task_state_change.RUNNING.awsdocs.json")
    ours = json.loads(json.dumps(documented["detail"]))
    ours["clusterArn"] = "arn:aws:ecs:us-east-1:123456789012:cluster/uat"

    for detail in (ours, documented["detail"]):  # the documented one is another cluster's
        events.put_events(
            Entries=[
                {
                    "Source": "aws.ecs",
                    "DetailType": "ECS Task State Change",
                    "Detail": json.dumps(detail),
                }
            ]
        )

    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["detail"]["clusterArn"] for m in received] == [ours["clusterArn"]]
    # what the rule delivers is what the bot reads (bot/environments/events.py)
    delivered = parse(received[0]["Body"])
    assert delivered is not None and delivered.task.arn == ours["taskArn"]
