"""UAT_CONTAINER_URL and UAT_APP_URL are filled by one function: every placeholder, from the
environment as recorded or from the task ECS just described."""

from __future__ import annotations

from bot.aws.gateways import TaskInfo
from bot.config import load_settings
from bot.slack import slack_ui
from bot.store import Environment, Facts, State
from bot.urls import PLACEHOLDERS, environment_url

TEMPLATE = "https://{session}.uat.example.com/{pr}/{task_id}/{ip}/"
ENV = Environment(
    "acme/web",
    7,
    State.READY,
    task_arn="arn:aws:ecs:us-east-1:123456789012:task/uat/0a1b2c3d",
    facts=Facts(session="pr7-0a1b2c3d", task_ip="10.0.3.4"),
)


def test_every_placeholder_is_filled_from_the_environment() -> None:
    assert set(PLACEHOLDERS) == {"session", "pr", "task_id", "ip"}
    assert (
        environment_url(TEMPLATE, ENV) == "https://pr7-0a1b2c3d.uat.example.com/7/0a1b2c3d/10.0.3.4"
    )


def test_a_described_task_gives_its_own_address_and_id() -> None:
    arn = "arn:aws:ecs:us-east-1:123456789012:task/uat/ffff"
    task = TaskInfo(arn, "RUNNING", "RUNNING", private_ip="10.0.9.9")
    assert (
        environment_url(TEMPLATE, ENV, task)
        == "https://pr7-0a1b2c3d.uat.example.com/7/ffff/10.0.9.9"
    )


def test_the_app_link_and_the_container_url_agree_for_one_template() -> None:
    settings = load_settings({"UAT_APP_URL": TEMPLATE, "UAT_CONTAINER_URL": TEMPLATE})
    assert slack_ui.app_url(ENV, settings) == environment_url(settings.uat_container_url, ENV)
    assert slack_ui.app_url(ENV, load_settings({})) is None
