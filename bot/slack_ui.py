"""Every user-facing sentence and Block Kit structure the bot produces, in one place.

Tests assert against these constants and builders rather than copies of the wording.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

Block = dict[str, Any]

# Errors every command can meet.
SOMETHING_WENT_WRONG = (
    "Something went wrong (ref `{ref}`). The details are in the bot's log under that reference."
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


def text_block(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def context_block(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def something_went_wrong(ref: str) -> str:
    return SOMETHING_WENT_WRONG.format(ref=ref)


def unknown_command(word: str, suggestions: Sequence[str]) -> str:
    text = UNKNOWN_COMMAND.format(word=word)
    if suggestions:
        text += DID_YOU_MEAN.format(suggestions="` or `/uat ".join(suggestions))
    return text + SEE_HELP


def bad_quoting(problem: str) -> str:
    return BAD_QUOTING.format(problem=problem)


def deployers_only(action: str, deployers: Iterable[str]) -> str:
    names = ", ".join(f"<@{user}>" for user in deployers)
    if not names:
        return NO_DEPLOYERS.format(action=action)
    return DEPLOYERS_ONLY.format(action=action, who=names)


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
            f"{lock.reason}. A deployer can `/uat unlock`."
        )
    return (
        f"{mention(lock.holder)} is running `{lock.reason}` since {when(lock.acquired_at)}. "
        "Try again when it finishes."
    )


def mention(actor: str) -> str:
    return f"<@{actor}>" if actor[:1] in "UW" and actor.isalnum() else f"`{actor}`"


def bad_sha(sha: str) -> str:
    return f"`{sha}` is not a sha. {SHA_HELP}"


def no_such_sha(sha: str, nearest: Sequence[str]) -> str:
    text = f"There is no image tagged `{sha}`."
    if nearest:
        text += " The nearest are " + ", ".join(f"`{n}`" for n in nearest) + "."
    return text + " `/uat rollback` lists the recent ones."


def retag_not_applied(expected: str, after: Any) -> str:
    now = short(after.digest) if after is not None else "nothing"
    return (
        f"ECR accepted the change but `:latest` is {now}, not {short(expected)}. "
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
        "text": {"type": "plain_text", "text": text[:75]},
        "action_id": action_id,
        "value": value[:2000],
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
            button("Promote", "uat.promote.confirm", value, "primary"),
            button("Cancel", "uat.cancel", value),
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
            button("Cancel", "uat.cancel", value),
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
            section["accessory"] = button("Roll back to this", "uat.rollback.pick", value_for(sha))
        blocks.append(section)
    blocks.append(actions(button("Cancel", "uat.cancel", value_for(""))))
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
        blocks.append(actions(button("Undo", "uat.undo", undo_value)))
    return text, blocks


def build_progress(
    title: str, step: str, lines: Sequence[str], seconds: float
) -> tuple[str, list[Block]]:
    text = f"Building {title} — {step} ({seconds:.0f}s)"
    blocks = [text_block(f"*Building {title}* — {step} ({seconds:.0f}s)")]
    if lines:
        blocks.append(context_block("```" + "\n".join(lines)[-2800:] + "```"))
    return text, blocks


def build_done(result: Any, target: str, actor: str) -> tuple[str, list[Block]]:
    c = result.commit
    text = (
        f"`:{target}` is now `{c.short}` — {c.subject} "
        f"(digest `{short(result.digest)}`, by {mention(actor)}, {result.seconds:.0f}s)"
    )
    return text, [
        text_block(f"*`:{target}` is now `{c.short}`* — {c.subject}"),
        context_block(
            f"digest `{result.digest}` · tags "
            + ", ".join(f"`:{t}`" for t in result.tags)
            + f" · by {mention(actor)} · {result.seconds:.0f}s"
        ),
    ]


def build_failed(title: str, message: str, tail: Sequence[str]) -> tuple[str, list[Block]]:
    text = f"Building {title} failed: {message}"
    blocks = [text_block(f"*Building {title} failed.* {message}")]
    if tail:
        blocks.append(context_block("```" + "\n".join(tail[-12:])[-2800:] + "```"))
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


def _chunks(rows: Sequence[str], limit: int = 2900) -> list[str]:
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
    return f"{mention(actor)} locked image operations: {reason}. `/uat unlock` lifts it."


def unfrozen(actor: str) -> str:
    return f"{mention(actor)} unlocked image operations."
