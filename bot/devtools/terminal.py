"""`uat-bot staging|promote|latest|rollback|images|cleanup|logs`: the image operations, the
cleanup of what no environment owns, and a PR container's log, from a terminal.

The same ImagePipeline as Slack; a spinner shows build and push progress; `--yes` answers the
confirmation (asked on stderr, read from stdin); errors are one line on stderr and exit status 1,
2 for a usage error. A locked operation is refused before anything else is shown or asked.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from rich.console import Console

from bot.app import build_pipeline, build_store
from bot.aws.gateways import Ecs
from bot.aws.logs import CloudWatchLogs
from bot.config import Settings
from bot.environments.logs import LogReader
from bot.environments.reconcile import find_leftovers, fingerprint, remove_leftovers
from bot.environments.requests import find_environment
from bot.errors import UsageError, UserError
from bot.images.builders import BuildProgress
from bot.images.operations import ImagePipeline, RetagResult
from bot.slack import slack_ui

T = TypeVar("T")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def actor() -> str:
    return f"cli:{getpass.getuser()}"


def _plain(text: str) -> str:
    """Slack mrkdwn to terminal text."""
    return slack_ui.plain(text).replace("*", "").replace("`", "")


async def _with_pipeline(settings: Settings, work: Callable[[ImagePipeline], Awaitable[T]]) -> T:
    store = build_store(settings)
    await store.open()
    try:
        return await work(build_pipeline(settings, store))
    finally:
        await store.close()


def run(settings: Settings, work: Callable[[ImagePipeline], Awaitable[None]]) -> int:
    """Run one operation; 0 on success, 2 for a usage error, 1 otherwise, each with one line."""
    return run_main(lambda: _with_pipeline(settings, work))


def run_main(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """`run` for any operation: its exit status, and one line for what went wrong."""
    try:
        asyncio.run(main())
    except UsageError as exc:
        err.print(f"error: {_plain(exc.problem)}", markup=False)
        return 2
    except UserError as exc:
        err.print(f"error: {_plain(str(exc))}", markup=False)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return 130
    return 0


def confirm(question: str, yes: bool) -> None:
    """Ask on stderr (seen even when stdout is piped), flushed before stdin is read."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(slack_ui.needs_confirmation(question))
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise UserError(slack_ui.CANCELLED)


async def cleanup(settings: Settings, yes: bool, dry_run: bool = False) -> None:
    """What no environment owns, listed; removed once confirmed, if it is still the same."""
    store = build_store(settings)
    await store.open()
    try:
        ecs = Ecs(settings)
        found = await find_leftovers(ecs, store, settings)
        out.print(_plain(slack_ui.cleanup_report(found, dry_run=True)[0]), markup=False)
        if not found or dry_run:
            return
        confirm("Clean these up?", yes)
        if fingerprint(await find_leftovers(ecs, store, settings)) != fingerprint(found):
            raise UserError(slack_ui.CLEANUP_CHANGED_TERMINAL)
        await remove_leftovers(ecs, found)
        out.print(_plain(slack_ui.cleanup_report(found, dry_run=False)[0]), markup=False)
    finally:
        await store.close()


async def staging(pipeline: ImagePipeline, ref: str | None) -> None:
    ref = ref or pipeline.settings.uat_source_ref
    await pipeline.check_unlocked(actor(), f"build :staging from {ref}")
    await build(pipeline, ref, "staging")


async def build(pipeline: ImagePipeline, ref: str | None, target: str) -> None:
    progress = BuildProgress(f"{ref or pipeline.settings.uat_source_ref} for :{target}")
    task = asyncio.create_task(pipeline.build(actor(), ref, target, progress))
    with out.status("starting", spinner="dots") as status:
        while not task.done():
            step, lines, seconds = progress.snapshot()
            last = lines[-1] if lines else ""
            status.update(f"{progress.title}: {step} ({seconds:.0f}s) {last}"[:200])
            await asyncio.wait({task}, timeout=0.2)
    result = task.result()
    text, _ = slack_ui.build_done(result, target, actor())
    out.print(_plain(text), markup=False)


def show_retag(result: RetagResult) -> None:
    text, _ = slack_ui.retag_done(result, actor(), None)
    out.print(_plain(text), markup=False)
    if result.changed and result.previous is not None:
        out.print(
            f"undo: uat-bot rollback {result.previous.sha_tags[0]}"
            if result.previous.sha_tags
            else f"previous digest: {result.previous.digest}",
            markup=False,
        )


async def promote(pipeline: ImagePipeline, yes: bool) -> None:
    await pipeline.check_unlocked(actor(), "promote")
    plan = await pipeline.promote_plan(actor())
    if plan.staging is None:  # promote_plan refuses that already; said the same way here
        raise UserError(slack_ui.NO_STAGING)
    out.print(_plain(slack_ui.image_line(":latest now", plan.latest)), markup=False)
    out.print(_plain(slack_ui.image_line(":staging", plan.staging)), markup=False)
    if plan.latest is not None and plan.latest.digest == plan.staging.digest:
        out.print(":latest already is :staging: nothing to promote.", markup=False)
        return
    confirm("Promote :staging to :latest?", yes)
    show_retag(await pipeline.promote(actor(), expected_digest=plan.staging.digest))


async def latest(pipeline: ImagePipeline, ref: str | None, yes: bool) -> None:
    ref = ref or pipeline.settings.uat_source_ref
    await pipeline.check_unlocked(actor(), f"build :latest from {ref}")
    confirm(f"Build {ref} straight to :latest?", yes)
    await build(pipeline, ref, "latest")


async def rollback(pipeline: ImagePipeline, sha: str | None, yes: bool) -> None:
    await pipeline.check_unlocked(actor(), f"rollback to {sha}" if sha else "rollback")
    if sha is None:
        overview = await pipeline.rollback_choices(actor())
        live = overview.latest.digest if overview.latest else None
        for line in slack_ui.rollback_choices(overview.recent, live):
            out.print(_plain(line), markup=False)
        raise UsageError(slack_ui.NAME_THE_SHA, "uat-bot rollback <sha>")
    image, current = await pipeline.rollback_plan(actor(), sha)
    out.print(_plain(slack_ui.image_line(":latest now", current)), markup=False)
    out.print(_plain(slack_ui.image_line(image.sha_tags[0], image)), markup=False)
    confirm(f"Roll :latest back to {image.sha_tags[0]}?", yes)
    show_retag(await pipeline.rollback(actor(), image.sha_tags[0]))


async def images(pipeline: ImagePipeline) -> None:
    _, blocks = slack_ui.images_overview(await pipeline.overview(recent=10))
    for block in blocks:
        out.print(_plain(block["text"]["text"]), markup=False)


FOLLOW_EVERY_S = 2.0


async def logs(
    settings: Settings,
    pr: str,
    lines: int,
    since: str | None,
    grep: str | None,
    follow: bool,
    *,
    polls: int | None = None,
) -> None:
    """Print a PR container's last log lines; with `follow`, then the new ones as they come
    (until Ctrl-C, or `polls` rounds: tests)."""
    from commands.logs import line_count, since_seconds

    line_count(str(lines))
    start = time.time() - since_seconds(since) if since else None
    store = build_store(settings)
    await store.open()
    try:
        env = await find_environment(store, pr)
        reader = LogReader(
            CloudWatchLogs(settings), Ecs(settings), settings.uat_container_name or "app"
        )
        tail = await reader.read(env, lines, since=start, grep=grep)
        if not tail.lines and not follow:
            out.print(_plain(slack_ui.no_log_lines(env, since, grep)), markup=False)
        for line in tail.lines:
            out.print(line, markup=False)
        seen, last = set(tail.lines), tail.last_at
        rounds = 0
        while follow and (polls is None or rounds < polls):
            rounds += 1
            await asyncio.sleep(FOLLOW_EVERY_S)
            newer = await reader.read(
                env, slack_ui.LOGS_MAX_LINES, since=last if last is not None else start, grep=grep
            )
            for line in newer.lines:
                if line not in seen:
                    out.print(line, markup=False)
            seen = set(newer.lines) | (seen if newer.last_at == last else set())
            last = newer.last_at if newer.last_at is not None else last
    finally:
        await store.close()
