"""The soak's invariants, checked on a recorded history: what the driver sent and what it meant,
and what the world looked like once the system had settled.

Plain data in, violations out: `check(history)` reads nothing live, so a test can feed it a
history with a known violation and see that violation reported (tests/test_soak_checker.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

# The invariants, in the order the table shows them.
ACKED_COMMANDS = "every acked command took effect (once) or was answered"
ONE_TASK = "every PR has at most one task"
ONE_THREAD = "every PR has at most one thread"
NO_ORPHAN = "no orphan or unwanted task"
NOT_WRONGLY_STOPPED = "no wrongly stopped environment"
LAUNCHED = "every wanted environment was launched"
NO_DUPLICATE = "no message posted twice"
CONVERGED = "every environment converged"
INVARIANTS = (
    ACKED_COMMANDS,
    ONE_TASK,
    ONE_THREAD,
    NO_ORPHAN,
    NOT_WRONGLY_STOPPED,
    LAUNCHED,
    NO_DUPLICATE,
    CONVERGED,
)

LIVE = frozenset({"starting", "provisioning", "running", "ready"})
SETTLED = frozenset({"running", "ready"})  # what a wanted environment is once settled
# A message stored while its post was answered with a failure, posted again this soon with the
# same text in the same place, is that post repeated.
RETRY_WINDOW_S = 120.0


@dataclass
class Command:
    """One slash command or button click the driver sent, and how it was acknowledged.

    `effect` names what the command does that can be seen from outside: "prompt" (the
    container received `marker` as a prompt), "cancel" (the container was asked to cancel job
    `marker`), "stop" (the PR's environment is stopped); "" when only an answer shows it."""

    id: str
    kind: str
    pr: int
    acked: bool
    response_url: str  # the id of the response_url it carried
    ack_body: str = ""
    effect: str = ""
    marker: str = ""
    at: float = 0.0  # when it was sent (time.time())


@dataclass(frozen=True)
class Task:
    """A task ECS runs (or has stopped), as its tags describe it."""

    arn: str
    pr: int | None
    session: str
    running: bool
    managed: bool = True


@dataclass(frozen=True)
class EnvRow:
    """One environment as the store holds it."""

    pr: int
    state: str
    label: str
    task_arn: str | None
    session: str
    thread_ts: str | None
    reason: str = ""  # why it failed or stopped, as the store says


@dataclass(frozen=True)
class Posted:
    """A message Slack stored: where, what, its key (metadata), and whether the post that
    stored it was answered with a failure (Slack stored it, the bot was told it failed)."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str
    key: str = ""
    answered_failure: bool = False

    @property
    def root(self) -> bool:
        return self.thread_ts in (None, self.ts)


@dataclass
class History:
    """Everything the checker needs: the driver's record and the settled world."""

    repo: str
    channel: str
    commands: list[Command] = field(default_factory=list)
    answers: dict[str, int] = field(default_factory=dict)  # response_url id -> posts that landed
    prompts_received: Counter[str] = field(default_factory=Counter)  # prompt text -> times
    cancels_received: set[str] = field(default_factory=set)
    wanted: dict[int, str | None] = field(default_factory=dict)  # PR -> label that should run
    tasks: list[Task] = field(default_factory=list)
    envs: dict[int, EnvRow] = field(default_factory=dict)
    messages: list[Posted] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)  # (time.time(), what)
    webhooks: list[tuple[float, int, str]] = field(default_factory=list)  # (time, PR, what)

    def faults_near(self, at: float) -> str:
        """The faults injected from 10 s before `at` to 5 s after, to explain a violation."""
        near = [
            f"{what} at {when - at:+.1f} s" for when, what in self.faults if -10 <= when - at <= 5
        ]
        return f" (faults: {'; '.join(near)})" if near else " (no fault near it)"


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str


def check(history: History) -> list[Violation]:
    """Every violation of every invariant in `history` (none when the system kept its word)."""
    return [
        *acked_commands(history),
        *one_task(history),
        *one_thread(history),
        *no_orphan(history),
        *not_wrongly_stopped(history),
        *launched(history),
        *no_duplicate(history),
        *converged(history),
    ]


def acked_commands(history: History) -> list[Violation]:
    found = []
    for command in history.commands:
        times = history.prompts_received[command.marker] if command.effect == "prompt" else 0
        if times > 1:
            detail = (
                f"{command.kind} #{command.pr} ({command.id}): reached the container {times} times"
            )
            found.append(Violation(ACKED_COMMANDS, detail))
        if not command.acked or command.ack_body.strip():
            continue  # never promised, or answered in the ack itself
        if history.answers.get(command.response_url, 0) > 0 or took_effect(history, command):
            continue
        found.append(
            Violation(
                ACKED_COMMANDS,
                f"{command.kind} #{command.pr} ({command.id}): acked, neither done nor answered"
                + history.faults_near(command.at),
            )
        )
    return found


def took_effect(history: History, command: Command) -> bool:
    if command.effect == "prompt":
        return history.prompts_received[command.marker] > 0
    if command.effect == "cancel":
        return command.marker in history.cancels_received
    if command.effect == "stop":
        env = history.envs.get(command.pr)
        return env is not None and env.state not in LIVE
    return False


def _running_by_pr(history: History) -> dict[int, list[Task]]:
    by_pr: dict[int, list[Task]] = defaultdict(list)
    for task in history.tasks:
        if task.running and task.managed and task.pr is not None:
            by_pr[task.pr].append(task)
    return by_pr


def one_task(history: History) -> list[Violation]:
    return [
        Violation(
            ONE_TASK, f"#{pr}: {len(tasks)} tasks run ({', '.join(t.session for t in tasks)})"
        )
        for pr, tasks in sorted(_running_by_pr(history).items())
        if len(tasks) > 1
    ]


def _card_pr(history: History, message: Posted) -> int | None:
    """The PR a root message in the UAT channel is the card of (its text starts `repo#n `)."""
    prefix = f"{history.repo}#"
    if message.channel != history.channel or not message.text.startswith(prefix):
        return None
    number = message.text[len(prefix) :].split(" ", 1)[0]
    return int(number) if number.isdigit() else None


def _cards(history: History) -> dict[int, list[Posted]]:
    cards: dict[int, list[Posted]] = defaultdict(list)
    for message in history.messages:
        pr = _card_pr(history, message) if message.root else None
        if pr is not None:
            cards[pr].append(message)
    return cards


def one_thread(history: History) -> list[Violation]:
    return [
        Violation(ONE_THREAD, f"#{pr}: {len(roots)} threads ({', '.join(m.ts for m in roots)})")
        for pr, roots in sorted(_cards(history).items())
        if len(roots) > 1
    ]


def _owns(env: EnvRow, task: Task) -> bool:
    """Whether a live environment owns the task (its ARN, or its session as startedBy)."""
    return env.state in LIVE and (env.task_arn == task.arn or env.session == task.session)


def no_orphan(history: History) -> list[Violation]:
    """A running task of the bot is owned by its PR's live environment (the store's task and
    session) and wanted by the driver's model of the PR."""
    found = []
    for task in history.tasks:
        if not (task.running and task.managed):
            continue
        env = history.envs.get(task.pr) if task.pr is not None else None
        if env is None or not _owns(env, task):
            state = env.state if env else "no environment"
            detail = f"#{task.pr}: task {task.session} runs, owned by no live environment ({state})"
            found.append(Violation(NO_ORPHAN, detail))
        elif task.pr in history.wanted and history.wanted[task.pr] is None:
            detail = f"#{task.pr}: task {task.session} runs ({env.state}), but nothing should"
            found.append(Violation(NO_ORPHAN, detail))
    return found


def _never_launched(env: EnvRow | None) -> bool:
    """An environment whose launch failed before any task was started for it."""
    return env is not None and env.state == "failed" and env.task_arn is None


def launched(history: History) -> list[Violation]:
    """A PR the model wants running did not end with a launch that failed before any task ran
    (its card says why; but the PR keeps its label and has no environment)."""
    found = []
    for pr, label in sorted(history.wanted.items()):
        env = history.envs.get(pr)
        if label is not None and env is not None and _never_launched(env):
            detail = f"#{pr}: wants `{label}` running, its launch failed: {env.reason or '?'}"
            found.append(Violation(LAUNCHED, detail))
    return found


def not_wrongly_stopped(history: History) -> list[Violation]:
    """Every PR the model wants running has its environment running with that label and task
    (a launch that failed before starting a task is `launched`'s)."""
    running = _running_by_pr(history)
    found = []
    for pr, label in sorted(history.wanted.items()):
        env = history.envs.get(pr)
        if label is None or _never_launched(env):
            continue
        if env is None or env.state not in SETTLED:
            state = f"{env.state} ({env.reason or 'no reason given'})" if env else "nothing"
            detail = f"#{pr}: wants `{label}` running, the store says {state}"
            found.append(Violation(NOT_WRONGLY_STOPPED, detail))
        elif not running.get(pr):
            found.append(
                Violation(NOT_WRONGLY_STOPPED, f"#{pr}: wants `{label}` running, no task runs")
            )
        elif env.label != label:
            found.append(
                Violation(NOT_WRONGLY_STOPPED, f"#{pr}: wants `{label}`, runs `{env.label}`")
            )
    return found


def no_duplicate(history: History) -> list[Violation]:
    """No key stored twice, and no failed-but-stored post posted again."""
    found = []
    keys = Counter(m.key for m in history.messages if m.key)
    for key, count in sorted(keys.items()):
        if count > 1:
            found.append(Violation(NO_DUPLICATE, f"key {key} posted {count} times"))
    for first in history.messages:
        if not first.answered_failure or first.key:
            continue  # keyed posts are counted above
        again = [
            m
            for m in history.messages
            if m is not first
            and (m.channel, m.thread_ts, m.text) == (first.channel, first.thread_ts, first.text)
            and 0 < float(m.ts) - float(first.ts) <= RETRY_WINDOW_S
        ]
        if again:
            found.append(
                Violation(
                    NO_DUPLICATE,
                    f"{first.text[:60]!r} stored at {first.ts} (answered as failed) and again "
                    f"at {', '.join(m.ts for m in again)}",
                )
            )
    return found


def converged(history: History) -> list[Violation]:
    """Each environment's card shows its state, and a live one's task runs."""
    cards = _cards(history)
    running = {t.arn for t in history.tasks if t.running}
    found = []
    for pr, env in sorted(history.envs.items()):
        card = next((m for m in cards.get(pr, []) if m.ts == env.thread_ts), None)
        if env.thread_ts is not None and card is None:
            found.append(Violation(CONVERGED, f"#{pr}: its thread {env.thread_ts} has no card"))
        elif card is not None and not card.text.endswith(f"— {env.state}"):
            found.append(
                Violation(
                    CONVERGED, f"#{pr}: the card says {card.text[-30:]!r}, the store {env.state}"
                )
            )
        if env.state in LIVE and (env.task_arn is None or env.task_arn not in running):
            found.append(
                Violation(CONVERGED, f"#{pr}: {env.state} in the store, its task does not run")
            )
        if env.state not in SETTLED | {"stopped", "failed"}:
            found.append(Violation(CONVERGED, f"#{pr}: still {env.state} ({env.session})"))
    return found
