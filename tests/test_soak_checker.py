"""The soak's checker (bench/soak/checker.py) on recorded histories: a history that kept every
promise passes, and each known violation is reported under its own invariant, so the soak
cannot pass by checking nothing."""

from __future__ import annotations

import dataclasses
from collections import Counter
from types import SimpleNamespace
from typing import cast

import pytest

from bench.soak import checker
from bench.soak.checker import Command, EnvRow, History, Posted, Task, check
from bench.soak.driver import follow_stops
from bench.soak.timeline import of_violations, stories
from bot.slack import slack_ui
from bot.store import Environment, State
from tests.harness.slack_stub import SlackStub
from tests.harness.slack_stub.records import Call, Response

REPO = "Codertocat/Hello-World"
CHANNEL = "C0UAT"


def card(pr: int, ts: str, state: str) -> Posted:
    return Posted(CHANNEL, ts, None, f"{REPO}#{pr} PR {pr} — {state}", key=f"card-{pr}")


def kept_every_promise() -> History:
    """PR 1 runs `uat`; PR 2 was stopped by a command; PR 3 was unlabelled; one prompt was
    relayed, one status answered, one Cancel click reached the container."""
    return History(
        REPO,
        CHANNEL,
        commands=[
            Command("R1", "/uat prompt", 1, True, "R1", effect="prompt", marker="do it"),
            Command("R2", "/uat status", 1, True, "R2"),
            Command("R3", "/uat stop", 2, True, "R3", effect="stop"),
            Command("R4", "click Cancel", 1, True, "R4", effect="cancel", marker="job1"),
            Command("R5", "/uat status", 1, False, "R5"),  # never acked: nothing promised
        ],
        answers={"R2": 1, "R3": 1},
        prompts_received=Counter({"do it": 1}),
        cancels_received={"job1"},
        wanted={1: "uat", 2: None, 3: None},
        tasks=[
            Task("arn:1", 1, "s1", running=True),
            Task("arn:2", 2, "s2", running=False),
            Task("arn:3", 3, "s3", running=False),
        ],
        envs={
            1: EnvRow(1, "ready", "uat", "arn:1", "s1", "100.1"),
            2: EnvRow(2, "stopped", "uat", "arn:2", "s2", "100.2"),
            3: EnvRow(3, "stopped", "uat", "arn:3", "s3", "100.3"),
        },
        messages=[
            card(1, "100.1", "ready"),
            card(2, "100.2", "stopped"),
            card(3, "100.3", "stopped"),
            Posted(CHANNEL, "101.0", "100.1", "#1 is ready", answered_failure=True),
            Posted(CHANNEL, "300.0", "100.1", "#1 is ready"),  # much later: a new launch's
        ],
    )


def invariants(history: History) -> set[str]:
    return {v.invariant for v in check(history)}


def test_a_history_that_kept_every_promise_has_no_violation() -> None:
    assert check(kept_every_promise()) == []


def test_an_acked_command_neither_done_nor_answered_is_reported() -> None:
    history = kept_every_promise()
    history.commands.append(Command("R6", "/uat stop", 1, True, "R6", effect="stop"))
    [violation] = check(history)
    assert violation.invariant == checker.ACKED_COMMANDS and "R6" in violation.detail


def test_an_acked_prompt_that_never_reached_the_container_is_reported() -> None:
    history = kept_every_promise()
    history.prompts_received.clear()
    assert invariants(history) == {checker.ACKED_COMMANDS}


def test_a_prompt_that_reached_the_container_twice_is_reported() -> None:
    history = kept_every_promise()
    history.prompts_received["do it"] += 1
    [violation] = check(history)
    assert violation.invariant == checker.ACKED_COMMANDS and "2 times" in violation.detail


def test_a_lost_cancel_click_is_reported() -> None:
    history = kept_every_promise()
    history.cancels_received.clear()
    assert invariants(history) == {checker.ACKED_COMMANDS}


def test_a_command_answered_in_its_ack_counts_as_answered() -> None:
    history = kept_every_promise()
    history.commands.append(Command("R6", "/uat nope", 1, True, "R6", ack_body="did you mean"))
    assert check(history) == []


def test_two_tasks_for_one_pr_are_reported() -> None:
    history = kept_every_promise()
    history.tasks.append(Task("arn:1b", 1, "s1b", running=True))
    assert checker.ONE_TASK in invariants(history)


def test_two_threads_for_one_pr_are_reported() -> None:
    history = kept_every_promise()
    history.messages.append(dataclasses.replace(card(1, "102.0", "ready"), key="card-1b"))
    assert invariants(history) == {checker.ONE_THREAD}


def test_a_task_no_environment_owns_is_an_orphan() -> None:
    history = kept_every_promise()
    history.tasks.append(Task("arn:9", 9, "s9", running=True))
    assert invariants(history) == {checker.NO_ORPHAN}


def test_a_task_left_running_after_an_acked_stop_is_unwanted() -> None:
    history = kept_every_promise()
    history.tasks[1] = Task("arn:2", 2, "s2", running=True)
    history.envs[2] = EnvRow(2, "ready", "uat", "arn:2", "s2", "100.2")
    history.messages[1] = card(2, "100.2", "ready")
    history.answers.pop("R3")
    assert invariants(history) == {checker.NO_ORPHAN, checker.ACKED_COMMANDS}


def test_an_environment_stopped_that_should_run_is_reported() -> None:
    history = kept_every_promise()
    history.tasks[0] = Task("arn:1", 1, "s1", running=False)
    history.envs[1] = EnvRow(1, "failed", "uat", "arn:1", "s1", "100.1")
    history.messages[0] = card(1, "100.1", "failed")
    assert invariants(history) == {checker.NOT_WRONGLY_STOPPED}


def test_a_launch_that_failed_before_any_task_is_reported_as_not_launched() -> None:
    history = kept_every_promise()
    history.tasks.pop(0)
    history.envs[1] = EnvRow(1, "failed", "uat", None, "s1", "100.1", "AWS RunTask failed")
    history.messages[0] = card(1, "100.1", "failed")
    [violation] = check(history)
    assert violation.invariant == checker.LAUNCHED and "RunTask" in violation.detail


def test_an_environment_on_the_wrong_label_is_reported() -> None:
    history = kept_every_promise()
    history.wanted[1] = "uat-staging"
    assert invariants(history) == {checker.NOT_WRONGLY_STOPPED}


def test_a_key_posted_twice_is_a_duplicate() -> None:
    history = kept_every_promise()
    history.messages.append(Posted(CHANNEL, "103.0", "100.1", "result", key="result-job1"))
    history.messages.append(Posted(CHANNEL, "104.0", "100.1", "result", key="result-job1"))
    assert invariants(history) == {checker.NO_DUPLICATE}


def test_a_post_stored_but_answered_as_failed_and_posted_again_is_a_duplicate() -> None:
    history = kept_every_promise()
    history.messages.append(Posted(CHANNEL, "102.5", "100.1", "#1 is ready"))
    [violation] = check(history)
    assert violation.invariant == checker.NO_DUPLICATE and "102.5" in violation.detail


def test_a_card_that_disagrees_with_the_store_is_not_converged() -> None:
    history = kept_every_promise()
    history.messages[0] = card(1, "100.1", "starting")
    assert invariants(history) == {checker.CONVERGED}


def test_a_live_environment_whose_task_is_gone_is_not_converged() -> None:
    history = kept_every_promise()
    history.envs[1] = EnvRow(1, "ready", "uat", "arn:gone", "s0", "100.1")
    assert checker.CONVERGED in invariants(history)


@pytest.mark.parametrize("state", ["starting", "provisioning", "stopping", "new"])
def test_an_environment_still_in_between_is_not_converged(state: str) -> None:
    history = kept_every_promise()
    history.envs[3] = EnvRow(3, state, "uat", "arn:3", "s3", "100.3")
    history.messages[2] = card(3, "100.3", state)
    assert checker.CONVERGED in invariants(history)


def stop_answered(*texts: str, ack: str = "", acked: bool = True) -> History:
    history = History(REPO, CHANNEL, wanted={2: "uat"})
    history.commands.append(Command("R1", "/uat stop", 2, acked, "R1", ack, effect="stop"))
    follow_stops(history, {"R1": list(texts)} if texts else {})
    return history


def test_a_stop_answered_stopping_or_never_answered_means_nothing_should_run() -> None:
    stopping = slack_ui.stopping(Environment(REPO, 2, State.RUNNING))
    assert stop_answered(stopping).wanted == {2: None}
    assert stop_answered().wanted == {2: None}  # the ack was a promise


def test_a_stop_whose_ack_slack_never_got_but_answered_stopping_means_nothing_should_run() -> None:
    # the ack came too late for Slack (its sender saw a timeout), yet the stop was recorded in
    # time, ran and said so: its sender was told, so the environment must not run
    stopping = slack_ui.stopping(Environment(REPO, 2, State.RUNNING))
    assert stop_answered(stopping, acked=False).wanted == {2: None}
    assert stop_answered(acked=False).wanted == {2: "uat"}  # neither promised nor told


def test_a_stop_answered_with_a_refusal_leaves_the_environment_wanted() -> None:
    assert stop_answered("Something went wrong (ref abc123).").wanted == {2: "uat"}


def test_a_stop_refused_in_its_ack_as_not_recorded_leaves_the_environment_wanted() -> None:
    # the bot could not store the command (a store outage), said so in the ack and never ran
    # it: its environment keeps running, as its sender was told
    history = stop_answered(ack=slack_ui.NOT_RECORDED)
    assert history.wanted == {2: "uat"}
    history.tasks = [Task("arn:2", 2, "s2", running=True)]
    history.envs = {2: EnvRow(2, "ready", "uat", "arn:2", "s2", "100.2")}
    assert checker.NO_ORPHAN not in invariants(history)


def test_a_violations_timeline_tells_the_story_of_the_pr_it_names_in_order() -> None:
    history = History(REPO, CHANNEL)
    history.webhooks = [(100.5, 2, "labeled uat"), (100.6, 3, "labeled uat")]
    history.commands = [Command("R1", "/uat stop", 2, True, "R1", at=101.0)]
    history.faults = [(100.8, "SIGKILL replica 0")]
    card = {"channel": CHANNEL, "text": "#2 — starting"}
    slack = SimpleNamespace(
        calls=[
            Call("chat.postMessage", card, {}, response={"ok": True, "ts": "1.1"}, at=100.0),
            Call("chat.update", {"ts": "1.1", "text": "#2 — stopped"}, {}, at=101.5),
            Call("chat.postMessage", {"thread_ts": "1.1", "text": "stopped"}, {}, at=101.6),
        ],
        responses=[Response("R1", {"text": "Stopping #2"}, {}, at=101.2)],
    )
    envs = [
        Environment(REPO, 2, State.STOPPED, "uat", thread_ts="1.1"),
        Environment(REPO, 3, State.READY, "uat", thread_ts="2.2"),
    ]
    told = stories(history, envs, cast(SlackStub, slack))
    lines = of_violations(told, ["#2: the card says 'starting', the store stopped"])
    assert lines[0].startswith("== #2: stopped")
    assert [line.split(None, 1)[1] for line in lines[3:]] == [
        "chat.postMessage card: '#2 — starting'",
        "webhook labeled uat",
        "FAULT SIGKILL replica 0",
        "/uat stop acked=True ''",
        "answer to /uat stop: 'Stopping #2'",
        "chat.update card: '#2 — stopped'",
        "chat.postMessage thread: 'stopped'",
    ]
    assert of_violations(told, ["#9: gone"]) == []
