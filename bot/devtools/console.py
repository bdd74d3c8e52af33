"""`uat-bot console`: a local chat shell, in the spirit of Hubot's shell adapter.

Lines starting with `/uat` go through the same `Dispatcher` as Slack's slash command; a button's
number clicks it through `Dispatcher.click`, as a Slack click does; `label`, `unlabel`, `close`,
`reopen` and `push` build a `PullRequestEvent` and hand it to `Runtime.on_pull_request`, the
handler the GitHub webhook calls. What the bot would post, reply in threads, update or show only
to you is printed: Block Kit compactly, buttons as numbered choices. `help` lists these words.

Input is a terminal or a pipe (scripted sessions: `wait <seconds>` and `wait for <text>` let a
script wait for the bot). Each line's own work (the command or click it started) is finished
before the next line is read; what it set going in the background (a launch, a prompt's
result, the watcher's card updates) prints when it happens. `quit` or the end of the input
lets background work finish (up to QUIT_GRACE_S) and exits 0.

The console always starts the embedded world of `bot.devtools.local` (moto, stand-in containers,
builds into the embedded ECR, state in a temporary directory) and points the bot at it, whatever AWS
settings the shell has; there, the person at the console is a deployer. Only `--aws` acts on AWS
as configured: it says which account (STS), region, cluster and ECR repository, and asks before
anything there may change; a no makes the session read-only (every ECR, ECS and ELBv2 call that
would change something is refused before it is sent). With `--aws` the person at the console is
a deployer only if UAT_DEPLOYERS names U0CONSOLE, and the state is in UAT_DB if set, else in
`$XDG_STATE_HOME/uat-bot/console.db`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import boto3

from bot import pr_refs
from bot.app import Runtime, build_runtime
from bot.aws.gateways import AwsError, boto3_session, caller_identity, refuse_changes
from bot.config import Settings
from bot.devtools.local import CHANNEL, LocalWorld, user_state_dir
from bot.errors import UserError
from bot.github import PullRequestEvent
from bot.github_api import Deployment
from bot.images.docker_build import Docker
from bot.slack import slack_ui
from bot.slack.chat import Blocks, Message, Upload
from bot.slack.context import CommandContext, Reply, Services
from bot.slack.listeners.events import relay_reply
from bot.store import StoreUnavailable

logger = logging.getLogger(__name__)

PROMPT = "uat> "
CONSOLE_USER = "U0CONSOLE"
CONSOLE_CHANNEL = CHANNEL
GREETING = "uat-bot console. Type /uat help, or quit."
GITHUB_LOGIN = "you"  # the GitHub login of the person at the console
DEFAULT_REPO = "example/app"
WAIT_FOR_S = 60.0
QUIT_GRACE_S = 15.0

EMOJI = {
    ":hourglass_flowing_sand:": "⏳",
    ":large_blue_circle:": "🔵",
    ":large_green_circle:": "🟢",
    ":red_circle:": "🔴",
    ":black_square_for_stop:": "⏹",
    ":white_circle:": "⚪",
    ":white_check_mark:": "✅",
    ":x:": "❌",
    ":no_entry_sign:": "🚫",
    ":link:": "🔗",
}
LINK = re.compile(r"<((?:https?|mailto):[^|>]*)\|([^>]*)>")
BARE_LINK = re.compile(r"<((?:https?|mailto):[^|>]*)>")
BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
WAIT = re.compile(r"^(?:(?P<seconds>\d+(?:\.\d+)?)\s*)?(?:for\s+(?P<text>.+))?$")


# ---------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Button:
    label: str
    action_id: str
    value: str


def terminal_text(text: str) -> str:
    """Slack mrkdwn as a terminal shows it: links, dates, mentions, emoji, bold, escapes."""
    text = text.replace(f"<@{CONSOLE_USER}>", "@you")
    text = slack_ui.plain(text)
    text = LINK.sub(lambda m: m[2] if m[2] in (m[1], "") else f"{m[2]} ({m[1]})", text)
    text = BARE_LINK.sub(r"\1", text)
    for code, symbol in EMOJI.items():
        text = text.replace(code, symbol)
    text = BOLD.sub(r"\1", text).replace("```", "")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _field(text: str) -> str:
    name, _, value = text.partition("\n")
    if not value:
        return terminal_text(name)
    return f"{terminal_text(name)}: {terminal_text(value)}"


def render(text: str, blocks: Blocks | None) -> tuple[str, list[Button]]:
    """Block Kit as compact lines; buttons as `[n] label`, numbered in the order shown."""
    if not blocks:
        return terminal_text(text), []
    lines: list[str] = []
    buttons: list[Button] = []

    def choice(element: dict[str, Any]) -> str:
        label = str(element.get("text", {}).get("text", "?"))
        if element.get("url"):
            return f"[{label}: {element['url']}]"
        buttons.append(Button(label, str(element.get("action_id", "")), element.get("value", "")))
        return f"[{len(buttons)}] {label}"

    for block in blocks:
        kind = block.get("type")
        if kind == "section":
            parts = []
            if "text" in block:
                parts.append(terminal_text(block["text"]["text"]))
            if block.get("fields"):
                parts.append(" · ".join(_field(f.get("text", "")) for f in block["fields"]))
            accessory = block.get("accessory") or {}
            if accessory.get("type") == "button":
                parts[-1:] = [(parts[-1] + "  " if parts else "") + choice(accessory)]
            lines.append("\n".join(parts))
        elif kind == "context":
            texts = [terminal_text(e["text"]) for e in block.get("elements", []) if "text" in e]
            lines.append(" · ".join(texts))
        elif kind == "header":
            lines.append(terminal_text(block["text"]["text"]).upper())
        elif kind == "actions":
            elements = [e for e in block.get("elements", []) if e.get("type") == "button"]
            lines.append("  ".join(choice(e) for e in elements))
        elif kind == "divider":
            lines.append("---")
    return "\n".join(line.strip("\n") for line in lines if line.strip()), buttons


# ---------------------------------------------------------------------- the chat


@dataclass
class Shown:
    """A message as printed: where it is, its number on screen, its buttons."""

    key: str  # the ts of a channel message; a made-up key for an ephemeral one
    channel: str
    label: str  # how the screen names it: "bot [3]" or "bot (only you)"
    body: str
    buttons: list[Button] = field(default_factory=list)
    ephemeral: bool = False


class ConsoleChat:
    """`Chat` that prints; it keeps what it printed and which messages have buttons."""

    def __init__(self, out: TextIO, *, interactive: bool = False) -> None:
        self.out = out
        self.interactive = interactive
        self.tty = interactive and out.isatty()
        self.prompting = False
        self.said: list[str] = []  # every line printed except echoed input, for `wait for`
        self.printed = asyncio.Event()
        self.messages: dict[str, Shown] = {}
        self._clickable: dict[str, Shown] = {}  # in the order they got their buttons
        self._ts = itertools.count(1)
        self._top = itertools.count(1)
        self._epoch = int(time.time())
        self._told_numbers = False
        self._keys: dict[str, str] = {}  # message keys (Chat.post's `key`) -> ts
        self._files: Path | None = None  # where uploads are saved, made on the first

    # printing

    def say(self, text: str, *, echo: bool = False) -> None:
        """Print lines (above the prompt, when someone is typing at a terminal)."""
        if self.tty and self.prompting:
            self.out.write("\r\x1b[K")
        print(text, file=self.out, flush=True)
        if not echo:
            self.said.extend(text.splitlines())
            self.printed.set()
        if self.interactive and self.prompting:
            print(PROMPT, end="", file=self.out, flush=True)

    def _show(self, prefix: str, shown: Shown) -> None:
        self.say(prefix + shown.body.replace("\n", "\n" + " " * len(prefix)))
        if shown.buttons and not self._told_numbers:
            self._told_numbers = True
            self.say("(type a button's number to click it)")

    def _remember(self, shown: Shown) -> None:
        self.messages[shown.key] = shown
        self._clickable.pop(shown.key, None)
        if shown.buttons:
            self._clickable[shown.key] = shown

    def latest_with_buttons(self) -> Shown | None:
        """The most recent message that has buttons now."""
        return next(reversed(self._clickable.values()), None)

    # the Chat protocol

    async def post(self, message: Message) -> str:
        ts = f"{self._epoch}.{next(self._ts):06d}"
        if message.key:
            self._keys[message.key] = ts
        body, buttons = render(message.text, message.blocks)
        if message.thread_ts:
            parent = self.messages.get(message.thread_ts)
            label = f"  ↳ {parent.label}" if parent else "  ↳ bot (in a thread)"
        else:
            label = f"bot [{next(self._top)}]"
        shown = Shown(ts, message.channel, label, body, buttons)
        self._remember(shown)
        self._show(f"{label}: ", shown)
        return ts

    async def find(
        self, channel: str, key: str, thread_ts: str | None = None, since: float | None = None
    ) -> str | None:
        return self._keys.get(key)

    async def upload(self, upload: Upload) -> str:
        """Save the file where the person at the console can open it, and say where."""
        if self._files is None:
            self._files = Path(tempfile.mkdtemp(prefix="uat-console-files-"))
        path = self._files / Path(upload.filename).name
        content = upload.content
        path.write_text(content, encoding="utf-8")
        parent = self.messages.get(upload.thread_ts or "")
        label = f"  ↳ {parent.label}" if parent else "bot"
        lines = content.count("\n") + 1
        note = f"{upload.comment}\n" if upload.comment else ""
        shared = f"📎 {upload.title}: {path} ({lines} lines, {len(content):,} characters)"
        self.say(f"{label}: {note}{shared}")
        self._keys[upload.filename] = str(path)
        return str(path)

    async def update(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: Blocks | None = None,
        *,
        urgent: bool = False,
    ) -> None:
        await self.replace(ts, text, blocks, channel=channel)

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: Blocks | None = None
    ) -> None:
        body, buttons = render(text, blocks)
        shown = Shown(f"ephemeral-{next(self._ts)}", channel, "bot (only you)", body, buttons, True)
        self._remember(shown)
        self._show(f"{shown.label}: ", shown)

    async def replace(
        self, key: str, text: str, blocks: Blocks | None = None, *, channel: str = ""
    ) -> None:
        """A message changed in place (chat.update, or a click's `replace_original`)."""
        body, buttons = render(text, blocks)
        old = self.messages.get(key)
        if old is not None and old.body == body and old.buttons == buttons:
            return  # nothing a person would see changed
        if old is None:
            old = Shown(key, channel, "bot [earlier message]", body)
        shown = Shown(key, old.channel, old.label, body, buttons, old.ephemeral)
        self._remember(shown)
        self._show(f"{shown.label} updated: ", shown)


# ---------------------------------------------------------------------- simulated GitHub


class ConsoleGitHub:
    """GitHub as the console shows it: each deployment, deployment status and `uat` commit
    status the bot would send is a `github:` line (the embedded world has no GitHub)."""

    def __init__(self, chat: ConsoleChat) -> None:
        self.chat = chat
        self.created: dict[tuple[str, str], list[Deployment]] = {}  # (repo, environment)
        self._ids = itertools.count(1)

    async def create_deployment(
        self, repo: str, sha: str, environment: str, payload: Mapping[str, Any], description: str
    ) -> int:
        number = next(self._ids)
        made = Deployment(number, sha, environment, dict(payload))
        self.created.setdefault((repo, environment), []).insert(0, made)
        self.chat.say(slack_ui.console_github_deployment(number, repo, sha, environment))
        return number

    async def deployments(
        self, repo: str, environment: str, sha: str | None = None
    ) -> list[Deployment]:
        found = self.created.get((repo, environment), [])
        return [d for d in found if sha is None or d.sha == sha]

    async def deployment_status(
        self,
        repo: str,
        deployment: int,
        state: str,
        description: str,
        environment_url: str | None = None,
        log_url: str | None = None,
    ) -> None:
        what = f"deployment {deployment}"
        line = slack_ui.console_github_status(what, state, description, (environment_url, log_url))
        self.chat.say(line)

    async def commit_status(
        self, repo: str, sha: str, state: str, description: str, target_url: str | None
    ) -> None:
        what = f"uat status of {sha[:7]}"
        self.chat.say(slack_ui.console_github_status(what, state, description, (target_url,)))


@dataclass
class SimulatedPr:
    """A pull request as the console's GitHub knows it."""

    repo: str
    number: int
    labels: list[str] = field(default_factory=list)
    state: str = "open"
    head_sha: str = field(default_factory=lambda: secrets.token_hex(20))

    def event(self, action: str, label: str | None = None) -> PullRequestEvent:
        return PullRequestEvent(
            delivery_id=secrets.token_hex(16),
            action=action,
            repo=self.repo,
            number=self.number,
            title="Console PR",
            url="",
            author=GITHUB_LOGIN,
            sender=GITHUB_LOGIN,
            branch=f"pr-{self.number}",
            head_sha=self.head_sha,
            clone_url="",
            state=self.state,
            merged=False,
            labels=tuple(self.labels),
            label=label,
        )


TERMINAL_USAGE = "uat-bot staging|latest [ref] | promote | rollback [sha] | images [--yes]"

GITHUB_WORDS = {
    "label": "label <pr> <label>",
    "unlabel": "unlabel <pr> <label>",
    "close": "close <pr>",
    "reopen": "reopen <pr>",
    "push": "push <pr>",
}

# close and reopen: the PR's state after it, what is said when it is in that state already, and
# GitHub's action (which also reads as what you did)
STATE_CHANGES = {
    "close": ("closed", "is already closed", "closed"),
    "reopen": ("open", "is open", "reopened"),
}


def console_help(repo: str, settings: Settings) -> str:
    latest, staging = settings.uat_label_latest, settings.uat_label_staging
    return "\n".join(
        [
            "Console words (no /uat before them):",
            "  /uat <command> …        a slash command, as in Slack (`/uat help` lists them)",
            "  1, 2, …                 click that button of the latest message with buttons",
            f"  label <pr> <label>      GitHub: label the PR (`{latest}` runs :latest, "
            f"`{staging}` :staging)",
            "  unlabel <pr> <label>    GitHub: remove the label",
            "  close <pr>              GitHub: close the PR",
            "  reopen <pr>             GitHub: reopen it",
            "  push <pr>               GitHub: push a new commit to it",
            "  reply <pr> <text>       reply in the PR's thread (its agent gets it, as in Slack)",
            "  prs                     the PRs of this session",
            "  crash <pr>              the PR's stand-in app dies (its card shows its log)",
            "  uat-bot staging [ref]   the terminal's image operations, here (also latest, "
            "promote, rollback, images)",
            "  wait <seconds>          let the bot work that long (scripts); `sleep` too",
            f"  wait [<s>] for <text>   wait (up to <s>, default {WAIT_FOR_S:g}) until the bot "
            "says <text>",
            "  help                    this list",
            "  quit                    leave (`exit` and the end of the input too)",
            f"A PR is 42, #42 or PR-42, in {repo}. Lines starting with # are comments.",
        ]
    )


# ---------------------------------------------------------------------- the shell


class Console:
    """Turns console lines into what Slack and GitHub would send the bot."""

    def __init__(
        self, runtime: Runtime, chat: ConsoleChat, world: LocalWorld | None = None
    ) -> None:
        self.runtime = runtime
        self.chat = chat
        self.world = world  # the embedded world (None with --aws): `crash` needs it
        settings = runtime.services.settings
        self.repo = settings.uat_repositories[0] if settings.uat_repositories else DEFAULT_REPO
        self.prs: dict[int, SimulatedPr] = {}
        self.mark = 0  # where the output of the last line that was not `wait` begins

    @property
    def services(self) -> Services:
        return self.runtime.services

    async def handle(self, line: str) -> bool:
        """Act on one line; False when the console should end."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        word, _, rest = line.partition(" ")
        word = word.lower()
        if word in ("wait", "sleep"):
            await self.wait(rest.strip(), sleep_only=word == "sleep")
            return True
        self.mark = len(self.chat.said)
        if word in ("quit", "exit"):
            return False
        if word == "/uat":
            await self.command(rest)
        elif line.isascii() and line.isdigit():
            await self.click(int(line))
        elif word == "help":
            self.chat.say(console_help(self.repo, self.services.settings))
        elif word in GITHUB_WORDS:
            await self.github(word, rest.split())
        elif word == "reply":
            await self.reply(rest)
        elif word == "prs":
            self.list_prs()
        elif word == "crash":
            self.crash(rest.strip())
        elif word == "uat-bot":
            await self.terminal(rest.split())
        elif word.startswith("/"):
            self.chat.say(f"`{word}` is not a command here: `/uat` is. Type help for more.")
        else:
            self.chat.say(
                f"`{word}` is not a console word. Type help for the console's words, "
                "or /uat help for the bot's commands."
            )
        return True

    # Slack

    def _reply(self, channel: str, clicked: Shown | None) -> Reply:
        chat, scrubber = self.chat, self.services.scrubber  # as the Slack side's doors scrub

        async def reply(
            text: str,
            blocks: Blocks | None = None,
            *,
            in_channel: bool = False,
            replace_original: bool = False,
        ) -> None:
            text, blocks = scrubber.text(text), scrubber.value(blocks)
            if replace_original and clicked is not None:
                await chat.replace(clicked.key, text, blocks)
            elif in_channel:
                await chat.post(Message(channel, text, blocks))
            else:
                await chat.ephemeral(channel, CONSOLE_USER, text, blocks)

        return reply

    def _context(self, channel: str, clicked: Shown | None = None) -> CommandContext:
        return CommandContext(
            services=self.services,
            user_id=CONSOLE_USER,
            channel_id=channel,
            user_name="you",
            message_ts=clicked.key if clicked else None,
            reply=self._reply(channel, clicked),
        )

    @staticmethod
    async def _finishing(work: asyncio.Task[Any] | None) -> None:
        """Wait for the command's or click's task the dispatcher deferred (if it deferred one)."""
        if work is not None:
            await asyncio.wait([work])

    async def command(self, text: str) -> None:
        ctx = self._context(CONSOLE_CHANNEL)

        async def ack(answer: str | None) -> None:
            if answer:
                answer = self.services.scrubber.text(answer)
                await self.chat.ephemeral(CONSOLE_CHANNEL, CONSOLE_USER, answer)

        await self._finishing(await self.runtime.dispatcher.dispatch(ctx, text, ack))

    async def click(self, number: int) -> None:
        shown = self.chat.latest_with_buttons()
        if shown is None:
            self.chat.say("There are no buttons to click.")
            return
        if not 1 <= number <= len(shown.buttons):
            choices = "  ".join(f"[{n}] {b.label}" for n, b in enumerate(shown.buttons, 1))
            self.chat.say(f"There is no button {number}. The latest buttons: {choices}")
            return
        button = shown.buttons[number - 1]
        self.chat.say(f"you clicked [{number}] {button.label}")
        if button.action_id not in self.runtime.dispatcher.actions:
            self.chat.say(f"Nothing answers the button `{button.action_id}`.")
            return
        ctx = self._context(shown.channel, shown)
        await self._finishing(self.runtime.dispatcher.click(ctx, button.action_id, button.value))

    async def reply(self, rest: str) -> None:
        ref, _, text = rest.strip().partition(" ")
        if not ref or not text.strip():
            self.chat.say("Usage: reply <pr> <text>")
            return
        try:
            env = await self.runtime.services.environments.find(ref)
        except UserError as exc:
            self.chat.say(terminal_text(str(exc)))
            return
        if not env.thread_ts:
            self.chat.say(f"{env.repo}#{env.pr} has no thread yet.")
            return
        event = {
            "channel": self.services.settings.uat_channel,
            "thread_ts": env.thread_ts,
            "ts": f"{time.time():.6f}",
            "user": CONSOLE_USER,
            "text": text.strip(),
        }
        self.chat.say(f"you, in the thread of #{env.pr}: {text.strip()}")
        await relay_reply(self.services, event)

    # the terminal's image operations

    async def terminal(self, args: list[str]) -> None:
        """`uat-bot staging|latest|promote|rollback|images …`: the terminal's code, on this
        console's AWS and builds (as the terminal would print it, actor `cli:<login>`)."""
        from bot.devtools import terminal

        yes = any(a in ("--yes", "-y") for a in args)
        words = [a for a in args if a not in ("--yes", "-y")]
        operation, given = (words[0], words[1:]) if words else ("", [])
        argument = given[0] if given else None
        pipeline = self.services.pipeline
        runs: dict[str, Callable[[], Awaitable[None]]] = {
            "staging": lambda: terminal.build(pipeline, argument, "staging"),
            "latest": lambda: terminal.latest(pipeline, argument, yes),
            "promote": lambda: terminal.promote(pipeline, yes),
            "rollback": lambda: terminal.rollback(pipeline, argument, yes),
            "images": lambda: terminal.images(pipeline),
        }
        if operation not in runs or len(given) > (0 if operation in ("promote", "images") else 1):
            self.chat.say(f"Usage: {TERMINAL_USAGE}")
            return
        try:
            await runs[operation]()
        except UserError as exc:
            self.chat.say(f"error: {terminal_text(str(exc))}")

    # GitHub

    def _pr(self, ref: str) -> SimulatedPr | None:
        named = pr_refs.parse(ref)
        if named is None or named.repo:
            self.chat.say(f"`{ref}` is not a PR here: say 42, #42 or PR-42.")
            return None
        return self.prs.setdefault(named.number, SimulatedPr(self.repo, named.number))

    async def github(self, word: str, args: list[str]) -> None:
        needs_label = word in ("label", "unlabel")
        if len(args) < (2 if needs_label else 1) or (not needs_label and len(args) > 1):
            self.chat.say(f"Usage: {GITHUB_WORDS[word]}")
            return
        pr = self._pr(args[0])
        if pr is None:
            return
        name = f"{pr.repo}#{pr.number}"
        label = " ".join(args[1:])
        if word == "label":
            if label in pr.labels:
                self.chat.say(f"{name} already has the label `{label}`.")
                return
            pr.labels.append(label)
            event, what = pr.event("labeled", label), f"you added the label `{label}` to {name}"
        elif word == "unlabel":
            if label not in pr.labels:
                self.chat.say(f"{name} has no label `{label}`.")
                return
            pr.labels.remove(label)
            event, what = pr.event("unlabeled", label), f"you removed `{label}` from {name}"
        elif word in STATE_CHANGES:
            state, already, action = STATE_CHANGES[word]
            if pr.state == state:
                self.chat.say(f"{name} {already}.")
                return
            pr.state = state
            event, what = pr.event(action), f"you {action} {name}"
        else:
            if pr.state == "closed":
                self.chat.say(f"{name} is closed: reopen it first.")
                return
            pr.head_sha = secrets.token_hex(20)
            event, what = pr.event("synchronize"), f"you pushed {pr.head_sha[:7]} to {name}"
        self.chat.say(f"github: {what}")
        await self.deliver(event)

    async def deliver(self, event: PullRequestEvent) -> None:
        """What the webhook does with a verified delivery: the same handler, the same answers."""
        try:
            await self.runtime.on_pull_request(event)
        except UserError as exc:
            self.chat.say(f"github: the bot answered 503: {terminal_text(str(exc))}")
        except Exception:
            logger.exception("handling the console's %s event failed", event.action)
            self.chat.say("github: the bot answered 500 (the traceback is in its log)")

    def crash(self, ref: str) -> None:
        """`crash <pr>`: the PR's stand-in app dies; the watcher sees /health say failed."""
        named = pr_refs.parse(ref) if ref else None
        if named is None:
            self.chat.say("Usage: crash <pr>")
        elif self.world is None:
            self.chat.say("`crash` needs the embedded world: there are no stand-ins with --aws.")
        elif self.world.containers.crash(named.number):
            self.chat.say(f"stand-in: the app of #{named.number} crashed")
        else:
            self.chat.say(f"#{named.number} has no stand-in container yet: label it `uat` first.")

    def list_prs(self) -> None:
        if not self.prs:
            self.chat.say("No PRs yet: `label 42 uat` makes one.")
            return
        for pr in sorted(self.prs.values(), key=lambda p: p.number):
            labels = ", ".join(f"`{label}`" for label in pr.labels) or "no labels"
            self.chat.say(f"{pr.repo}#{pr.number} {pr.state}, {labels}, head {pr.head_sha[:7]}")

    # scripts

    async def wait(self, rest: str, *, sleep_only: bool = False) -> None:
        match = WAIT.match(rest)
        if not rest or match is None or (sleep_only and match["text"]):
            self.chat.say("Usage: wait <seconds>, or wait [<seconds>] for <text>")
            return
        seconds = float(match["seconds"]) if match["seconds"] else None
        text = match["text"]
        if text is None:
            await asyncio.sleep(seconds or 0)
            return
        limit = WAIT_FOR_S if seconds is None else seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not any(text in line for line in self.chat.said[self.mark :]):
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.chat.say(f"Waited {limit:g}s: the bot has not said “{text}”.")
                return
            self.chat.printed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.chat.printed.wait(), remaining)

    async def finish_background(self) -> None:
        """Before leaving: let launches, stops and prompt results finish, for a while."""
        tasks = self.runtime.services.tasks
        if not len(tasks):
            return
        waiter = asyncio.ensure_future(tasks.join())
        done, _ = await asyncio.wait({waiter}, timeout=QUIT_GRACE_S)
        if not done:
            self.chat.say(f"Leaving {len(tasks)} unfinished background task(s).")
            waiter.cancel()


# ---------------------------------------------------------------------- input


class LineReader:
    """Lines from a terminal or a pipe, read by a daemon thread (so Ctrl-C never waits on it)."""

    def __init__(self, stream: TextIO) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump() -> None:
            try:
                try:
                    for line in iter(stream.readline, ""):
                        loop.call_soon_threadsafe(self._lines.put_nowait, line)
                except (OSError, ValueError):
                    pass
                loop.call_soon_threadsafe(self._lines.put_nowait, None)
            except RuntimeError:  # the loop is gone: the console ended
                pass

        threading.Thread(target=pump, name="console input", daemon=True).start()

    async def next(self) -> str | None:
        """The next line, or None at the end of the input."""
        return await self._lines.get()


# ---------------------------------------------------------------------- start-up


def _configured(settings: Settings) -> Settings:
    """AWS as configured; the console's state outside the working directory unless UAT_DB says."""
    update: dict[str, Any] = {"uat_channel": settings.uat_channel or CONSOLE_CHANNEL}
    if settings.uat_store == "sqlite" and "uat_db" not in settings.model_fields_set:
        directory = user_state_dir()
        directory.mkdir(parents=True, exist_ok=True)
        update["uat_db"] = str(directory / "console.db")
    return settings.model_copy(update=update)


@dataclass
class Start:
    """What the console runs on: its settings, what it says about them, the AWS session and
    docker to use (None: the defaults), and the world to stop at the end."""

    settings: Settings
    about: list[str]
    session: boto3.session.Session | None = None
    docker: Docker | None = None
    world: LocalWorld | None = None


async def _embedded(settings: Settings) -> Start:
    world = LocalWorld(settings)
    await world.start()
    settings = world.settings()
    # the person at the terminal operates this bot: they may do what deployers do
    settings = settings.model_copy(
        update={"uat_deployers": (*settings.uat_deployers, CONSOLE_USER)}
    )
    return Start(settings, world.describe(), docker=world.docker(settings), world=world)


async def _real_aws(settings: Settings, chat: ConsoleChat, reader: LineReader) -> Start | None:
    """AWS as configured, once the person has seen where and said whether it may change."""
    settings = _configured(settings)
    session = boto3_session(settings)
    try:
        account = await caller_identity(settings, session)
    except AwsError as exc:
        print(f"uat-bot console --aws: {slack_ui.plain(str(exc))}", file=sys.stderr, flush=True)
        return None
    region = settings.aws_region or session.region_name or slack_ui.CONSOLE_NO_REGION
    cluster = settings.uat_ecs_cluster or "(UAT_ECS_CLUSTER not set)"
    where = settings.uat_db if settings.uat_store == "sqlite" else settings.uat_dynamodb_table
    chat.say(slack_ui.console_real_aws(account, region, cluster, settings.uat_ecr_repository))
    chat.say(f"{slack_ui.CONSOLE_ACT_QUESTION} [y/N] ")
    answer = await reader.next()
    chat.say(f"answer: {(answer or '').strip() or 'N'}", echo=True)
    may_change = (answer or "").strip().lower() in ("y", "yes")
    if not may_change:
        refuse_changes(session)
    about = [
        f"State: {where}.",
        slack_ui.CONSOLE_MAY_CHANGE if may_change else slack_ui.CONSOLE_READ_ONLY,
    ]
    return Start(settings, about, session=session)


async def run_console(
    settings: Settings, stdin: TextIO, out: TextIO, *, real_aws: bool = False
) -> int:
    """The console until `quit` or the end of the input: embedded, or AWS as configured."""
    interactive = stdin.isatty()
    chat = ConsoleChat(out, interactive=interactive)
    reader = LineReader(stdin)
    chat.say(GREETING)
    if real_aws:
        start = await _real_aws(settings, chat, reader)
        if start is None:
            return 2
    else:
        try:
            start = await _embedded(settings)
        except RuntimeError as exc:
            print(f"uat-bot console: {exc}", file=sys.stderr, flush=True)
            return 2
    try:
        runtime = build_runtime(
            start.settings,
            chat=chat,
            with_slack=False,
            session=start.session,
            docker=start.docker,
        )
        deployments = runtime.services.environments.deployments
        if deployments.github is None and start.world is not None:  # the embedded world
            deployments.github = ConsoleGitHub(chat)
        try:
            await runtime.start()
        except StoreUnavailable as exc:  # UAT_DB or the table: which, why, what to do
            print(exc.line, file=sys.stderr, flush=True)
            return 1
        try:
            console = Console(runtime, chat, start.world)
            chat.say("\n".join(start.about))
            chat.say("Type help for the console's own words (label, close, wait, …).")
            while True:
                if interactive:
                    chat.prompting = True
                    print(PROMPT, end="", file=out, flush=True)
                line = await reader.next()
                chat.prompting = False
                if line is None:
                    if interactive:
                        print(file=out, flush=True)
                    break
                if not interactive and line.strip():
                    chat.say(PROMPT + line.strip(), echo=True)
                if not await console.handle(line):
                    break
            await console.finish_background()
        finally:
            await runtime.stop()
    finally:
        if start.world is not None:
            await start.world.stop()
    return 0


def main(settings: Settings, *, real_aws: bool = False) -> int:
    for stream in (sys.stdin, sys.stdout):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    try:
        return asyncio.run(run_console(settings, sys.stdin, sys.stdout, real_aws=real_aws))
    except KeyboardInterrupt:
        print(file=sys.stdout, flush=True)
        return 130
