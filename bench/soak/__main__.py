"""`make soak`: the real `uat-bot serve` under a mixed load with faults, then its invariants.

Two phases share SOAK_MINUTES (default 5): two replicas on DynamoDB (two thirds of the time),
then one on SQLite. Each phase gets a fresh moto state and a fresh Slack stub record; the
driver (bench/soak/driver.py) sends its mix and injects its faults, every fault is lifted, and
the system is given up to SETTLE_S to settle before the invariants (bench/soak/checker.py) are
checked. One table is printed; the exit status is 1 when any invariant was violated.

`SOAK_SEED=<n>` replays a run's choices (the timing of a real system still varies);
`SOAK_KEEP=1` keeps the replicas' logs and each PR's timeline (bench/soak/timeline.py) and
names their folder.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from bench.environments import moto_server, reset_moto
from bench.soak.checker import INVARIANTS, History, Violation, check
from bench.soak.driver import Driver, Phase
from bench.soak.timeline import of_violations, stories, write_timeline
from bench.soak.world import AwsFaults, PromptServers, Replicas, replica_env
from bot.app import build_store
from bot.config import load_settings
from bot.environments import LAUNCH_LEASE_S
from tests.harness.bot import BOT_TOKEN
from tests.harness.slack_stub import SlackStub
from tests.harness.uat_aws import set_up_account

SETTLE_S = 60.0  # a launch a kill cut waits out its lease (15 s); a watcher round is 1 s
MIN_SETTLE_S = 2 * LAUNCH_LEASE_S  # a launch a kill cut is resumed once its lease lapsed
STABLE_S = 10.0  # violations unchanged this long after that are not going away
PHASES = (
    Phase("2 replicas, DynamoDB", "dynamodb", 2, first_pr=100),
    Phase("1 replica, SQLite", "sqlite", 1, first_pr=200),
)
SHARES = (2 / 3, 1 / 3)


class Outcome:
    """A phase's counts and violations, for the table."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.operations: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.violations: list[Violation] = []
        self.checked: Counter[str] = Counter()
        self.settle_s = 0.0
        self.stories: list[str] = []  # the timelines of the PRs its violations name


async def run_phase(
    phase: Phase, seconds: float, endpoint: str, slack: SlackStub, folder: Path, seed: int
) -> Outcome:
    reset_moto(endpoint)
    account = set_up_account(endpoint)
    slack.reset()
    outcome = Outcome(phase.name)
    prompts, aws = PromptServers(), AwsFaults(endpoint)
    await prompts.start()
    await aws.start()
    if phase.store == "dynamodb":
        store_env = {"UAT_STORE": "dynamodb", "UAT_DYNAMODB_TABLE": "uat-bot-soak"}
        sqlite_db = None
    else:
        sqlite_db = str(folder / phase.store / "uat-bot.db")
        store_env = {"UAT_STORE": "sqlite", "UAT_DB": sqlite_db}
    (folder / phase.store).mkdir(parents=True, exist_ok=True)
    env = replica_env(slack, account, prompts, aws.url, folder / phase.store, store_env)
    replicas = Replicas.make(env, folder / phase.store, phase.replicas)
    # the checker reads the store directly, not through the faulty proxy
    store = build_store(load_settings({**env, "AWS_ENDPOINT_URL": endpoint}))
    try:
        await replicas.start()
        await store.open()
        async with aiohttp.ClientSession() as http:
            driver = Driver(
                phase, slack, replicas, aws, prompts, http, random.Random(seed), sqlite_db
            )
            await driver.run(seconds)
            aws.clear()
            await asyncio.sleep(3.5)  # the last Slack window lapses
            await replicas.ensure_up()
            started = changed = time.monotonic()
            violations = check(await driver.record(store, account.ecs))
            while violations and time.monotonic() - started < SETTLE_S:
                await asyncio.sleep(2)
                before, violations = violations, check(await driver.record(store, account.ecs))
                if violations != before:
                    changed = time.monotonic()
                elif time.monotonic() - changed > STABLE_S and (
                    time.monotonic() - started > MIN_SETTLE_S
                ):
                    break  # what is left is not settling: a lost command, a duplicate, ...
            outcome.settle_s = time.monotonic() - started
            outcome.operations, outcome.faults = driver.operations, driver.faults
            outcome.violations = violations
            outcome.checked = checked(driver.history)
            if violations:  # where each replica's tasks wait, into its log (SOAK_KEEP=1)
                for bot in replicas.up():
                    if bot.proc is not None:
                        bot.proc.send_signal(signal.SIGUSR1)
                await asyncio.sleep(1.0)
            told = stories(driver.history, await store.list_environments(), slack)
            outcome.stories = of_violations(told, [v.detail for v in violations])
            if os.environ.get("SOAK_KEEP") == "1":
                write_timeline(folder / phase.store / "timeline.txt", told)
    finally:
        await replicas.stop()
        await store.close()
        await aws.stop()
        await prompts.stop()
    return outcome


def checked(history: History) -> Counter[str]:
    """How much the invariants were checked against, so an empty world cannot pass unseen."""
    return Counter(
        {
            "acked commands": sum(c.acked for c in history.commands),
            "environments in the store": len(history.envs),
            "environments wanted running": sum(v is not None for v in history.wanted.values()),
            "tasks started": len(history.tasks),
            "tasks running": sum(t.running for t in history.tasks),
            "messages in the channel": len(history.messages),
            "messages stored but answered as failed": sum(
                m.answered_failure for m in history.messages
            ),
        }
    )


def table(outcomes: list[Outcome]) -> str:
    names = [o.name for o in outcomes]
    rows: list[tuple[str, ...]] = [("", *names, "total")]

    def section(title: str, counts: list[Counter[str]], keys: list[str]) -> None:
        rows.append((title.upper(), *[""] * len(names), ""))
        for key in keys:
            values = [c.get(key, 0) for c in counts]
            rows.append((f"  {key}", *map(str, values), str(sum(values))))

    operations = [o.operations for o in outcomes]
    section("operations", operations, sorted(set().union(*operations)))
    faults = [o.faults for o in outcomes]
    section("faults injected", faults, sorted(set().union(*faults)))
    looked = [o.checked for o in outcomes]
    section("checked against", looked, list(outcomes[0].checked))
    violated = [Counter(v.invariant for v in o.violations) for o in outcomes]
    section("violations (0 expected)", violated, list(INVARIANTS))
    rows.append(("settled after (s)", *[f"{o.settle_s:.0f}" for o in outcomes], ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        " | ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


async def main() -> int:
    minutes = float(os.environ.get("SOAK_MINUTES", "5"))
    seed = int(os.environ.get("SOAK_SEED", str(int(time.time()))))
    print(f"soak: {minutes:g} minute(s), SOAK_SEED={seed}", file=sys.stderr, flush=True)
    outcomes = []
    began = time.monotonic()
    keep = os.environ.get("SOAK_KEEP") == "1"
    folder = tempfile.mkdtemp(prefix="uat-soak-")
    with moto_server() as endpoint:
        async with SlackStub(token=BOT_TOKEN) as slack:
            for phase, share in zip(PHASES, SHARES, strict=True):
                print(f"soak: {phase.name} ...", file=sys.stderr, flush=True)
                outcome = await run_phase(
                    phase, minutes * 60 * share, endpoint, slack, Path(folder), seed
                )
                outcomes.append(outcome)
    if keep:
        print(f"soak: the replicas' logs are kept in {folder}", file=sys.stderr)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    print(table(outcomes))
    print(f"soak: {time.monotonic() - began:.0f} s in all, SOAK_SEED={seed}")
    violations = [(o.name, v) for o in outcomes for v in o.violations]
    for name, violation in violations:
        print(f"VIOLATION [{name}] {violation.invariant}: {violation.detail}")
    for outcome in outcomes:
        if outcome.stories:
            print(f"TIMELINES [{outcome.name}] (seconds from the phase's first Slack call):")
            print("\n".join(outcome.stories))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
