"""A phase's story per PR, for reading a violation afterwards (`SOAK_KEEP=1`).

The replicas log at INFO, which does not say when a card was updated or a state recorded;
this does, from the outside: every Slack call on the PR's card and thread (in the order
the stub received them), the webhooks and commands the driver sent for the PR, the faults,
and the environment as the store holds it at the end. The soak prints the stories of the PRs a
violation names (so a CI run that fails says why), and keeps them all with `SOAK_KEEP=1`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from bench.soak.checker import History
from bot.store import Environment
from tests.harness.slack_stub import SlackStub

TEXT_TAIL = 70  # characters of a message's text worth showing


def stories(
    history: History, envs: Iterable[Environment], slack: SlackStub
) -> dict[int, list[str]]:
    """Every PR's story, by PR number."""
    start = min([c.at for c in slack.calls] or [0.0])
    told: dict[int, list[str]] = {}
    for env in sorted(envs, key=lambda e: e.pr):
        lines = told.setdefault(env.pr, [])
        lines.append(f"== #{env.pr}: {env.state} v{env.version} label={env.label!r}")
        lines.append(f"   task={env.task_arn} thread={env.thread_ts}")
        lines.append(f"   updated_at={env.updated_at - start:+.2f} s facts={env.facts}")
        events: list[tuple[float, str]] = []
        events += [(at, f"webhook {what}") for at, pr, what in history.webhooks if pr == env.pr]
        events += [
            (c.at, f"{c.kind} acked={c.acked} {c.ack_body[:TEXT_TAIL]!r}")
            for c in history.commands
            if c.pr == env.pr
        ]
        urls = {c.response_url: c.kind for c in history.commands if c.pr == env.pr}
        events += [
            (r.at, f"answer to {urls[r.url_id]}: {str(r.body.get('text', ''))[:TEXT_TAIL]!r}")
            for r in slack.responses
            if r.url_id in urls
        ]
        events += [(at, f"FAULT {what}") for at, what in history.faults]
        for call in slack.calls:
            params = call.params
            ts = str(params.get("ts") or (call.response or {}).get("ts") or "")
            thread = str(params.get("thread_ts") or "")
            if env.thread_ts is None or env.thread_ts not in (ts, thread):
                continue
            failed = f" FAILED {call.failed_status}" if call.failed_status else ""
            error = f" error={call.error}" if call.error else ""
            text = str(params.get("text") or "")[-TEXT_TAIL:]
            where = "card" if ts == env.thread_ts and not thread else "thread"
            events.append((call.at, f"{call.method} {where}{failed}{error}: {text!r}"))
        for at, what in sorted(events):
            lines.append(f"   {at - start:+8.2f} {what}")
    return told


def write_timeline(path: Path, told: dict[int, list[str]]) -> None:
    """Write every PR's story to `path`."""
    path.write_text("".join(line + "\n" for lines in told.values() for line in lines))


def of_violations(told: dict[int, list[str]], details: Iterable[str]) -> list[str]:
    """The stories of the PRs the violations name ("#123: ..."), each once."""
    named = sorted({int(m.group(1)) for d in details for m in re.finditer(r"#(\d+)", d)})
    return [line for pr in named for line in told.get(pr, [])]
