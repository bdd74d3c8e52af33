"""What a PR environment costs while it runs: its task's vCPU and memory at Fargate's prices.

Fargate bills a task's configured vCPU and memory per second (one minute at least). The prices
below are on-demand Linux/x86 rates in USD from the AWS Fargate pricing page,
https://aws.amazon.com/fargate/pricing/ , recorded on 2026-11-30 (us-east-1: $0.04048 per
vCPU-hour, $0.004445 per GB-hour, the rate published since 2019 and still quoted in 2026; the
other regions' as the page listed them, not re-read that day: check them against the page). A
region not in the table is priced as us-east-1;
UAT_PRICE_VCPU_HOUR and UAT_PRICE_GB_HOUR replace the table (Savings Plans, Spot, ARM, another
region). It is an estimate: storage beyond 20 GB, data transfer, the load balancer and logs are
not in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import Settings
from bot.store.records import ENDED, Environment

# region -> (USD per vCPU-hour, USD per GB-hour), Linux/x86 on-demand
FARGATE_PRICES: dict[str, tuple[float, float]] = {
    "us-east-1": (0.04048, 0.004445),
    "us-east-2": (0.04048, 0.004445),
    "us-west-2": (0.04048, 0.004445),
    "eu-west-1": (0.04048, 0.004445),
    "eu-central-1": (0.04656, 0.00511),
    "eu-west-2": (0.04656, 0.00511),
    "ap-southeast-2": (0.04856, 0.00532),
    "ap-northeast-1": (0.05056, 0.00553),
    "ap-southeast-1": (0.05056, 0.00553),
}
DEFAULT_REGION = "us-east-1"
MINIMUM_S = 60.0  # Fargate bills one minute at least


@dataclass(frozen=True)
class Price:
    """USD per vCPU-hour and per GB-hour."""

    vcpu_hour: float
    gb_hour: float

    def hourly(self, cpu_units: int, memory_mib: int) -> float:
        """What a task of `cpu_units` (1024 a vCPU) and `memory_mib` costs an hour."""
        return cpu_units / 1024 * self.vcpu_hour + memory_mib / 1024 * self.gb_hour

    def cost(self, cpu_units: int, memory_mib: int, seconds: float) -> float:
        """What such a task costs for `seconds` of running (a minute at least)."""
        return self.hourly(cpu_units, memory_mib) * max(seconds, MINIMUM_S) / 3600


def price(settings: Settings) -> Price:
    """The prices for the bot's region, each replaced by its UAT_PRICE_* setting when set."""
    vcpu, gb = FARGATE_PRICES.get(settings.aws_region or "", FARGATE_PRICES[DEFAULT_REGION])
    if settings.uat_price_vcpu_hour is not None:
        vcpu = settings.uat_price_vcpu_hour
    if settings.uat_price_gb_hour is not None:
        gb = settings.uat_price_gb_hour
    return Price(vcpu, gb)


def dollars(amount: float) -> str:
    """`$0.42`, or `<$0.01` for less than a cent."""
    return "<$0.01" if 0 < amount < 0.005 else f"${amount:,.2f}"


def about(amount: float) -> str:
    """An estimate: `~$0.42`, or `<$0.01`."""
    shown = dollars(amount)
    return shown if shown.startswith("<") else f"~{shown}"


def running_seconds(env: Environment, now: float) -> float:
    """How long its task has run: from its launch to its stop (or to `now`)."""
    started = env.facts.launch_started
    if started is None:
        return 0.0
    ended = env.facts.stopped_at if env.state in ENDED and env.facts.stopped_at else now
    return max(0.0, ended - started)


def hourly_cost(env: Environment, settings: Settings) -> float | None:
    """What its task costs an hour, or None when its size is not known."""
    if not (env.facts.cpu and env.facts.memory):
        return None
    return price(settings).hourly(env.facts.cpu, env.facts.memory)


def estimated_cost(env: Environment, settings: Settings, now: float) -> float | None:
    """Its estimated cost so far, or None when its task's size is not known."""
    if not (env.facts.cpu and env.facts.memory and env.facts.launch_started):
        return None
    return price(settings).cost(env.facts.cpu, env.facts.memory, running_seconds(env, now))
