"""The soak's checker (bench/soak/checker.py) on recorded histories: a history that kept every
promise passes, and each known violation is reported under its own invariant, so the soak
cannot pass by checking nothing."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from bench.soak import checker
from bench.soak.checker import Command, EnvRow, History, Posted, Task, check
from bench.soak.driver import follow_stops
from bot.slack import slack_ui
from bot.store import Environment, State

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


def stop_answered(*texts: str, ack: str = "") -> History:
    history = History(REPO, CHANNEL, wanted={2: "uat"})
    history.commands.append(Command("R1", "/uat stop", 2, True, "R1", ack, effect="stop"))
    follow_stops(history, {"R1": list(texts)} if texts else {})
    return history


def test_a_stop_answered_stopping_or_never_answered_means_nothing_should_run() -> None:
    stopping = slack_ui.stopping(Environment(REPO, 2, State.RUNNING))
    assert stop_answered(stopping).wanted == {2: None}
    assert stop_answered().wanted == {2: None}  # the ack was a promise


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
