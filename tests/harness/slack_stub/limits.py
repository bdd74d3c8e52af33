"""Slack's rate limits and response_url limits, as strict as Slack.

Rate limits (off unless a test asks, `SlackStub.real_rate_limits()`; the bench always asks):
https://api.slack.com/apis/rate-limits. Each Web API method has a tier, counted per method per
workspace: Tier 1 allows 1+ calls a minute, Tier 2 20+, Tier 3 50+, Tier 4 100+, "with
occasional bursts" allowed. chat.postMessage is "special": "1 message per second to a specific
channel, with short bursts of more than 1 allowed" (https://api.slack.com/methods/chat.postMessage).
Past a limit Slack answers HTTP 429 with a `Retry-After` header (whole seconds) and
`{"ok": false, "error": "ratelimited"}`; a refused call spends nothing.

The stub models each limit as a token bucket: a tier's bucket holds a minute's calls and refills
evenly over the minute; a channel's chat.postMessage bucket holds POST_BURST messages and refills
one a second.

response_url (always on): "You can use a response_url up to five times within 30 minutes of
receiving it" (https://api.slack.com/interactivity/handling#message_responses); past either,
Slack refuses the post (HTTP 404 `used_url` / `expired_url`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Calls a minute per tier (https://api.slack.com/apis/rate-limits#tiers)
TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
# Each method's tier, from its page https://api.slack.com/methods/<method> ("Rate limits").
METHOD_TIERS = {
    "auth.test": 4,  # special: "Tier 4 ... plus more" in practice; Tier 4 here
    "chat.delete": 3,
    "chat.getPermalink": 4,
    "chat.postEphemeral": 4,
    "chat.update": 3,
    "conversations.history": 3,
    "conversations.replies": 3,
    "files.completeUploadExternal": 4,
    "files.getUploadURLExternal": 4,
    "usergroups.users.list": 2,
    "views.open": 4,
    "views.publish": 4,
}
POST_METHOD = "chat.postMessage"
POST_PER_S = 1.0  # https://api.slack.com/methods/chat.postMessage "Rate limiting"
POST_BURST = 3  # "short bursts of more than 1 allowed": Slack does not say how many; 3 here
RESPONSE_URL_USES = 5
RESPONSE_URL_S = 30 * 60.0
EPSILON = 1e-6  # float slack: a call arriving on the dot of its token is let through


@dataclass
class Bucket:
    """A token bucket: `capacity` tokens, refilled `per_s` a second, starting full."""

    capacity: float
    per_s: float
    tokens: float = field(init=False)
    at: float = field(init=False, default=-math.inf)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    def take(self, now: float) -> float | None:
        """Spend a token: None when there was one, else the seconds until there is."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_s)
        self.at = now
        if self.tokens >= 1 - EPSILON:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.per_s


class RateLimits:
    """Slack's per-tier and per-channel limits (see the module docstring); off until `on`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.enabled = False
        self.refused = 0  # 429s answered
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def on(self) -> None:
        self.enabled = True

    def retry_after(self, method: str, channel: str | None) -> int | None:
        """None when the call may go ahead (and spend a token), else Retry-After in seconds."""
        if not self.enabled:
            return None
        if method == POST_METHOD:
            key = (method, channel or "")
            bucket = self._buckets.setdefault(key, Bucket(POST_BURST, POST_PER_S))
        elif method in METHOD_TIERS:
            per_minute = TIER_PER_MINUTE[METHOD_TIERS[method]]
            bucket = self._buckets.setdefault((method, ""), Bucket(per_minute, per_minute / 60))
        else:
            return None
        wait = bucket.take(self.clock())
        if wait is None:
            return None
        self.refused += 1
        return max(1, math.ceil(wait))


@dataclass
class UrlUses:
    issued_at: float
    uses: int = 0


class ResponseUrlLimits:
    """How often and how long each issued response_url may be used (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._urls: dict[str, UrlUses] = {}

    def issued(self, url_id: str) -> None:
        self._urls[url_id] = UrlUses(self.clock())

    def age(self, url_id: str, seconds: float) -> None:
        """Make `url_id` as if it was issued `seconds` earlier (a test's half hour)."""
        self._urls[url_id].issued_at -= seconds

    def refusal(self, url_id: str) -> str | None:
        """None when this use is allowed (and counted), else Slack's error for it."""
        url = self._urls.get(url_id)
        if url is None:
            return None
        if self.clock() - url.issued_at > RESPONSE_URL_S:
            return "expired_url"
        if url.uses >= RESPONSE_URL_USES:
            return "used_url"
        url.uses += 1
        return None
