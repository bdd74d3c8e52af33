"""`/uat` dispatch: words to a command module, arguments through argparse that never exits.

The dispatcher answers what it can decide at once (help, unknown words, usage errors) in Slack's
acknowledgement, and hands the command's work to a task the application owns, started once the
acknowledgements being given are out (a burst of commands does not slow its own acks). A failure
after the acknowledgement reaches the user: a `UserError` as written, anything else as a
reference id whose traceback is in the log.

A command with work to do, and every click, is stored in the durable inbox before its ack and
forgotten once its work is done; after a crash it is run again or its user told
(bot/slack/inbox.py says which, per command).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib
import inspect
import logging
import pkgutil
import secrets
import shlex
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, NoReturn

import bot.commands as commands_package
from bot import pr_refs
from bot.errors import ReplacingError, UsageError, UserError
from bot.logs import outside
from bot.slack import cards, slack_ui
from bot.slack.context import ActionHandler, CommandContext
from bot.slack.inbox import AnsweredOnce, Inbox, Invocation, Redo
from bot.slack.outbox import Outbox
from bot.store import InboxItem, StoreUnavailable

logger = logging.getLogger(__name__)

Ack = Callable[[str | None], Awaitable[None]]


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing and exiting."""

    def __init__(self, name: str, description: str) -> None:
        super().__init__(
            prog=f"/uat {name}",
            description=description,
            add_help=False,
            exit_on_error=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def error(self, message: str) -> NoReturn:
        raise UsageError(message[:1].upper() + message[1:] + ".", self.usage_line())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or "Invalid arguments.", self.usage_line())

    def usage_line(self) -> str:
        return " ".join(self.format_usage().split()).removeprefix("usage: ")


@dataclass(frozen=True)
class Command:
    """One `/uat` subcommand, as declared by its module."""

    name: str
    summary: str
    description: str
    parser: CommandParser
    run: Callable[[CommandContext, argparse.Namespace], Awaitable[None]]
    ack: Callable[[argparse.Namespace], str | None] | None = None
    splitter: Callable[[str], list[str]] = shlex.split  # a module's `split` may replace it

    def split(self, text: str) -> list[str]:
        """The words argparse gets: shell-like quoting unless the command reads prose."""
        return self.splitter(text)

    @property
    def usage(self) -> str:
        return self.parser.usage_line()

    @property
    def help(self) -> str:
        return slack_ui.command_help(self.usage, f"{self.summary}\n\n{self.description}".strip())

    def parse(self, words: list[str]) -> argparse.Namespace:
        try:
            args, extra = self.parser.parse_known_args(words)
        except argparse.ArgumentError as exc:
            raise UsageError(str(exc) + ".", self.usage) from None
        if extra:
            raise UsageError(f"Unexpected: {' '.join(extra)}.", self.usage)
        return args


def command_from_module(module: ModuleType) -> Command:
    name = module.NAME
    doc = inspect.cleandoc(module.__doc__ or "")
    summary, _, rest = doc.partition("\n")
    parser = CommandParser(name, rest.strip())
    configure = getattr(module, "configure", None)
    if configure is not None:
        configure(parser)
    return Command(
        name=name,
        summary=summary.strip(),
        description=rest.strip(),
        parser=parser,
        run=module.run,
        ack=getattr(module, "ack", None),
        splitter=getattr(module, "split", shlex.split),
    )


def load_commands() -> tuple[dict[str, Command], dict[str, ActionHandler]]:
    """Every module in `commands/` by name (alphabetical), and every button handler they declare."""
    table: dict[str, Command] = {}
    actions: dict[str, ActionHandler] = dict(cards.ACTIONS)
    for info in sorted(pkgutil.iter_modules(commands_package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands_package.__name__}.{info.name}")
        command = command_from_module(module)
        table[command.name] = command
        actions.update(getattr(module, "ACTIONS", {}))
    return table, actions


def terminal_help(name: str) -> str:
    """`uat-bot <name> --help`: the summary, then the module's TERMINAL_HELP where the Slack
    description speaks of Slack (channels, cards, buttons, `/uat`). Here, not in
    bot/devtools/docs.py: the CLI needs it to start, and `serve` loads no developer tools."""
    command = load_commands()[0][name]
    module = importlib.import_module(f"{commands_package.__name__}.{name}")
    description = getattr(module, "TERMINAL_HELP", command.description)
    return f"{command.summary}\n\n{description}".strip()


@dataclass(frozen=True)
class Plan:
    """What an invocation turned into: an immediate answer, and maybe work to run after it."""

    answer: str | None
    command: Command | None = None
    args: argparse.Namespace | None = None


class Dispatcher:
    """Turns `/uat` text into an answer now and, for real commands, a task afterwards."""

    def __init__(
        self,
        table: dict[str, Command],
        actions: dict[str, ActionHandler] | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self.table = table
        self.actions = actions or {}
        self.inbox = inbox

    def help_text(self, word: str | None = None) -> str:
        if word is None:
            entries = [(c.name, c.summary) for c in self.table.values()]
            return slack_ui.help_overview(sorted([("help", slack_ui.HELP_SUMMARY), *entries]))
        if word == "help":
            return slack_ui.command_help("/uat help [command]", slack_ui.HELP_SUMMARY)
        command = self.table.get(word)
        if command is None:
            return self._unknown(word)
        return command.help

    def _unknown(self, word: str) -> str:
        names = ["help", *self.table]
        suggestions = difflib.get_close_matches(word.lower(), names, n=3, cutoff=0.6)
        return slack_ui.unknown_command(word, suggestions)

    def plan(self, text: str) -> Plan:
        """Decide, without I/O, what `/uat <text>` means."""
        head, tail = [*text.strip().split(None, 1), "", ""][:2]
        if not head or head in ("help", "-h", "--help"):
            word = tail.split()[0] if tail.split() else None
            return Plan(self.help_text(word.lower() if word else None))
        command = self.table.get(head.lower())
        if command is None:
            return Plan(self._unknown(head))
        try:
            rest = command.split(pr_refs.drop_leading_label(tail))
        except ValueError as exc:
            return Plan(slack_ui.bad_quoting(str(exc).lower()))
        options = rest[: rest.index("--")] if "--" in rest else rest  # after "--" it is prose
        if "-h" in options or "--help" in options:
            return Plan(command.help)
        try:
            args = command.parse(rest)
        except UsageError as exc:
            return Plan(slack_ui.usage_error(exc.problem, exc.usage))
        except UserError as exc:  # an argument's own check, in one sentence (extend's hours)
            return Plan(slack_ui.usage_error(str(exc), command.usage))
        return Plan(command.ack(args) if command.ack else None, command, args)

    async def dispatch(
        self, ctx: CommandContext, text: str, ack: Ack, invocation: Invocation | None = None
    ) -> asyncio.Task[Any] | None:
        """Acknowledge at once, then run the command as a task the app owns, started once the
        acks being given now are out (`TaskSupervisor.defer`). Returns that task (None when the
        acknowledgement was the whole answer), for a caller that waits for the work.

        With `invocation` (what Slack sent), a command with work to do is stored in the inbox
        before the ack, and forgotten once its work is done."""
        plan = self.plan(text)
        if plan.command is None or plan.args is None:
            await ack(plan.answer)
            word = text.strip().split(" ", 1)[0].lower() or "help"
            name = word if word in self.table or word == "help" else "(unknown)"
            ctx.services.metrics.commands.labels(command=name, outcome="answered").inc()
            return None
        if invocation is not None:
            try:
                ctx = await self.receive(ctx, invocation)
            except StoreUnavailable as exc:  # not kept, so not promised: the ack says so
                self.not_recorded(ctx, f"/uat {plan.command.name}", exc)
                await ack(slack_ui.NOT_RECORDED)
                return None
        await ack(plan.answer)
        return self._start(ctx, self.run(ctx, plan.command, plan.args), f"/uat {plan.command.name}")

    async def receive(self, ctx: CommandContext, invocation: Invocation) -> CommandContext:
        """Store `invocation` in the inbox (before its ack); the context to run it with, whose
        answers are given once across runs of it."""
        if self.inbox is None:
            return ctx
        item = await self.inbox.receive(invocation)
        return self._held(ctx, item)

    @staticmethod
    def not_recorded(ctx: CommandContext, what: str, exc: StoreUnavailable) -> None:
        """Count and log a command or click the inbox could not store (its user is told)."""
        ctx.services.metrics.commands.labels(command=what, outcome="not_recorded").inc()
        logger.warning("%s for %s was not recorded: %s", what, outside(ctx.user_id), exc.line)

    @staticmethod
    def _held(ctx: CommandContext, item: InboxItem, *, rerun: bool = False) -> CommandContext:
        reply = AnsweredOnce(ctx.services.store, item.key, ctx.reply, rerun=rerun)
        return replace(ctx, item=item.key, reply=reply, received_at=item.received_at)

    def _start(
        self, ctx: CommandContext, work: Coroutine[Any, Any, None], what: str
    ) -> asyncio.Task[Any]:
        """Defer `work`; a stored item is forgotten once it is done."""
        if ctx.item is not None and self.inbox is not None:
            work = self.inbox.finish(ctx.item, work)
        return ctx.services.tasks.defer(work, name=f"{what} for {ctx.user_id}")

    def click(
        self, ctx: CommandContext, action_id: str, raw_value: str
    ) -> asyncio.Task[Any] | None:
        """Run a button's handler as a task the app owns (the click is already acknowledged);
        returns that task, or None when no handler answers the button."""
        handler = self.actions.get(action_id)
        if handler is None:
            logger.warning("no handler for button %s", outside(action_id))
            if ctx.item is not None and self.inbox is not None:
                ctx.services.tasks.spawn(self.inbox.finish(ctx.item, _nothing()), name="forget")
            return None

        async def work() -> None:
            await handler(ctx, cards.parse_value(raw_value))

        return self._start(
            ctx, run_reporting(ctx, work(), what=f"button {action_id}"), f"button {action_id}"
        )

    async def resume(self, ctx: CommandContext, item: InboxItem, invocation: Invocation) -> None:
        """Take over an item whose holder died (this replica has claimed it): run it again, or
        tell its user what was interrupted (the table in bot/slack/inbox.py)."""
        inbox = self.inbox
        if inbox is None:
            raise RuntimeError("resuming needs the inbox")
        plan = self.plan(invocation.text) if invocation.kind == "command" else None
        command = plan.command.name if plan is not None and plan.command is not None else None
        redo = await inbox.redo(item, invocation, command)
        logger.info(
            "inbox item %s (%s by %s, %.0fs old): %s",
            item.key,
            command or invocation.kind,
            outside(invocation.user_id),
            inbox.clock() - item.received_at,
            "running it again" if redo is Redo.RUN else "telling its user",
        )
        held = self._held(ctx, item, rerun=True)
        if redo is Redo.RUN and plan is not None and plan.command and plan.args is not None:
            self._start(held, self.run(held, plan.command, plan.args), f"/uat {command} again")
        elif redo is Redo.RUN and plan is None:
            self.click(held, invocation.action_id, invocation.value)
        else:
            await self._tell(ctx, item, invocation, inbox.advice(item, invocation, command))
            await inbox.finish(item.key, _nothing())

    async def _tell(
        self, ctx: CommandContext, item: InboxItem, invocation: Invocation, advice: str
    ) -> None:
        """Tell the user what was interrupted, once: by the response_url while Slack takes it,
        else in the UAT channel, mentioning them."""
        store, told = ctx.services.store, f"inbox:{item.key}:told"
        if self.inbox is None or await store.claimed(told):
            return
        if invocation.response_url and self.inbox.response_url_valid(item):
            await ctx.reply(slack_ui.interrupted(invocation.what, advice))
        else:
            channel = ctx.settings.uat_channel or invocation.channel_id
            text = slack_ui.interrupted_in_channel(invocation.user_id, invocation.what, advice)
            await Outbox(store, ctx.services.chat).post(told, channel, text)
        await store.claim(told, "told")

    async def run(self, ctx: CommandContext, command: Command, args: argparse.Namespace) -> None:
        """Run a command; whatever goes wrong is told to the person who asked."""
        await run_reporting(ctx, command.run(ctx, args), what=f"/uat {command.name}")


async def _nothing() -> None:
    return None


async def run_reporting(ctx: CommandContext, work: Awaitable[Any], *, what: str) -> None:
    """Await `work`; a UserError is shown as written, anything else as a reference id."""
    count = ctx.services.metrics.commands
    try:
        await work
        count.labels(command=what, outcome="ok").inc()
    except StoreUnavailable as exc:
        Dispatcher.not_recorded(ctx, what, exc)
        await ctx.reply(slack_ui.NOT_RECORDED)
    except UserError as exc:
        count.labels(command=what, outcome="refused").inc()
        logger.info("%s for %s refused: %s", what, outside(ctx.user_id), outside(exc))
        await ctx.reply(str(exc), replace_original=isinstance(exc, ReplacingError))
    except Exception:
        count.labels(command=what, outcome="error").inc()
        ref = secrets.token_hex(4)
        logger.exception("%s for %s failed (ref %s)", what, outside(ctx.user_id), ref)
        await ctx.reply(slack_ui.something_went_wrong(ref))
