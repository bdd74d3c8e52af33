"""Every user-facing sentence and Block Kit structure the bot produces, in one place.

Tests assert against these constants and builders rather than copies of the wording.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.cost import about, dollars, estimated_cost, hourly_cost, running_seconds
from bot.gateway_text import entities
from bot.gateway_text import escape as escape  # the one escaping function, used here too
from bot.scrub import scrub
from bot.slack import action_ids, limits
from bot.store.records import ENDED, LIVE, Environment, State
from bot.urls import environment_url

Block = dict[str, Any]

# Errors every command can meet.
SOMETHING_WENT_WRONG = (
    "Something went wrong (ref `{ref}`). The details are in the bot's log under that reference."
)
# A store write failed past its retries: whatever the person asked for was not recorded.
NOT_RECORDED = (
    "I could not record that (the bot's store is failing right now), so it may not have "
    "happened: try again in a minute."
)
UNKNOWN_COMMAND = "`/uat {word}` is not a command."
DID_YOU_MEAN = " Did you mean `/uat {suggestions}`?"
SEE_HELP = " Type `/uat help` to see what I can do."
BAD_QUOTING = "I could not read that: {problem}. Check your quotes and try again."
DEPLOYERS_ONLY = "Only deployers can {action}. Ask {who}."
NO_DEPLOYERS = (
    "Only deployers can {action}, and there are none yet: an operator sets UAT_DEPLOYERS."
)

HELP_HEADER = "*`/uat` — UAT environments from Slack*"
HELP_SUMMARY = "what I can do; `/uat help <command>` for one command's usage"
HELP_FOOTER = "`/uat help <command>` shows one command's usage."


SLACK_DATE = re.compile(r"<!date\^\d+\^[^|>]*\|([^>]*)>")
SLACK_MENTION = re.compile(r"<@([A-Z0-9]+)>")


# ---------------------------------------------------------------- outside text, made inert
# Every string from outside (PR titles, branches, authors, commit subjects, container errors
# and phases, agent text, what people typed) reaches Slack through one of these four, by
# where it goes. Each escapes `&`, `<` and `>` exactly once, so no `<!channel>`, `<@U…>`,
# `<#C…>` or `<https://…|…>` survives; long text is split before (see `split_escaped`). Each
# also replaces credentials (bot/scrub.py), on the whole text before it is cut or split.


def mrkdwn(text: str) -> str:
    """Outside text inside mrkdwn: shown as typed, with no mention, ping or link."""
    return escape(text)


def code(text: str) -> str:
    """Outside text as an inline code span: a backtick or line end inside cannot end it
    (backticks become ', line ends spaces)."""
    inner = escape(text).replace("`", "'").replace("\n", " ").replace("\r", " ")
    return f"`{inner or ' '}`"


def code_block(lines: Sequence[str], room: int = 2800) -> str:
    """Outside lines (a build's log) as a ``` block: the last `room` characters, none able to
    end the block early."""
    tail = scrub("\n".join(lines))[-room:].replace("`", "'")
    return "```" + entities(tail) + "```"


def link_label(text: str) -> str:
    """Outside text as the label of a `<url|label>` link: `|`, `>` and backticks cannot end it
    (`|` becomes ¦, backticks ')."""
    return escape(text).replace("|", "\u00a6").replace("`", "'")


def plain_text(text: str, limit: int = 75) -> Block:
    """Outside text as a Block Kit plain_text object (Slack shows it literally)."""
    return {"type": "plain_text", "text": scrub(text)[:limit] or " ", "emoji": False}


def plain(text: str) -> str:
    """Slack's date and mention markup as a terminal shows it."""
    return SLACK_MENTION.sub(r"@\1", SLACK_DATE.sub(r"\1", text))


MAX_BLOCKS = limits.BLOCKS  # per message (Slack refuses more)
MAX_TEXT = limits.MESSAGE_TEXT - 1_000  # room for the note saying what was cut
SECTION_ROOM = limits.SECTION_TEXT - 100  # what a section is filled to, leaving room for a note
OVERVIEW_ROWS = 100


def fit(text: str, blocks: list[Block] | None) -> tuple[str, list[Block] | None]:
    """Whatever the caller built, a message Slack accepts: at most 50 blocks and 39,000
    characters of text, with what was cut said in the message."""
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "\n… (cut: too long for one Slack message)"
    if blocks is not None and len(blocks) > MAX_BLOCKS:
        cut = len(blocks) - (MAX_BLOCKS - 1)
        blocks = [*blocks[: MAX_BLOCKS - 1], context_block(f"… {cut} more parts not shown")]
    return text, blocks


def text_block(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[: limits.SECTION_TEXT]}}


def context_block(text: str) -> Block:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": text[: limits.SECTION_TEXT]}],
    }


def something_went_wrong(ref: str) -> str:
    return SOMETHING_WENT_WRONG.format(ref=ref)


def unknown_command(word: str, suggestions: Sequence[str]) -> str:
    text = UNKNOWN_COMMAND.format(word=code(word)[1:-1])
    if suggestions:
        text += DID_YOU_MEAN.format(suggestions="` or `/uat ".join(suggestions))
    return text + SEE_HELP


def bad_quoting(problem: str) -> str:
    return BAD_QUOTING.format(problem=mrkdwn(problem))


def deployers_only(action: str, deployers: Iterable[str]) -> str:
    names = ", ".join(f"<@{user}>" for user in deployers)
    if not names:
        return NO_DEPLOYERS.format(action=action)
    return DEPLOYERS_ONLY.format(action=action, who=names)


def changes_in_channel_only(channel: str) -> str:
    return f"Environments are changed from <#{channel}> or a PR's thread in it, not from here."


def operators_only(operators: Iterable[str], deployers: Iterable[str], author: bool) -> str:
    # a group as its ID, not as `<!subteam^S…>`: a refusal in a thread must not ping a group
    who = [
        f"the members of user group `{user}`" if user[:1] == "S" else f"<@{user}>"
        for user in (*operators, *deployers)
    ]
    if author:
        who.insert(0, "the person who asked for it")
    names = ", ".join(dict.fromkeys(who))
    return f"Only {names} can change this environment (UAT_OPERATORS and UAT_DEPLOYERS say who)."


def usergroup_unreadable(group: str) -> str:
    return (
        f"I could not read who is in the user group `{group}` that UAT_OPERATORS names: the "
        "Slack app needs the `usergroups:read` scope (manifest.yml; reinstall the app), and the "
        "group must exist."
    )


def help_overview(summaries: Iterable[tuple[str, str]]) -> str:
    lines = [HELP_HEADER]
    lines += [f"• `/uat {name}` — {summary}" for name, summary in summaries]
    lines.append(HELP_FOOTER)
    return "\n".join(lines)


def command_help(usage: str, description: str) -> str:
    return f"`{usage}`\n{description}".rstrip()


def usage_error(problem: str, usage: str) -> str:
    return f"{problem}\nUsage: `{usage}`"


# ---------------------------------------------------------------- the image pipeline

NO_SOURCE_REPO = (
    "I don't know where the image's source is: an operator sets UAT_SOURCE_REPO "
    "(a git URL or path)."
)
NO_STAGING = "There is no `:staging` image to promote. Build one first with `/uat staging`."
STAGING_MOVED = (
    "`:staging` changed since this card was shown. Run `/uat promote` again to see what it is now."
)
LATEST_MOVED = (
    "`:latest` changed since this Undo was offered; undoing now would also throw away the later "
    "change. Use `/uat rollback` to pick an image."
)
NOT_FROZEN = "Image operations are not locked."
CARD_USED = "This card was already used or cancelled."
CANCELLED = "Cancelled. Nothing changed."
SHA_HELP = "A sha is 7 to 40 hex characters, as `git rev-parse --short` prints it."


def short(digest: str | None) -> str:
    return (digest or "").removeprefix("sha256:")[:12] or "none"


def when(moment: Any) -> str:
    if moment is None:
        return "unknown"
    stamp = int(moment.timestamp()) if hasattr(moment, "timestamp") else int(moment)
    fallback = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{stamp}^{{date_short_pretty}} {{time}}|{fallback}>"


def lock_held(lock: Any) -> str:
    if str(lock.holder).startswith("freeze:"):
        who = lock.holder.removeprefix("freeze:")
        return (
            f"Image operations are locked by {mention(who)} since {when(lock.acquired_at)}: "
            f"{mrkdwn(lock.reason)}. A deployer can `/uat unlock`."
        )
    return (
        f"{mention(lock.holder)} is running {code(lock.reason)} since {when(lock.acquired_at)}. "
        "Try again when it finishes."
    )


def lock_refusal(lock: Any) -> str:
    """Why an operation was refused, as `/uat history` shows it: the holder as a person."""
    if str(lock.holder).startswith("freeze:"):
        return f"locked by {mention(lock.holder.removeprefix('freeze:'))}: {lock.reason}"
    return f"{mention(lock.holder)} was running {code(lock.reason)}"


PROMOTING = "Promoting :staging to :latest …"
RETAG_ANNOUNCED = "Done: `:latest` moved. The channel has the details and the Undo button."


def rolling_back(sha: str) -> str:
    return f"Rolling :latest back to `{sha}` …"


def build_confirmed(ref: str, target: str) -> str:
    return f"Confirmed: the build of {code(ref)} for `:{target}` shows its progress in the channel."


def rollback_choices(images: Sequence[Any], live: str | None) -> list[str]:
    """The terminal's list to pick a rollback from: sha, digest, date, which one is live."""
    if not images:
        return ["There are no sha-tagged images to roll back to."]
    return ["Recent sha images, newest first:"] + [
        f"`{i.sha_tags[0]}` `{short(i.digest)}` pushed {when(i.pushed_at)}"
        + (" ← live now (:latest)" if i.digest == live else "")
        for i in images
    ]


def mention(actor: str) -> str:
    return f"<@{actor}>" if actor[:1] in "UW" and actor.isalnum() else code(actor)


def bad_sha(sha: str) -> str:
    return f"{code(sha)} is not a sha. {SHA_HELP}"


def no_such_sha(sha: str, nearest: Sequence[str]) -> str:
    text = f"There is no image tagged {code(sha)}."
    if nearest:
        text += " The nearest are " + ", ".join(f"`{n}`" for n in nearest) + "."
    return text + " `/uat rollback` lists the recent ones."


def retag_not_applied(expected: str, after: Any, tag: str = "latest") -> str:
    now = short(after.digest) if after is not None else "nothing"
    return (
        f"ECR accepted the change but `:{tag}` is {now}, not {short(expected)}. "
        "Check `/uat images` before trying again."
    )


def image_line(label: str, image: Any) -> str:
    if image is None:
        return f"*{label}*: none"
    tags = ", ".join(f"`{t}`" for t in image.sha_tags) or "no sha tag"
    return f"*{label}*: `{short(image.digest)}` ({tags}), pushed {when(image.pushed_at)}"


def button(text: str, action_id: str, value: str, style: str | None = None) -> Block:
    element: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": text[: limits.BUTTON_TEXT]},
        "action_id": action_id,
        "value": value[: limits.BUTTON_VALUE],
    }
    if style:
        element["style"] = style
    return element


def actions(*elements: Block) -> Block:
    return {"type": "actions", "elements": list(elements)}


def promote_card(latest: Any, staging: Any, value: str) -> tuple[str, list[Block]]:
    text = "Promote :staging to :latest?"
    if latest is not None and latest.digest == staging.digest:
        return "`:latest` is already `:staging`", [
            text_block(image_line(":latest", latest)),
            text_block("`:latest` already is `:staging`: nothing to promote."),
        ]
    return text, [
        text_block(f"*{text}* New PR environments with the `uat` label will run it."),
        text_block(image_line(":latest now", latest)),
        text_block(image_line(":staging", staging)),
        actions(
            button("Promote", action_ids.PROMOTE_CONFIRM, value, "primary"),
            button("Cancel", action_ids.CANCEL, value),
        ),
    ]


def confirm_card(
    question: str, details: Sequence[str], action_id: str, value: str, verb: str
) -> tuple[str, list[Block]]:
    return question, [
        text_block(f"*{question}*"),
        *(text_block(d) for d in details),
        actions(
            button(verb, action_id, value, "danger"),
            button("Cancel", action_ids.CANCEL, value),
        ),
    ]


def rollback_picker(
    images: Sequence[Any], live: str | None, value_for: Any
) -> tuple[str, list[Block]]:
    if not images:
        return "There are no sha-tagged images to roll back to.", [
            text_block("There are no sha-tagged images to roll back to.")
        ]
    blocks: list[Block] = [text_block("*Roll back `:latest` to which image?* Newest first.")]
    for image in images[:10]:
        sha = image.sha_tags[0]
        marker = " — *live now*" if image.digest == live else ""
        section = text_block(
            f"`{sha}` `{short(image.digest)}` pushed {when(image.pushed_at)}{marker}"
        )
        if image.digest != live:
            section["accessory"] = button(
                "Roll back to this", action_ids.ROLLBACK_PICK, value_for(sha)
            )
        blocks.append(section)
    blocks.append(actions(button("Cancel", action_ids.CANCEL, value_for(""))))
    return "Roll back :latest to which image?", blocks


def retag_done(result: Any, actor: str, undo_value: str | None) -> tuple[str, list[Block]]:
    if not result.changed:
        text = f"`:latest` already is `{short(result.current.digest)}`: nothing changed."
        return text, [text_block(text)]
    tags = ", ".join(f"`{t}`" for t in result.tags if t != "latest") or "no other tag"
    before = short(result.previous.digest) if result.previous else "nothing"
    text = (
        f"{mention(actor)} moved `:latest` ({result.action}): `{before}` → "
        f"`{short(result.current.digest)}` ({tags})."
    )
    blocks = [text_block(text)]
    if undo_value and result.previous is not None:
        blocks.append(actions(button("Undo", action_ids.UNDO, undo_value)))
    return text, blocks


def log_link(url: str) -> str:
    """A link to a build's log, as Slack shows it; "" for anything but an https URL."""
    if not url.startswith("https://") or any(c in url for c in "<>| \n"):
        return ""
    return f"<{url.replace('&', '&amp;')}|the build's log>"


def build_progress(
    title: str, step: str, lines: Sequence[str], seconds: float, link: str = ""
) -> tuple[str, list[Block]]:
    title, step = mrkdwn(title), mrkdwn(step)
    text = f"Building {title} — {step} ({seconds:.0f}s)"
    blocks = [text_block(f"*Building {title}* — {step} ({seconds:.0f}s)")]
    if log_link(link):
        blocks.append(context_block(f"Follow it in {log_link(link)}."))
    if lines:
        blocks.append(context_block(code_block(lines)))
    return text, blocks


def build_done(result: Any, target: str, actor: str) -> tuple[str, list[Block]]:
    c = result.commit
    text = (
        f"`:{target}` is now `{c.short}` — {mrkdwn(c.subject)} "
        f"(digest `{short(result.digest)}`, by {mention(actor)}, {result.seconds:.0f}s)"
    )
    if not getattr(result, "rebuilt", True):
        text += f" {not_rebuilt(c.short)}"
    return text, [
        text_block(
            f"*`:{target}` is now `{c.short}`* — {mrkdwn(c.subject)}"
            + ("" if getattr(result, "rebuilt", True) else f"\n{not_rebuilt(c.short)}")
        ),
        context_block(
            f"digest `{result.digest}` · tags "
            + ", ".join(f"`:{t}`" for t in result.tags)
            + f" · by {mention(actor)} · {result.seconds:.0f}s"
        ),
    ]


def build_failed(title: str, message: str, tail: Sequence[str]) -> tuple[str, list[Block]]:
    title = mrkdwn(title)
    text = f"Building {title} failed: {message}"
    blocks = [text_block(f"*Building {title} failed.* {message}")]
    if tail:
        blocks.append(context_block(code_block(tail[-12:])))
    return text, blocks


def images_overview(overview: Any) -> tuple[str, list[Block]]:
    lines = [image_line(":latest", overview.latest), image_line(":staging", overview.staging)]
    recent = [
        f"`{i.sha_tags[0]}` `{short(i.digest)}` {when(i.pushed_at)}"
        + (" ← :latest" if overview.latest and i.digest == overview.latest.digest else "")
        + (" ← :staging" if overview.staging and i.digest == overview.staging.digest else "")
        for i in overview.recent
    ]
    text = "\n".join(lines)
    blocks = [text_block(text)]
    if recent:
        blocks.append(text_block("*Recent sha images*\n" + "\n".join(recent)))
    return text, blocks


def history(entries: Sequence[Any]) -> tuple[str, list[Block]]:
    if not entries:
        return "Nothing has been done yet.", [text_block("Nothing has been done yet.")]
    rows = []
    for e in entries:
        change = ""
        if e.from_digest or e.to_digest:
            change = f" `{short(e.from_digest)}` → `{short(e.to_digest)}`"
        detail = f" — {e.detail}" if e.detail else ""
        rows.append(f"{when(e.at)} {mention(e.actor)} *{e.action}*{change}: {e.result}{detail}")
    text = "\n".join(rows)
    return text, [text_block(chunk) for chunk in _chunks(rows)]


def _chunks(rows: Sequence[str], limit: int = SECTION_ROOM) -> list[str]:
    out: list[str] = []
    current = ""
    for row in rows:
        if current and len(current) + len(row) + 1 > limit:
            out.append(current)
            current = ""
        current = f"{current}\n{row}" if current else row
    if current:
        out.append(current)
    return out


def frozen(actor: str, reason: str) -> str:
    return f"{mention(actor)} locked image operations: {mrkdwn(reason)}. `/uat unlock` lifts it."


def unfrozen(actor: str) -> str:
    return f"{mention(actor)} unlocked image operations."


# ---------------------------------------------------------------- PR environments

STATE_LABELS: dict[State, str] = {
    State.NEW: ":white_circle: New",
    State.STARTING: ":hourglass_flowing_sand: Starting",
    State.PROVISIONING: ":hourglass_flowing_sand: Provisioning",
    State.RUNNING: ":large_blue_circle: Running — waiting for the app",
    State.READY: ":large_green_circle: Ready",
    State.STOPPING: ":black_square_for_stop: Stopping",
    State.STOPPED: ":black_square_for_stop: Stopped",
    State.FAILED: ":red_circle: Failed",
}
WARM_TASK_GONE = "its task had stopped"
WARM_CLAIM_REFUSED = "the task refused the claim or did not answer it"


def warm_claim_failed(why: str) -> str:
    """The note in a PR's thread when its launch could not claim a warm-pool task."""
    return (
        f"A warm task could not be claimed ({why}); starting a new task instead, which takes "
        "a minute or two longer."
    )


def pool_line(counts: dict[str, dict[str, int]], sizes: dict[str, int]) -> str:
    """`/uat status`'s line about the warm pool (UAT_WARM_POOL): per tag, waiting of wanted,
    and claimed; empty without a pool."""
    parts = []
    for tag in sorted(counts):
        per = counts[tag]
        claimed = per.get("claimed", 0) + per.get("claiming", 0)
        parts.append(
            f"`:{tag}` {per.get('waiting', 0)}/{sizes.get(tag, 0)} waiting, {claimed} claimed"
        )
    return f"Warm pool: {', '.join(parts)}" if parts else ""


RESUMED_LAUNCH = "The bot restarted during this launch; it is carrying on from where it stopped."
PR_REF_HELP = (
    "Name a PR as `PR-123`, `#123`, `123`, `owner/repo#123` or its link "
    "(`https://github.com/owner/repo/pull/123`, pasted as it is)."
)


def environments_not_configured(missing: Sequence[str]) -> str:
    return f"PR environments are not configured: set {', '.join(missing)}."


def person(actor: str) -> str:
    """A GitHub login, a Slack user or the bot itself, as a card shows it."""
    if actor[:1] in "UW" and actor.isalnum() and actor.isupper():
        return f"<@{actor}>"
    return mrkdwn(actor)


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def app_url(env: Environment, settings: Any) -> str | None:
    """The link people get for `env`'s app (UAT_APP_URL filled in), or None when unset."""
    if not settings.uat_app_url:
        return None
    return environment_url(str(settings.uat_app_url), env)


def environment_card(env: Environment, settings: Any, now: float) -> tuple[str, list[Block]]:
    f = env.facts
    state = STATE_LABELS[env.state]
    pr_url = f.url if f.url.startswith("https://") and not any(c in f.url for c in "<>| \n") else ""
    label = link_label(f"#{env.pr} {f.title}")
    link = f"<{pr_url.replace('&', '&amp;')}|{label}>" if pr_url else label
    text = f"{mrkdwn(env.repo)}#{env.pr} {mrkdwn(f.title)} — {env.state}"
    tags = [t for t in f.image_tags if t not in ("latest", "staging")]
    image = f"{code(tags[0])} " if tags else ""
    image += f"`{short(env.image_digest)}`" if env.image_digest else "resolving…"
    fields = [
        f"*State*\n{state}",
        f"*Label*\n{code(env.label or '-')}",
        f"*Image*\n{image}",
        f"*Author*\n{mrkdwn(f.author or '-')}",
    ]
    if env.state in LIVE:
        fields.append(f"*Age*\n{duration(now - _started(env, now))}")
        if f.idle_until:
            fields.append(f"*Idle stop*\n{when(f.idle_until)}")
    cost = cost_line(env, settings, now)
    if cost:
        fields.append(f"*Cost*\n{cost}")
    blocks: list[Block] = [
        text_block(f"*{link}*\n{code(env.repo)} · branch {code(f.branch or '?')}"),
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": x[: limits.FIELD_TEXT]} for x in fields],
        },
    ]
    url = app_url(env, settings)
    if env.state == State.READY and url:
        blocks.append(text_block(f":link: <{url}|Open the app>"))
    if env.state in ENDED and f.reason:
        blocks.append(context_block(f.reason))
    if env.state == State.FAILED:
        blocks += failure_log_blocks(env)
    if env.task_arn:
        blocks.append(actions(logs_button(env)))
    return text, blocks


def size(env: Environment) -> str:
    """`1 vCPU, 2 GB`."""
    return f"{env.facts.cpu / 1024:g} vCPU, {env.facts.memory / 1024:g} GB"


def cost_line(env: Environment, settings: Any, now: float) -> str | None:
    """`~$0.12 for 1h02m (1 vCPU, 2 GB at $0.06/h)`, or None when the task's size is unknown."""
    cost, hourly = estimated_cost(env, settings, now), hourly_cost(env, settings)
    if cost is None or hourly is None:
        return None
    ran = duration(running_seconds(env, now))
    return f"{about(cost)} for {ran} ({size(env)} at {dollars(hourly)}/h)"


FAILURE_LOG_LINES = 15  # the log lines a failure card shows


def failure_log_blocks(env: Environment) -> list[Block]:
    """The last lines of a failed environment's log (or why there are none) for its card."""
    f = env.facts
    if f.log_tail:
        tail = f.log_tail[-FAILURE_LOG_LINES:]
        head = f"Last {len(tail)} line(s) of its log (`/uat logs PR-{env.pr}` for more):"
        return [context_block(head), text_block(code_block(tail, room=2700))]
    if f.log_problem:
        return [context_block(f"No log lines: {f.log_problem}")]
    return []


def _started(env: Environment, now: float) -> float:
    """When its launch started (`now` when it has not)."""
    started = env.facts.launch_started
    return now if started is None else started


def ready_reply(env: Environment, settings: Any) -> tuple[str, list[Block]]:
    url = app_url(env, settings)
    text = f"#{env.pr} is ready" + (f" at {url}" if url else "") + "."
    return text, [text_block(text)]


def failed_reply(env: Environment) -> tuple[str, list[Block]]:
    text = f"#{env.pr} failed: {env.facts.reason or 'no reason given'}"
    return text, [text_block(f":red_circle: {text}"), *failure_log_blocks(env)]


def stopped_reply(env: Environment) -> tuple[str, list[Block]]:
    text = f"#{env.pr} stopped: {env.facts.reason or 'stopped'}.{restart_hint(env)}"
    return text, [text_block(text)]


def stop_reason(task: Any) -> str:
    parts = [mrkdwn(task.stopped_reason or "the task stopped")]
    if task.stop_code:
        parts.append(f"stop code {mrkdwn(str(task.stop_code))}")
    if task.exit_code is not None:
        parts.append(f"exit code {task.exit_code}")
    return ", ".join(parts)


def no_image(tag: str) -> str:
    return f"There is no `:{tag}` image to run. Build one with `/uat staging` first."


def idle_warning(env: Environment, settings: Any = None) -> tuple[str, list[Block]]:
    text = f"#{env.pr} has been idle and stops {when(env.facts.idle_until)}. Extend it to keep it."
    hourly = hourly_cost(env, settings) if settings is not None else None
    if hourly is not None:
        hours = float(settings.uat_idle_hours)
        text += (
            f" Extending keeps it {hours:g}h longer, for {about(hourly * hours)} "
            f"({size(env)} at {dollars(hourly)}/h)."
        )
    value = json.dumps(
        {"card": f"extend-{env.facts.session or None}", "repo": env.repo, "pr": env.pr}
    )
    return text, [
        text_block(text),
        actions(button("Extend", action_ids.ENV_EXTEND, value, "primary")),
    ]


def new_commits(env: Environment, sha: str, actor: str) -> tuple[str, list[Block]]:
    """`actor` is the pusher's GitHub login: shown as typed, never as a Slack mention."""
    text = f"New commits ({code(sha[:7])} by {mrkdwn(actor)}) — restart to pick them up."
    card = f"restart-{sha[:12]}-{env.facts.session or None}"
    value = json.dumps({"card": card, "repo": env.repo, "pr": env.pr})
    return text, [text_block(text), actions(button("Restart", action_ids.ENV_RESTART, value))]


def not_running(repo: str, pr: int) -> str:
    return f"{repo}#{pr} has no running environment. Label the PR `uat` to start one."


def no_environment(pr: int) -> str:
    return f"No environment for #{pr}. Label the PR `uat` to start one."


def bad_pr_ref(ref: str) -> str:
    return f"{code(ref if len(ref) <= 80 else ref[:80] + '…')} is not a PR. {PR_REF_HELP}"


def restartable(env: Environment) -> bool:
    """Whether the PR still carries the UAT label its environment ran with (closing the PR or
    removing the label is recorded as `label_gone`)."""
    return bool(env.label) and not env.facts.label_gone


def not_running_env(env: Environment) -> str:
    """No running environment, with the hint that fits: restart it while the PR keeps its label,
    else label the PR."""
    if not restartable(env):
        return not_running(env.repo, env.pr)
    return (
        f"{env.repo}#{env.pr} has no running environment ({env.state}). "
        f"`/uat restart PR-{env.pr}` starts it again with the `{env.label}` image."
    )


def restart_hint(env: Environment) -> str:
    """What follows a stop in the PR's thread: how to get the environment back, if it can be."""
    return f" `/uat restart PR-{env.pr}` starts it again." if restartable(env) else ""


def ambiguous_pr(pr: int, repos: Sequence[str]) -> str:
    return f"#{pr} exists in {', '.join(repos)}: say which, e.g. `{repos[0]}#{pr}`."


def environments_overview(
    envs: Sequence[Environment], settings: Any, now: float, pool: str = ""
) -> tuple[str, list[Block]]:
    """`/uat status`: the active environments, and `pool` (`pool_line`) when there is one."""
    if not envs:
        text = "No active environments. Label a PR `uat` to start one."
        return text, [text_block(text)] + ([text_block(pool)] if pool else [])
    rows = []
    for env in envs[:OVERVIEW_ROWS]:
        f = env.facts
        tags = [t for t in f.image_tags if t not in ("latest", "staging")]
        url = app_url(env, settings) if env.state == State.READY else None
        rows.append(
            f"*{mrkdwn(env.repo)}#{env.pr}* {code(env.label)} "
            + (f"{code(tags[0])} " if tags else "")
            + f"{STATE_LABELS[env.state]} · "
            + f"{duration(now - _started(env, now))}"
            + (f" · {cost}" if (cost := cost_line(env, settings, now)) else "")
            + (f" · idle stop {when(f.idle_until)}" if f.idle_until else "")
            + (f" · <{url}|app>" if url else "")
        )
    if len(envs) > OVERVIEW_ROWS:
        rows.append(
            f"…and {len(envs) - OVERVIEW_ROWS} more ({len(envs)} active). "
            "`/uat status PR-123` shows one."
        )
    costs = [c for e in envs if (c := estimated_cost(e, settings, now)) is not None]
    hourly = [h for e in envs if e.state in LIVE and (h := hourly_cost(e, settings)) is not None]
    if costs:
        rows.append(
            f"*Total*: {about(sum(costs))} so far, {dollars(sum(hourly))}/h while they run "
            "(Fargate estimate)"
        )
    if pool:
        rows.append(pool)
    text = f"{len(envs)} active environment(s)"
    return text, [text_block(chunk) for chunk in _chunks(rows)]


def stopping(env: Environment) -> str:
    return f"Stopping {env.repo}#{env.pr}; its thread will say when it has stopped."


def not_stopped_relaunched(env: Environment) -> str:
    """A stop received before the environment was asked to run again (relabelled since)."""
    return (
        f"Not stopped: {env.repo}#{env.pr} was asked to run `{env.label}` after you asked to "
        f"stop it (relabelled since). `/uat stop PR-{env.pr}` stops it now."
    )


def not_started_overtaken(env: Environment) -> str:
    """A restart received before the environment was last asked to stop or run something else."""
    return (
        f"Not restarted: {env.repo}#{env.pr} was stopped or relabelled after you asked "
        f"({env.state} now). `/uat restart PR-{env.pr}` restarts it now."
    )


def restarting(env: Environment) -> str:
    return f"Restarting {env.repo}#{env.pr} with a fresh task; its thread follows it."


def extended(env: Environment) -> str:
    return f"{env.repo}#{env.pr} now stops when idle {when(env.facts.idle_until)}."


def extend_kept(env: Environment, hours: float) -> str:
    return (
        f"{env.repo}#{env.pr} already stops when idle {when(env.facts.idle_until)}, "
        f"later than {hours:g}h from now: I kept that."
    )


def bad_hours(given: str, least: float, most: float) -> str:
    return (
        f"{code(given[:40])} is not a number of hours I can extend by: give {least:g} to {most:g}, "
        "e.g. `/uat extend PR-123 4`."
    )


def environment_detail(
    env: Environment, task: Any, probes: dict[str, Any], settings: Any, now: float
) -> tuple[str, list[Block]]:
    text, blocks = environment_card(env, settings, now)
    lines = []
    if task is None:
        lines.append("*ECS*: no task")
    else:
        lines.append(
            f"*ECS*: {mrkdwn(str(task.last_status))} (desired {mrkdwn(str(task.desired_status))})"
            f" {code(str(task.task_id))}"
        )
    health = probes.get("health")
    if probes:
        if health is None:
            lines.append("*Container*: not answering on /health")
        else:
            phase = mrkdwn(str(health.get("phase", "?")))
            error = f" — {mrkdwn(str(health['error']))}" if health.get("error") else ""
            lines.append(f"*Container*: {phase}{error}")
    version = probes.get("version")
    if version:
        lines.append(
            f"*Version*: {code(str(version.get('short', '?')))} on "
            f"{code(str(version.get('branch', '?')))} — {mrkdwn(str(version.get('subject', '')))}"
        )
    status = probes.get("status")
    if status:
        running = status.get("running")
        queue = status.get("queue") or []
        lines.append(
            f"*Prompts*: {'1 running' if running else 'none running'}, {len(queue)} queued"
        )
    return text, [*blocks, text_block("\n".join(lines))]


def home_view(envs: Sequence[Environment], images: Any, settings: Any, now: float) -> Block:
    """The App Home tab: the environments overview and what :latest / :staging are."""
    _, env_blocks = environments_overview(envs, settings, now)
    if isinstance(images, str):
        image_blocks = [context_block(f"Images unavailable: {mrkdwn(images)}")]
    else:
        image_blocks = [
            text_block(image_line(":latest", images.latest)),
            text_block(image_line(":staging", images.staging)),
        ]
    return {
        "type": "home",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "UAT environments"}},
            *env_blocks[:40],
            {"type": "divider"},
            {"type": "header", "text": {"type": "plain_text", "text": "Images"}},
            *image_blocks,
        ],
    }


def adopted_note(env: Environment, found: bool) -> tuple[str, list[Block]]:
    """The note in a PR's thread when the bot adopted its running task without a record of it
    (its store was lost or new): the card was found again, or is new."""
    where = "this thread" if found else "this new card"
    text = (
        f"Adopted: I found #{env.pr}'s task running without a record of it (my store was lost "
        f"or is new), rebuilt its environment from the task's tags and follow it in {where}. "
        "Nothing was restarted."
    )
    return text, [context_block(text)]


def cannot_adopt_tags(task_id: str, missing: Sequence[str]) -> str:
    names = ", ".join(code(name) for name in missing)
    return (
        f"Task {code(task_id)} of this installation runs without an environment, and I cannot "
        f"adopt it: its tags lack {names}. I left it running; `/uat cleanup` stops it once "
        "confirmed."
    )


def cannot_adopt_taken(task_id: str, repo: str, pr: int, state: str) -> str:
    return (
        f"Task {code(task_id)} of this installation runs for {mrkdwn(repo)}#{pr}, whose "
        f"environment (now {state}) runs another task, so I did not adopt it. I left it "
        "running; `/uat cleanup` stops it once confirmed."
    )


CLEANUP_CHANGED = (
    "What there is to clean up changed since that card was shown; here is what it is now."
)
CLEANUP_CHANGED_TERMINAL = (
    "What there is to clean up changed while you answered; nothing was removed: run it again."
)


def cleanup_confirm(leftovers: Any, value: str) -> tuple[str, list[Block]]:
    """What `/uat cleanup` would remove, and its confirmation button (deployers only)."""
    text, blocks = cleanup_report(leftovers, dry_run=True)
    if not leftovers:
        return text, blocks
    question = "Clean these up? Tasks are stopped, revisions deregistered, routing deleted."
    return f"{question}\n{text}", [
        text_block(f"*{question}*"),
        *blocks,
        actions(
            button("Clean up", action_ids.CLEANUP_CONFIRM, value, "danger"),
            button("Cancel", action_ids.CANCEL, value),
        ),
    ]


def cleanup_report(leftovers: Any, dry_run: bool) -> tuple[str, list[Block]]:
    if not leftovers:
        text = "Nothing to clean up: every task, revision and route belongs to an environment."
        return text, [text_block(text)]
    verb = "Would remove" if dry_run else "Removed"
    sections = []
    for title, arns in (
        ("tasks", leftovers.tasks),
        ("task-definition revisions", leftovers.revisions),
        ("routing (rules, target groups)", leftovers.routing),
    ):
        if arns:
            listed = "\n".join(f"• {code(arn.rsplit('/', 1)[-1])}" for arn in arns[:30])
            more = f"\n…and {len(arns) - 30} more" if len(arns) > 30 else ""
            sections.append(f"*{verb} {len(arns)} {title}*\n{listed}{more}")
    text = "\n".join(sections)
    return text, [text_block(section) for section in sections]


# ---------------------------------------------------------------- logs

LOGS_DEFAULT_LINES = 50
LOGS_MAX_LINES = 500
LOGS_IN_MESSAGE = 2800  # characters of log a message holds; longer goes as a file
LOGS_BUTTON = "Logs"


def bad_lines(given: str, most: int) -> str:
    return (
        f"{code(given[:40])} is not a number of lines I can show: give 1 to {most}, "
        "e.g. `/uat logs PR-123 --lines 100`."
    )


def bad_since(given: str) -> str:
    return (
        f"{code(given[:40])} is not a time I can go back by: give a number and s, m, h or d, "
        "e.g. `/uat logs PR-123 --since 10m`."
    )


def no_task_for_logs(env: Environment) -> str:
    return (
        f"{env.repo}#{env.pr} has no task yet, so there is no log to show "
        f"({env.state}). Try again once it runs, or `/uat status PR-{env.pr}`."
    )


def log_line(at: float, text: str) -> str:
    """One log line as shown: its time (UTC) and its text, on one line."""
    stamp = datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")
    return f"{stamp} {text.rstrip()}"


def logs_title(env: Environment, count: int, since: str | None, grep: str | None) -> str:
    what = f"The last {count} line(s) of #{env.pr}'s log"
    if since:
        what += f" from the last {code(since)}"
    if grep:
        what += f" containing {code(grep)}"
    return what


def logs_fit(lines: Sequence[str]) -> bool:
    """Whether the lines fit in one message (else they go as a file)."""
    return len("\n".join(lines)) <= LOGS_IN_MESSAGE


def logs_message(
    env: Environment, lines: Sequence[str], since: str | None, grep: str | None, user: str
) -> tuple[str, list[Block]]:
    """The lines as a code block in one message (the last LOGS_IN_MESSAGE characters)."""
    head = f"{logs_title(env, len(lines), since, grep)}, for {mention(user)}:"
    return head, [text_block(head), text_block(code_block(lines, room=LOGS_IN_MESSAGE))]


def last_fitting(lines: Sequence[str], room: int) -> list[str]:
    """The last of `lines` that fit in `room` characters together (one cut line at least)."""
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        if used + len(line) + 1 > room:
            break
        kept.append(line)
        used += len(line) + 1
    return list(reversed(kept)) or [lines[-1][-room:]] if lines else []


def logs_file_name(env: Environment, at: float) -> str:
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y%m%d-%H%M%S")
    return f"logs-pr{env.pr}-{stamp}.txt"


def logs_file(env: Environment, stream: str, lines: Sequence[str]) -> str:
    """The lines as a text file (credentials replaced; a file shows the rest literally)."""
    head = f"{env.repo}#{env.pr} — log stream {stream} — {len(lines)} line(s), times in UTC"
    return scrub(head + "\n\n" + "\n".join(lines) + "\n")


def logs_file_comment(env: Environment, count: int, since: str | None, grep: str | None) -> str:
    return f"{logs_title(env, count, since, grep)} (too long for a message: in the file)."


def no_log_lines(env: Environment, since: str | None, grep: str | None) -> str:
    if since or grep:
        return f"{logs_title(env, 0, since, grep)}: none matched."
    return f"#{env.pr}'s log has no lines yet."


def logs_posted(env: Environment, count: int) -> str:
    return f"Posted {count} line(s) of #{env.pr}'s log in its thread."


def logs_button(env: Environment) -> Block:
    value = json.dumps({"card": "logs", "repo": env.repo, "pr": env.pr}, separators=(",", ":"))
    return button(LOGS_BUTTON, action_ids.ENV_LOGS, value)


# ---------------------------------------------------------------- prompts

NO_PROMPT_TOKEN = (
    "Prompts are off: an operator sets UAT_PROMPT_TOKEN in the bot (each environment then gets "
    "its own token, derived from it)."
)
PROMPT_TOKEN_REFUSED = (
    "The container refused this environment's prompt token: it was started with another "
    "environment's token, or by a bot with another UAT_PROMPT_TOKEN. `/uat restart` the "
    "environment to give it its own."
)
EMPTY_PROMPT = "Say what the agent should do: `/uat prompt PR-123 <what to do>`."
SPLIT_AT = SECTION_ROOM


def split(text: str, limit: int = SPLIT_AT) -> list[str]:
    """Cut long text into message-sized parts, at line ends where possible; joined again
    they are the text, every character kept (a line end cut at stays with its part)."""
    return _split(text, limit, len)


def split_escaped(text: str, limit: int = SPLIT_AT) -> list[str]:
    """Outside text cut into parts of at most `limit` characters once escaped, then escaped:
    split first, so no `&amp;` is cut in two and no character is lost; credentials are replaced
    in the whole text first, so none cut in two at a split point survives."""
    return [entities(part) for part in _split(scrub(text), limit, lambda t: len(entities(t)))]


def _split(text: str, limit: int, size: Callable[[str], int]) -> list[str]:
    parts: list[str] = []
    while size(text) > limit:
        fits, used = 0, 0
        while fits < len(text) and used + size(text[fits]) <= limit:
            used += size(text[fits])
            fits += 1
        cut = text.rfind("\n", 0, fits)
        cut = cut + 1 if cut > fits // 2 else max(fits, 1)
        parts.append(text[:cut])
        text = text[cut:]
    return [*parts, text] if text or not parts else parts


def prompt_too_long(length: int, limit: int) -> str:
    return f"That prompt is {length:,} characters; the agent takes at most {limit:,}. Shorten it."


def not_ready(env: Environment, now: float | None = None, timeout_s: float | None = None) -> str:
    started = env.facts.launch_started
    if now is None or timeout_s is None or not started:
        return (
            f"{env.repo}#{env.pr} is not ready yet ({env.state}). "
            "Its thread says when it is; prompt it then."
        )
    state = STATE_LABELS[env.state].split(" ", 1)[-1].lower()
    return (
        f"{env.repo}#{env.pr} is still starting ({state}): it started {duration(now - started)} "
        f"ago and has until {when(started + timeout_s)} ({duration(timeout_s)} in all) to be "
        "ready. Its thread says when it is; prompt it then."
    )


def container_refused(env: Environment, reason: str) -> str:
    return f"The agent in {env.repo}#{env.pr} refused the prompt: {escape(reason)}."


def container_unreachable(env: Environment) -> str:
    return (
        f"The container of {env.repo}#{env.pr} does not answer. "
        f"`/uat status PR-{env.pr}` shows its state; `/uat restart PR-{env.pr}` replaces it."
    )


def bad_job_id(job_id: str) -> str:
    shown = job_id if len(job_id) <= 40 else job_id[:40] + "…"
    return (
        f"{code(shown)} is not a prompt's job id: it is 12 hex digits, as the bot gave it when "
        "the prompt was sent (e.g. `/uat prompt PR-123 --cancel 0123456789ab`)."
    )


def no_such_job(job_id: str) -> str:
    return f"There is no prompt {code(job_id)} in that container."


def prompt_queued(relay: Any, position: int) -> tuple[str, list[Block]]:
    where = "running now" if position == 0 else f"queued at position {position}"
    quoted = "\n".join("> " + line for line in escape(relay.prompt[:1500]).splitlines())
    text = f"{person(relay.user)} asked the agent ({where}, job {code(relay.job_id)}):\n{quoted}"
    value = json.dumps(
        {"card": f"cancel-{relay.job_id}", "repo": relay.repo, "pr": relay.pr, "job": relay.job_id}
    )
    return text, [text_block(text), actions(button("Cancel", action_ids.PROMPT_CANCEL, value))]


def prompt_answer(job_id: str, position: int) -> str:
    where = "running now" if position == 0 else f"queued at position {position}"
    return (
        f"Sent to the agent: {where} (job {code(job_id)}). The result will be in the PR's thread."
    )


def prompt_lost(relay: Any, env: Environment | None) -> list[str]:
    why = (
        "the environment stopped"
        if env is None or env.state not in LIVE
        else "the container stopped answering"
    )
    return [f"The prompt {code(relay.job_id)} from {person(relay.user)} has no result: {why}."]


def _job_figures(job: dict[str, Any]) -> list[str]:
    """How long a prompt's job took and what it cost, those the agent reported."""
    figures = []
    if job.get("duration_s") is not None:
        figures.append(duration(float(job["duration_s"])))
    if job.get("cost_usd") is not None:
        figures.append(f"${float(job['cost_usd']):.2f}")
    return figures


def prompt_result(relay: Any, job: dict[str, Any], cancelled_by: str | None = None) -> list[str]:
    state = str(job.get("state", "?"))
    icon = {"succeeded": ":white_check_mark:", "cancelled": ":no_entry_sign:"}.get(state, ":x:")
    facts = [f"{icon} *{prompt_outcome(state, cancelled_by)}*", *_job_figures(job)]
    if job.get("commit"):
        facts.append(f"commit {code(str(job['commit'])[:7])}")
    head = f"{' · '.join(facts)} — prompt {code(relay.job_id)} from {person(relay.user)}"
    body = str(job.get("summary") or job.get("error") or job.get("output_tail") or "")
    parts = split_escaped(body) if body else []
    if job.get("files_changed"):
        files = ", ".join(code(str(f)[:200]) for f in job["files_changed"][:20])
        parts = [*parts[:-1], (parts[-1] + "\n\n" if parts else "") + "Files changed: " + files]
    return [head + ("\n" + parts[0] if parts else ""), *parts[1:]]


REST_IN_FILE = "… the rest is in the file below."


def prompt_file_name(job_id: str) -> str:
    return f"prompt-{job_id}-output.txt"


def prompt_file_title(relay: Any) -> str:
    return f"Output of prompt {relay.job_id}"


def prompt_file(relay: Any, job: dict[str, Any], output: str, problem: str | None) -> str:
    """The text file that goes with a long result: the prompt, the facts, the summary and the
    agent's whole output (or its last part, and why, when the container could not give it)."""
    facts = [str(job.get("state", "?")), *_job_figures(job)]
    if job.get("commit"):
        facts.append(f"commit {job['commit']}")
    sections = [
        f"Prompt {relay.job_id} from {relay.user} ({relay.repo}#{relay.pr})",
        " · ".join(facts),
        f"--- prompt ---\n{relay.prompt}",
        f"--- summary ---\n{job.get('summary') or job.get('error') or '(none)'}",
    ]
    if job.get("files_changed"):
        sections.append("--- files changed ---\n" + "\n".join(map(str, job["files_changed"])))
    if problem:
        sections.append(
            f"--- output (only its last {len(output):,} characters: "
            f"the whole could not be read: {problem}) ---\n{output}"
        )
    else:
        cut = " (cut by the container at its size limit)" if job.get("output_truncated") else ""
        sections.append(f"--- output{cut} ---\n{output}")
    return "\n\n".join(sections) + "\n"


def prompt_file_failed(job_id: str, reason: str) -> str:
    return f"The full output of prompt {code(job_id)} could not be attached: {mrkdwn(reason)}"


def prompt_cancelled(job_id: str) -> str:
    return f"Cancelled prompt {code(job_id)}."


def prompt_already_ended(job_id: str, state: str) -> str:
    return f"Prompt {code(job_id)} already ended ({mrkdwn(state)}): there is nothing to cancel."


def prompt_card_closed(relay: Any, outcome: str) -> tuple[str, list[Block]]:
    """The "asked the agent" message once its prompt has ended: the outcome, no Cancel button."""
    quoted = "\n".join("> " + line for line in escape(relay.prompt[:1500]).splitlines())
    text = f"{person(relay.user)} asked the agent ({outcome}, job {code(relay.job_id)}):\n{quoted}"
    return text, [text_block(text)]


def prompt_outcome(state: str, cancelled_by: str | None = None) -> str:
    """A prompt's end in a few words: `succeeded`, `cancelled by @U…`, `lost`."""
    words = state.replace("_", " ")
    return f"{words} by {person(cancelled_by)}" if state == "cancelled" and cancelled_by else words


def prompts_carried(carried: Sequence[Any], dropped: Sequence[tuple[Any, str]]) -> str:
    """Said in the thread when a restart takes the old container's queue along (or cannot)."""
    lines = []
    if carried:
        jobs = ", ".join(f"{code(r.job_id)} from {person(r.user)}" for r in carried)
        lines.append(
            f"Queued prompts {jobs} go to the new environment, in order, once it is ready."
        )
    for relay, why in dropped:
        lines.append(
            f"Prompt {code(relay.job_id)} from {person(relay.user)} was dropped: {mrkdwn(why)}."
            " Ask again once the new environment is ready."
        )
    return "\n".join(lines)


def prompts_not_resent(dropped: Sequence[tuple[Any, str]]) -> str:
    """Said in the thread for the carried-over prompts the new environment did not take."""
    return "\n".join(
        f"The queued prompt from {person(user)} could not be sent again: {why}\n"
        + "\n".join("> " + line for line in escape(prompt[:500]).splitlines())
        for (prompt, user), why in dropped
    )


# ---------------------------------------------------------------- git, docker, AWS and Slack

SLACK_HINTS = {
    "not_in_channel": "invite the bot to the channel (/invite @UAT Bot)",
    "channel_not_found": "check UAT_CHANNEL is a channel ID the bot can see",
    "invalid_auth": "check SLACK_BOT_TOKEN",
    "not_authed": "set SLACK_BOT_TOKEN",
}
TASK_VANISHED = "The task started for this launch has vanished; `/uat restart` starts another."
NAME_THE_SHA = "Name the sha to roll back to, one from the list above: `uat-bot rollback <sha>`."


def not_rebuilt(sha: str) -> str:
    return f"Not rebuilt: `:{sha}` was already built, so only the tag moved."


def built_image_missing(sha: str, where: str) -> str:
    return (
        f"The build succeeded but there is no `:{sha}` in {where}: check that the buildspec "
        "pushes $IMAGE_REPOSITORY_URI:$IMAGE_TAG (container/buildspec.yml)."
    )


def retag_failed(tag: str, where: str, problem: str) -> str:
    return f"Moving `:{tag}` in {where} failed ({problem}): check the registry, then build again."


def registry_retag_not_applied(tag: str, expected: str, now: str) -> str:
    return (
        f"The registry accepted the change but `:{tag}` is {short(now)}, not {short(expected)}: "
        "build again."
    )


def _phase(phase: str) -> str:
    return f"its {escape(phase) or 'first'} phase"


def codebuild_failed(status: str, phase: str, link: str) -> str:
    where = log_link(link) or "the project's build history"
    status = escape(status)
    if status == "STOPPED":
        return (
            f"The CodeBuild build was stopped in {_phase(phase)} (by someone, in AWS); no tag "
            f"moved. See {where}, then build again."
        )
    return (
        f"The CodeBuild build ended {status} in {_phase(phase)}; no tag moved. See {where} "
        "and fix what it shows (the Dockerfile, the buildspec or the project's role)."
    )


def codebuild_timed_out(limit_s: float, phase: str, link: str) -> str:
    where = log_link(link) or "the project's build history"
    return (
        f"The CodeBuild build was still in {_phase(phase)} after {limit_s:g}s "
        f"(UAT_BUILD_TIMEOUT_S), so it was stopped; no tag moved. See {where}; raise "
        "UAT_BUILD_TIMEOUT_S if the build needs longer."
    )


def changing_too_often(repo: str, pr: int) -> str:
    return f"{repo}#{pr} is changing too often to update; try again."


def needs_confirmation(question: str) -> str:
    return f"{question} Needs confirmation: run again with --yes."


def slack_unreachable(method: str) -> str:
    return f"Slack is unreachable ({method}): try again later."


def missing_scope(method: str, scope: str) -> str:
    return (
        f"Slack refused {method}: the app lacks the `{scope}` scope. Add it under "
        "oauth_config.scopes.bot in manifest.yml, update the app's manifest and reinstall it."
    )


def slack_refused(method: str, error: str) -> str:
    return f"Slack refused {method} ({error}): {SLACK_HINTS.get(error, 'see the bot log')}."


# ---------------------------------------------------------------------- the console's start


def console_real_aws(account: str, region: str, cluster: str, repository: str) -> str:
    return (
        f"AWS is real (--aws): account {account}, region {region}, cluster `{cluster}`, "
        f"ECR repository `{repository}`."
    )


CONSOLE_ACT_QUESTION = (
    "Let this console change ECR and ECS there (push and tag images, register task definitions, "
    "run and stop tasks)?"
)
CONSOLE_READ_ONLY = "Read-only: nothing will be changed in ECR or ECS (the answer was no)."
CONSOLE_MAY_CHANGE = "Commands will change ECR and ECS in that account."
CONSOLE_NO_REGION = "none: set AWS_REGION"
NO_REGISTRY_FOR_BUILDS = (
    "no registry to push to: install Debian's docker-registry, or set UAT_REGISTRY to a "
    "registry on 127.0.0.1"
)


def registry_not_answering(address: str) -> str:
    return f"nothing answers as a registry at UAT_REGISTRY={address}: start it, or unset it"


def console_builds(source: str, ref: str, docker: str, registry: str) -> str:
    return (
        f"Builds: {source} at `{ref}`, with the docker engine at {docker}; pushed to the "
        f"registry at {registry} and put into the embedded ECR."
    )


def console_no_builds(reason: str) -> str:
    return f"Builds are unavailable: {reason}"


# ------------------------------------------------------------------ the durable inbox


def interrupted(what: str, advice: str) -> str:
    """A command or click the bot restarted in the middle of, and could not safely finish."""
    return (
        f"I restarted while doing {escape(what)} for you and cannot tell how far it got, so I "
        f"did not do it again. {advice}"
    )


def interrupted_in_channel(user: str, what: str, advice: str) -> str:
    """The same, said in the channel (the command's response_url had expired)."""
    return f"<@{escape(user)}> {interrupted(what, advice)}"


INTERRUPTED_IMAGES = (
    "Check `/uat history` and `/uat images`, then run it again if it did not happen."
)
INTERRUPTED_PROMPT = (
    "Check the PR's thread: if your prompt is not there, send it again with `/uat prompt`."
)
INTERRUPTED_ENVIRONMENT = (
    "Check the PR's thread or `/uat status`, then run it again if it did not happen."
)
INTERRUPTED_STALE = "It was too long ago to redo blindly: run it again if you still want it."
INTERRUPTED_CLICK = "Check the card and the channel, then click again if it did not happen."


# GitHub: the deployment and `uat` commit status descriptions the PR page shows (plain text,
# at most 140 characters), and what the thread says when GitHub refuses the bot.

GITHUB_STATUS_TEXT = {
    "in_progress": "UAT environment starting",
    "success": "UAT environment ready",
    "failure": "UAT environment failed",
    "inactive": "UAT environment stopped",
}


def _plain(text: str) -> str:
    """Slack mrkdwn (outside text escaped) as the plain text GitHub shows."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("`", "")


def github_deployment_description(env: Environment) -> str:
    label = f" ({env.label})" if env.label else ""
    return f"UAT environment for #{env.pr}{label}"[:140]


def github_status_description(state: str, env: Environment) -> str:
    text = GITHUB_STATUS_TEXT.get(state, state)
    if state == "failure" and env.facts.reason:
        text += ": " + _plain(env.facts.reason)
    return text if len(text) <= 140 else text[:139] + "…"


GITHUB_PERMISSIONS_DOC = "docs/github-app.md"


def github_permission_missing(permission: str, status: int) -> str:
    """Said once in a PR's thread when GitHub refuses the bot's token or App."""
    return (
        f":warning: GitHub refused to show this environment on the pull request ({status}): "
        f"give the bot's GitHub App or token `{permission}` (see {GITHUB_PERMISSIONS_DOC})."
    )


def github_app_not_installed(repo: str) -> str:
    """Said once in a PR's thread when the GitHub App is not installed on its repository."""
    return (
        f":warning: The bot's GitHub App is not installed on {code(repo)}, so this environment "
        f"is not shown on the pull request: install it there (see {GITHUB_PERMISSIONS_DOC})."
    )


def console_github_deployment(deployment: int, repo: str, sha: str, environment: str) -> str:
    """The console's line for a deployment the bot would create on GitHub."""
    return f"github: deployment {deployment} of {mrkdwn(repo)}@{sha[:7]} to {environment}"


def console_github_status(
    what: str, state: str, description: str, links: Iterable[str | None] = ()
) -> str:
    """The console's line for a deployment status or the `uat` commit status."""
    shown = " ".join(f"<{link}>" for link in links if link)
    return f"github: {what} {state}: {_plain(description)}" + (f" {shown}" if shown else "")
