"""`/github/webhook` through the real HTTP server, with the octokit payloads from the corpora."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest

from bot import health
from bot.app import Runtime
from bot.github import PullRequestEvent, signature, verify_signature
from tests.harness.bot import WEBHOOK_SECRET, Bot, BotFactory, reference
from tests.harness.signing import github_headers

ACTIONS = ("opened", "labeled", "unlabeled", "closed", "reopened", "synchronize")


class Recorder:
    """A pull_request handler that records what it was handed."""

    def __init__(self, fail: int = 0, delay: float = 0.0) -> None:
        self.events: list[PullRequestEvent] = []
        self.fail = fail
        self.delay = delay

    async def __call__(self, event: PullRequestEvent) -> None:
        await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("handler broke")
        self.events.append(event)

    def install(self, runtime: Runtime) -> None:
        runtime.on_pull_request = self


def test_signature_matches_githubs_documented_vector() -> None:
    vector = reference("signing_test_vectors.json")["github_x_hub_signature_256"]
    body = vector["payload"].encode()
    assert signature(vector["secret"], body) == vector["header_value"]
    assert verify_signature(vector["secret"], body, vector["header_value"])
    assert not verify_signature(vector["secret"], body + b" ", vector["header_value"])
    assert not verify_signature(vector["secret"], body, None)
    assert not verify_signature(vector["secret"], body, "sha256=" + "0" * 64)


@pytest.mark.parametrize("action", ACTIONS)
async def test_octokit_payloads_are_accepted_and_parsed(make_bot: BotFactory, action: str) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install)
    payload = reference(f"github_webhooks/pull_request/{action}.payload.json")
    status, body = await bot.github("pull_request", payload, delivery=f"d-{action}")
    assert status == 202, body
    [event] = recorder.events
    assert event.action == action
    assert event.repo == payload["repository"]["full_name"]
    assert event.number == payload["pull_request"]["number"]
    assert event.branch == payload["pull_request"]["head"]["ref"]
    assert event.head_sha == payload["pull_request"]["head"]["sha"]
    assert event.delivery_id == f"d-{action}"
    if action in ("labeled", "unlabeled"):
        assert event.label == payload["label"]["name"]


async def test_a_null_body_pr_is_fine(make_bot: BotFactory) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install)
    payload = reference("github_webhooks/pull_request/opened.with-null-body.json")
    status, _ = await bot.github("pull_request", payload)
    assert status == 202 and len(recorder.events) == 1


async def test_unsigned_or_wrongly_signed_deliveries_are_refused(make_bot: BotFactory) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install)
    body = json.dumps(reference("github_webhooks/pull_request/labeled.payload.json")).encode()
    headers = github_headers(WEBHOOK_SECRET, body, "pull_request")
    unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    assert (await bot.post_github(body, unsigned))[0] == 401
    wrong = github_headers("another-secret", body, "pull_request")
    assert (await bot.post_github(body, wrong))[0] == 401
    tampered = body.replace(b'"labeled"', b'"closed"', 1)
    assert (await bot.post_github(tampered, headers))[0] == 401
    ping = json.dumps(reference("github_webhooks/ping.payload.json")).encode()
    assert (await bot.post_github(ping, {"X-GitHub-Event": "ping"}))[0] == 401
    assert recorder.events == []


async def test_ping_is_answered(bot: Bot) -> None:
    status, body = await bot.github("ping", reference("github_webhooks/ping.payload.json"))
    assert status == 200 and body["zen"] == "Anything added dilutes everything else."


async def test_events_it_does_not_handle_are_acknowledged_and_ignored(
    make_bot: BotFactory,
) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install)
    status, body = await bot.github("issues", {"action": "opened"})
    assert status == 202 and "not handled" in body["ignored"]
    assert recorder.events == []


async def test_signed_but_invalid_json_is_400(bot: Bot) -> None:
    status, body = await bot.github("pull_request", b"{not json")
    assert status == 400 and "not JSON" in body["error"]


async def test_a_payload_missing_what_is_needed_is_400_with_the_reason(
    make_bot: BotFactory,
) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install)
    payload = copy.deepcopy(reference("github_webhooks/pull_request/labeled.payload.json"))
    del payload["pull_request"]["head"]
    status, body = await bot.github("pull_request", payload)
    assert status == 400 and "pull_request.head.ref" in body["error"]
    assert recorder.events == []


async def test_a_redelivery_is_acted_on_once(make_bot: BotFactory) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install)
    payload = reference("github_webhooks/pull_request/labeled.payload.json")
    first = await bot.github("pull_request", payload, delivery="same-guid")
    again = await asyncio.gather(
        *(bot.github("pull_request", payload, delivery="same-guid") for _ in range(5))
    )
    assert first[0] == 202
    assert all(status == 200 and body == {"duplicate": True} for status, body in again)
    assert len(recorder.events) == 1


async def test_dedupe_survives_a_restart(make_bot: BotFactory) -> None:
    recorder = Recorder()
    first: Bot = await make_bot(recorder.install)
    payload = reference("github_webhooks/pull_request/labeled.payload.json")
    assert (await first.github("pull_request", payload, delivery="guid-r"))[0] == 202
    await first.runtime.stop()
    second: Bot = await make_bot(recorder.install)  # same UAT_DB file
    assert (await second.github("pull_request", payload, delivery="guid-r"))[0] == 200
    assert len(recorder.events) == 1


async def test_a_failed_handling_can_be_redelivered(make_bot: BotFactory) -> None:
    recorder = Recorder(fail=1)
    bot: Bot = await make_bot(recorder.install)
    payload = reference("github_webhooks/pull_request/labeled.payload.json")
    assert (await bot.github("pull_request", payload, delivery="guid-f"))[0] == 500
    assert (await bot.github("pull_request", payload, delivery="guid-f"))[0] == 202
    assert len(recorder.events) == 1


async def test_other_repositories_are_ignored(make_bot: BotFactory) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install, UAT_REPOSITORIES="acme/web, acme/api")
    payload = reference("github_webhooks/pull_request/labeled.payload.json")
    status, body = await bot.github("pull_request", payload)
    assert status == 202 and "Codertocat/Hello-World is not handled" in body["ignored"]
    assert recorder.events == []


async def test_healthz_reports_the_store(bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "STORE_TTL_S", 0.0)  # probe at each request, not every 5 s
    async with bot.http.get(f"{bot.url}/healthz") as response:
        assert response.status == 200
        assert (await response.json())["store"] == "ok"
    await bot.runtime.services.store.close()
    async with bot.http.get(f"{bot.url}/healthz") as response:
        assert response.status == 503
