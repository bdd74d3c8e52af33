"""What environments cost: running time and a Fargate estimate on the card, in `/uat status`
(with the total), in the idle-stop warning and on /metrics, from the task's CPU and memory."""

from __future__ import annotations

import json

import pytest

from bot import cost
from bot.config import load_settings
from bot.slack import slack_ui
from bot.store import Environment, Facts
from tests.harness.bot import Bot, BotFactory
from tests.harness.pull_requests import PR, REPO, label
from tests.harness.uat_aws import Containers, UatAccount

HOUR = 3600.0
US_EAST_1 = load_settings({"AWS_REGION": "us-east-1"})


def env(pr: int = 1, state: str = "ready", ran_s: float = HOUR, **facts: object) -> Environment:
    """A 1 vCPU / 2 GB environment launched `ran_s` before t=10,000,000."""
    now = 10_000_000.0
    values = {"launch_started": now - ran_s, "cpu": 1024, "memory": 2048, **facts}
    return Environment(REPO, pr, state, "uat", "arn:task/1", facts=Facts.from_json(values))


NOW = 10_000_000.0


def test_an_hour_of_one_vcpu_and_two_gb_costs_the_us_east_1_rates() -> None:
    # https://aws.amazon.com/fargate/pricing/ : $0.04048 per vCPU-hour, $0.004445 per GB-hour
    assert cost.estimated_cost(env(), US_EAST_1, NOW) == pytest.approx(0.04048 + 2 * 0.004445)
    assert cost.hourly_cost(env(), US_EAST_1) == pytest.approx(0.04937)


def test_the_settings_override_the_price_table() -> None:
    settings = load_settings(
        {"AWS_REGION": "eu-central-1", "UAT_PRICE_VCPU_HOUR": "0.1", "UAT_PRICE_GB_HOUR": "0.01"}
    )
    assert cost.price(settings) == cost.Price(0.1, 0.01)
    assert cost.estimated_cost(env(ran_s=2 * HOUR), settings, NOW) == pytest.approx(0.24)
    other_region = load_settings({"AWS_REGION": "eu-central-1"})
    assert cost.price(other_region) == cost.Price(*cost.FARGATE_PRICES["eu-central-1"])


def test_a_stopped_environment_costs_until_it_stopped_and_a_minute_at_least() -> None:
    stopped = env(state="stopped", ran_s=HOUR, stopped_at=NOW - HOUR + 30)
    assert cost.running_seconds(stopped, NOW) == 30
    hourly = cost.hourly_cost(stopped, US_EAST_1)
    assert hourly is not None
    assert cost.estimated_cost(stopped, US_EAST_1, NOW) == pytest.approx(hourly / 60)


def test_an_environment_of_unknown_size_shows_no_cost() -> None:
    unknown = env(cpu=0, memory=0)
    assert cost.estimated_cost(unknown, US_EAST_1, NOW) is None
    assert slack_ui.cost_line(unknown, US_EAST_1, NOW) is None


def test_the_card_shows_the_running_time_and_the_estimate() -> None:
    _, blocks = slack_ui.environment_card(env(ran_s=2 * HOUR), US_EAST_1, NOW)
    shown = json.dumps(blocks)
    assert "*Cost*" in shown
    assert "~$0.10 for 2h00m (1 vCPU, 2 GB at $0.05/h)" in shown


def test_status_totals_the_active_environments() -> None:
    envs = [env(1, ran_s=2 * HOUR), env(2, ran_s=4 * HOUR), env(3, cpu=0)]
    _, blocks = slack_ui.environments_overview(envs, US_EAST_1, NOW)
    shown = json.dumps(blocks)
    total = 6 * 0.04937
    assert f"*Total*: {cost.about(total)} so far, {cost.dollars(2 * 0.04937)}/h" in shown
    assert shown.count("vCPU") == 2  # the one of unknown size shows no estimate


def test_the_idle_warning_says_what_extending_costs() -> None:
    settings = load_settings({"AWS_REGION": "us-east-1", "UAT_IDLE_HOURS": "8"})
    text, _ = slack_ui.idle_warning(env(idle_until=NOW + 600), settings)
    assert f"Extending keeps it 8h longer, for {cost.about(8 * 0.04937)}" in text


@pytest.fixture
async def uat(make_bot: BotFactory, account: UatAccount, containers: Containers) -> Bot:
    bot: Bot = await make_bot(**account.env(containers.url))
    await bot.settle_startup()
    return bot


async def test_a_launch_records_the_tasks_size_and_metrics_export_the_estimate(
    uat: Bot, containers: Containers
) -> None:
    await label(uat)
    launched = await uat.runtime.services.store.get_environment(REPO, PR)
    assert launched is not None
    assert (launched.facts.cpu, launched.facts.memory) == (1024, 2048)  # the base definition's
    envs = uat.runtime.services.environments
    envs.clock = lambda: (launched.facts.launch_started or 0) + HOUR
    containers.ready(PR)
    await envs.poll()
    async with uat.http.get(f"{uat.url}/metrics") as response:
        metrics = await response.text()
    assert "uat_environments_estimated_cost_usd 0.04937" in metrics
    assert "uat_environments_estimated_cost_usd_per_hour 0.04937" in metrics
    await uat.slash("status")
    await uat.settle()
    overview = json.dumps(uat.slack.responses[-1].body)
    assert "*Total*: ~$0.05 so far" in overview
