"""The ECS/ELBv2 gateway against moto's server, where AWS answers more than moto does by
default: a listener with more rules than one DescribeRules page, and a task definition whose
description carries fields RegisterTaskDefinition does not take back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3

from bot.aws.gateways import Ecs
from bot.config import load_settings
from tests.harness.uat_aws import BASE_FAMILY, CONTAINER, OWN_FAMILY, UatAccount

FORWARD_404 = [
    {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}},
]


def listener_with_rules(account: UatAccount, count: int) -> tuple[str, list[str]]:
    """An ALB listener with `count` host-header rules (priorities 1..count): its ARN, the rules'."""
    elb = boto3.client("elbv2", endpoint_url=account.endpoint, region_name="us-east-1")
    [subnet] = account.ec2.describe_subnets(SubnetIds=[account.subnet])["Subnets"]
    other = account.ec2.create_subnet(
        VpcId=subnet["VpcId"], CidrBlock="10.0.2.0/24", AvailabilityZone="us-east-1b"
    )["Subnet"]["SubnetId"]
    lb = elb.create_load_balancer(Name="uat", Subnets=[account.subnet, other])
    listener = elb.create_listener(
        LoadBalancerArn=lb["LoadBalancers"][0]["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=FORWARD_404,
    )["Listeners"][0]["ListenerArn"]
    rules = [
        elb.create_rule(
            ListenerArn=listener,
            Priority=priority,
            Conditions=[{"Field": "host-header", "Values": [f"h{priority}.uat.example.com"]}],
            Actions=FORWARD_404,
        )["Rules"][0]["RuleArn"]
        for priority in range(1, count + 1)
    ]
    return listener, rules


async def test_cleanup_sees_a_sessions_rule_past_the_first_describe_rules_page(
    account: UatAccount,
) -> None:
    listener, rules = listener_with_rules(account, 60)  # moto answers 50 rules a page
    elb = boto3.client("elbv2", endpoint_url=account.endpoint, region_name="us-east-1")
    elb.add_tags(ResourceArns=[rules[-1]], Tags=[{"Key": "SESSION_ID", "Value": "pr9-late"}])
    settings = load_settings({**account.env("http://{ip}:8080"), "UAT_ALB_LISTENER_ARN": listener})
    ecs = Ecs(settings)

    assert (rules[-1], "pr9-late") in await ecs.routing()
    assert ecs.calls["DescribeRules"] >= 2
    assert await ecs.remove_routing("pr9-late") == [rules[-1]]
    left = elb.describe_rules(ListenerArn=listener, PageSize=100)["Rules"]
    assert rules[-1] not in [r["RuleArn"] for r in left] and len(left) == 60  # 59 + default


async def test_a_description_with_fields_register_does_not_take_is_registered_back_without_them(
    account: UatAccount,
) -> None:
    session = boto3.session.Session()
    added: list[str] = []

    def as_aws_answers(parsed: dict[str, Any], **_: Any) -> None:
        """AWS describes a task definition with fields moto leaves out."""
        parsed["taskDefinition"]["deleteRequestedAt"] = datetime(2030, 1, 1, tzinfo=UTC)
        parsed["taskDefinition"]["registeredBy"] = "arn:aws:iam::123456789012:user/ops"
        added.append("deleteRequestedAt")

    session.events.register("after-call.ecs.DescribeTaskDefinition", as_aws_answers)
    ecs = Ecs(load_settings(account.env("http://{ip}:8080")), session)
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/test-tickets-uat@sha256:" + "ab" * 32

    arn = await ecs.register_pinned(BASE_FAMILY, OWN_FAMILY, CONTAINER, image, {"pr": "9"})

    assert added == ["deleteRequestedAt"]
    assert account.image_of(arn) == image
    registered = account.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert (registered["family"], registered["cpu"]) == (OWN_FAMILY, "1024")
