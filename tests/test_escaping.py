"""Outside text (PR titles, branches, authors, commit subjects, container errors and phases,
agent text, what people typed) fed into every message builder that takes it: nothing live
survives (no `<!…>`, `<@…>`, `<#…>` or `<http…|…>` but the builder's own, no code span ended
early) and the text can be read back once Slack's three entities are undone."""

from __future__ import annotations

import re
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.slack import slack_ui
from bot.store.records import Environment, Facts, State

ATTACK = "x> <!channel> <https://evil.example|Log in"
HOSTILE = st.one_of(
    st.text(alphabet="<>&|`!@#*_~:/ \nhtpsUCWabc;", min_size=1, max_size=60),
    st.text(min_size=1, max_size=60),
    st.sampled_from([ATTACK, "<@U123ABC>", "<#C0123|general>", "`x` ```y", "&amp;lt;", "a|b>"]),
)
USER = "U0DEPLOYER"
PR_URL = "https://github.com/acme/shop/pull/7"
CONTROL = re.compile(r"<([^<>]*)>")
SETTINGS = SimpleNamespace(uat_app_url=None)


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def live_sequences(message: str) -> list[str]:
    """The targets of the `<…>` control sequences Slack would act on that are not the bot's
    own (a date, the PR's link, the known user's mention)."""
    own = {PR_URL, f"@{USER}"}
    return [
        m.group(1)
        for m in CONTROL.finditer(message)
        if m.group(1).split("|", 1)[0] not in own and not m.group(1).startswith("!date^")
    ]


def everything(built: Any) -> list[str]:
    """Each mrkdwn string a builder returned (its text and its blocks' texts)."""
    if isinstance(built, str):
        return [built]
    if isinstance(built, list) and all(isinstance(x, str) for x in built):
        return list(built)
    text, blocks = built
    found = [text]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return found


def assert_inert(built: Any, *originals: str, readable: bool = True) -> None:
    texts = everything(built)
    for message in texts:
        assert live_sequences(message) == [], message
    if readable:
        whole = unescape("\n".join(texts))
        for original in originals:
            assert original in whole or _shown(original) in whole, (original, whole)


def _shown(original: str) -> str:
    """How a code span shows outside text: backticks as ', its lines as one."""
    return original.replace("`", "'").replace("\n", " ").replace("\r", " ")


def card_env(title: str, branch: str, author: str, label: str = "uat") -> Environment:
    facts = Facts(title=title, url=PR_URL, author=author, branch=branch, image_tags=("abc1234",))
    return Environment("acme/shop", 7, State.READY, label, facts=facts, image_digest="sha256:ab")


@settings(max_examples=150, deadline=None)
@given(title=HOSTILE, branch=HOSTILE, author=HOSTILE)
@example(title=ATTACK, branch="main`<!here>`", author="<@U999>")
def test_the_environment_card_keeps_a_hostile_title_branch_and_author_inert(
    title: str, branch: str, author: str
) -> None:
    card = slack_ui.environment_card(card_env(title, branch, author), SETTINGS, 0.0)
    assert_inert(card, branch)
    whole = unescape("\n".join(everything(card)))
    assert title.replace("`", "'").replace("|", "\u00a6") in whole
    assert author in whole
    link = re.search(r"<https://github.com/acme/shop/pull/7\|([^>]*)>", card[1][0]["text"]["text"])
    assert link is not None and "|" not in link.group(1)


@settings(max_examples=100, deadline=None)
@given(branch=HOSTILE, label=HOSTILE)
def test_a_branch_or_label_cannot_end_its_code_span_early(branch: str, label: str) -> None:
    hostile = slack_ui.environment_card(card_env("t", branch, "a", label), SETTINGS, 0.0)
    benign = slack_ui.environment_card(card_env("t", "b", "a", "l"), SETTINGS, 0.0)
    assert [t.count("`") for t in everything(hostile)] == [t.count("`") for t in everything(benign)]


@settings(max_examples=150, deadline=None)
@given(text=HOSTILE)
def test_code_spans_and_link_labels_hold_any_text(text: str) -> None:
    span = slack_ui.code(text)
    assert span.count("`") == 2 and span.startswith("`") and span.endswith("`")
    assert "\n" not in span and live_sequences(span) == []
    assert unescape(span[1:-1]) == _shown(text)
    label = slack_ui.link_label(text)
    assert not set("|<>`") & set(label)
    assert unescape(label) == text.replace("`", "'").replace("|", "\u00a6")


@settings(max_examples=100, deadline=None)
@given(phase=HOSTILE, error=HOSTILE, subject=HOSTILE, branch=HOSTILE, stopped=HOSTILE)
@example(phase="failed", error=ATTACK, subject=ATTACK, branch="`<!channel>", stopped=ATTACK)
def test_status_shows_a_containers_own_words_inert(
    phase: str, error: str, subject: str, branch: str, stopped: str
) -> None:
    task = SimpleNamespace(
        last_status=stopped, desired_status="RUNNING", task_id="t1", stopped_reason=stopped
    )
    probes = {
        "health": {"phase": phase, "error": error},
        "version": {"short": "abc1234", "branch": branch, "subject": subject},
    }
    env = card_env("t", "main", "a")
    detail = slack_ui.environment_detail(env, task, probes, SETTINGS, 0.0)
    assert_inert(detail, phase, error, subject, branch, stopped)
    reason = slack_ui.stop_reason(replace_task(task, stop_code=error, exit_code=1))
    failed = slack_ui.failed_reply(replace(env, facts=replace(env.facts, reason=reason)))
    assert_inert(failed, stopped, error)


def replace_task(task: Any, **changes: Any) -> Any:
    return SimpleNamespace(**{**vars(task), **changes})


@settings(max_examples=100, deadline=None)
@given(subject=HOSTILE, ref=HOSTILE, lines=st.lists(HOSTILE, max_size=5), step=HOSTILE)
@example(subject=ATTACK, ref=ATTACK, lines=["```", "<!channel>"], step=ATTACK)
def test_builds_show_commit_subjects_refs_and_log_lines_inert(
    subject: str, ref: str, lines: list[str], step: str
) -> None:
    commit = SimpleNamespace(short="abc1234", subject=subject)
    result = SimpleNamespace(commit=commit, digest="sha256:ab", tags=["latest"], seconds=3.0)
    assert_inert(slack_ui.build_done(result, "latest", USER), subject)
    assert_inert(slack_ui.build_confirmed(ref, "staging"), readable=False)
    progress = slack_ui.build_progress(ref, step, lines, 1.0)
    failed = slack_ui.build_failed(ref, "the build failed", lines)
    for built in (progress, failed):
        assert_inert(built, ref, *(line.replace("`", "'") for line in lines))
        log = built[1][-1]["elements"][0]["text"] if lines else "``````"
        assert log.startswith("```") and log.endswith("```") and log.count("`") == 6


@settings(max_examples=100, deadline=None)
@given(prompt=HOSTILE, summary=HOSTILE, files=st.lists(HOSTILE, max_size=3), job=HOSTILE)
@example(prompt=ATTACK, summary=ATTACK, files=["`a`"], job="j<!here>")
def test_prompts_show_what_people_typed_and_the_agent_said_inert(
    prompt: str, summary: str, files: list[str], job: str
) -> None:
    relay = SimpleNamespace(prompt=prompt, user=USER, job_id=job, repo="acme/shop", pr=7)
    answer = {"state": "succeeded", "summary": summary, "files_changed": files}
    assert_inert(slack_ui.prompt_result(relay, answer), summary)
    assert_inert(slack_ui.prompt_queued(relay, 1), *prompt.splitlines())
    assert_inert(slack_ui.prompt_card_closed(relay, "succeeded"), *prompt.splitlines())
    assert_inert(slack_ui.prompts_carried([relay], [(relay, summary)]), summary)
    env = card_env("t", "main", "a")
    assert_inert(slack_ui.container_refused(env, summary), summary)
    assert_inert(slack_ui.no_such_job(job), job)
    assert_inert(slack_ui.prompt_already_ended(job, summary), job, summary)


@settings(max_examples=100, deadline=None)
@given(typed=HOSTILE)
@example(typed=ATTACK)
def test_what_people_typed_is_echoed_back_inert(typed: str) -> None:
    assert_inert(slack_ui.unknown_command(typed, ["status"]), typed)
    assert_inert(slack_ui.bad_pr_ref(typed[:80]), typed[:80])
    assert_inert(slack_ui.bad_hours(typed[:40], 1, 8), typed[:40])
    assert_inert(slack_ui.bad_sha(typed), typed)
    assert_inert(slack_ui.frozen(USER, typed), typed)
    for shown in (slack_ui.mention(typed), slack_ui.person(typed)):  # a Slack ID is a mention
        assert set(live_sequences(shown)) <= {f"@{typed}"}, shown
    assert_inert(slack_ui.new_commits(card_env("t", "m", "a"), "abcdef1", typed), typed)


@settings(max_examples=60, deadline=None)
@given(body=st.text(alphabet="&<>a\n", max_size=9000))
@example(body="&" * 8000)
def test_long_agent_text_is_split_before_it_is_escaped(body: str) -> None:
    parts = slack_ui.split_escaped(body)
    assert all(len(part) <= slack_ui.SPLIT_AT for part in parts)
    assert "".join(unescape(part) for part in parts) == body
    for part in parts:
        assert re.sub(r"&(amp|lt|gt);", "", part).count("&") == 0, "an entity was cut in two"


def test_plain_text_objects_are_literal_and_never_empty() -> None:
    assert slack_ui.plain_text(ATTACK) == {"type": "plain_text", "text": ATTACK, "emoji": False}
    assert slack_ui.plain_text("")["text"] == " "
