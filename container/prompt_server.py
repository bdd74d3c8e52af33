"""The UAT container's prompt server: health, version, and a FIFO queue of agent prompts.

`python container/prompt_server.py` serves, on `PROMPT_HOST:PROMPT_PORT` (default 0.0.0.0:8080):

    GET    /health        200 {"ready": true, "phase": "ready"} once the app answers on APP_PORT
                          and PHASE_FILE does not say "failed"; else 503 {"ready": false, "phase",
                          "error"}
    GET    /version       the checkout in WORK_DIR: {"commit", "short", "branch", "date", "subject"}
    GET    /status        {"running": job | null, "queue": [job, ...], "recent": [job, ...]}
    POST   /prompt        {"prompt", "user", "thread"} -> 202 {"id", "position", "state"}
    GET    /prompts/{id}  one job (see `Job`, plus "position"), 404 when unknown
    GET    /prompts/{id}/output
                          the job's full output so far as text/plain; charset=utf-8, 404 when the
                          job is unknown or has no output file (still queued, never started the
                          agent, or the file is gone)
    DELETE /prompts/{id}  cancels a queued job or kills a running one
    POST   /claim         warm-pool tasks only (see "Pool mode" below): 200 once, 409 after

Every endpoint but /health and /claim needs `Authorization: Bearer <token>` (UAT_PROMPT_TOKEN, or
the first line of the file UAT_PROMPT_TOKEN_FILE names), compared in constant time: 401 without it,
503 when no token is configured. What /status, the job views and the output files show has secrets
removed (`scrub`): this container's own tokens and anything shaped like a credential become
`[redacted]`.

`position` is the number of jobs ahead of the new one, the running job included: 0 means it starts
at once, 1 that it runs after the current job, and so on. "recent" lists finished jobs newest first
(the last RECENT_LIMIT are kept).

Jobs run one at a time, in order, as `CLAUDE_CMD -p <prompt> --output-format stream-json --verbose`
(an argument list, never a shell) in WORK_DIR, each in its own process group, which is killed on
cancel, on timeout (PROMPT_TIMEOUT_S) and when the job ends (stray children of the agent). The queue
and recent jobs are saved to PROMPT_STATE atomically on every change; on start, queued jobs are kept
and a job that was running is marked failed with the error "interrupted". A state file that is not
JSON, or whose JSON does not have the saved shape and types, is moved aside to
`<PROMPT_STATE>.corrupt-<unix time>` (logged) and the server starts empty.

Full output: what the job's `output_tail` shows (agent text, `[tool: NAME]` lines, the result
text, one piece per line) is also appended to `<PROMPT_OUTPUT_DIR>/<job id>.txt` (utf-8) while the
job runs, up to PROMPT_OUTPUT_MAX_BYTES (default 5 MiB); past that, one last line
`… output cut at 5 MiB` and the rest is dropped (`output_chars` still counts it all,
`output_truncated` says so). PROMPT_OUTPUT_DIR defaults to `<PROMPT_STATE>.outputs` next to the
state file, or, without PROMPT_STATE, a temporary folder removed when the server stops. A job's file
is deleted when it drops out of "recent"; on start, files of jobs the state does not know are.

PHASE_FILE protocol (written by entrypoint.sh, atomically: temp file + rename): one JSON object
`{"phase": "cloning" | "installing" | "starting" | "ready" | "failed", "error": str | null,
"updated_at": str}`, and "waiting" in pool mode until the claim. A file that is not JSON is read
as text: the first line is the phase, the rest the error. No file (or no PHASE_FILE) counts as
"starting". While the phase is "waiting" or "cloning" the queue waits; readiness itself is decided
here, by a TCP connect to 127.0.0.1 (then ::1) on APP_PORT.

Pool mode (a warm-pool task, started before anyone knows which pull request it will run): with a
pool token (UAT_POOL_TOKEN, or the first line of UAT_POOL_TOKEN_FILE), UAT_CLAIM_FILE and
UAT_PROMPT_TOKEN_FILE set, and no claim file yet, /health answers 503 {"phase": "waiting"} and
every other endpoint but /claim 503. `POST /claim` with `Authorization: Bearer <pool token>`
(constant time; 401 without it) and the JSON object `{"repo", "git_ref", "head_sha",
"session_id", "prompt_token"}` (optional "branch" and "pr_number") checks every field (400 naming
the first bad one, see `parse_claim`), writes the prompt token to UAT_PROMPT_TOKEN_FILE (0400),
then the claim to UAT_CLAIM_FILE (0400, created exclusively; `KEY=value` lines: REPO, GIT_REF,
HEAD_SHA, SESSION_ID, BRANCH, PR_NUMBER, which entrypoint.sh waits for and clones from) and
answers 200. From then on the prompt token opens the other endpoints and the pool token nothing:
/claim answers 409 to anyone, as it does on a task that is not a pool member, and a server
restarted after the claim finds the claim file and starts claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import web

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS: Final = 20_000
MAX_QUEUED: Final = 50
RECENT_LIMIT: Final = 50
OUTPUT_TAIL_CHARS: Final = 4_000
MAX_OUTPUT_BYTES: Final = 5 * 1024 * 1024  # one job's full output file, before the cut marker
OUTPUT_CUT_PREFIX: Final = "… output cut at "
STDERR_TAIL_CHARS: Final = 2_000
MAX_LINE_BYTES: Final = 16 * 1024 * 1024  # one stream-json line; longer ones are skipped
MAX_FILES_LISTED: Final = 500
KILL_GRACE_S: Final = 3.0  # SIGTERM to the process group, then SIGKILL after this
STRAGGLER_GRACE_S: Final = 2.0  # the agent exited but something it started holds its pipes
GIT_TIMEOUT_S: Final = 30.0
APP_PROBE_TIMEOUT_S: Final = 1.0
CHECKOUT_POLL_S: Final = 0.5

JOB_ID: Final = re.compile(r"[0-9a-f]{12}")  # what `new_job_id` makes; names output files
PHASES: Final = ("waiting", "cloning", "installing", "starting", "ready", "failed")
ACTIVE_STATES: Final = ("queued", "running")
JOB_STATES: Final = (*ACTIVE_STATES, "succeeded", "failed", "cancelled", "timed_out")
INTERRUPTED: Final = "interrupted"

# ---------------------------------------------------------------------------- secrets

REDACTED: Final = "[redacted]"
# This container's own secrets, by the environment variable that holds them (or names their file):
# their values are removed wherever they appear, whatever their shape.
SECRET_ENV: Final = (
    "UAT_PROMPT_TOKEN",
    "GIT_TOKEN",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
SECRET_FILE_ENV: Final = ("UAT_PROMPT_TOKEN_FILE", "GIT_TOKEN_FILE")
MIN_SECRET_CHARS: Final = 8  # shorter values would blank ordinary words
# Anything shaped like a credential. The same list, and marker, as the bot's scrubber (container/
# ships alone, so it keeps its own copy):
# - GitHub tokens: ghp_ (personal), gho_ (OAuth), ghu_ (user-to-server), ghs_ (server-to-server,
#   installation and Actions), ghr_ (refresh) and github_pat_ (fine-grained), base62 after the
#   prefix: https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/ and
#   https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/about-authentication-to-github#githubs-token-formats
# - Slack tokens: xoxb- (bot), xoxp- (user), xoxa- and xoxr- (workspace/refresh), xapp- (app-level):
#   https://api.slack.com/authentication/token-types
# - AWS access key ids, AKIA (long-term) and ASIA (temporary), 20 upper-case letters and digits:
#   https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-unique-ids
#   and a secret access key written as `aws_secret_access_key = ...` (the CLI's credentials file:
#   https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-files.html): the value only.
# - Anthropic API keys, sk-ant-...: https://docs.anthropic.com/en/api/getting-started
# - The value of an `Authorization:` header (bearer tokens, basic credentials), up to the line end.
CREDENTIAL: Final = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9_]{20,}|github_pat_[A-Za-z0-9_]{20,})"
    r"|\b(?:xox[abpr]|xapp)-[A-Za-z0-9-]{10,}"
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"
    r"|(?<=aws_secret_access_key)(\s*[=:]\s*)[\"']?[A-Za-z0-9/+=]{20,}[\"']?"
    r"|\bsk-ant-[A-Za-z0-9_-]{10,}"
    r"|(?<=authorization)(\s*:\s*)[^\r\n]+",
    re.IGNORECASE,
)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with each of `secrets` and anything `CREDENTIAL` matches replaced by REDACTED (a
    name before the secret, as in `Authorization: ...`, is kept)."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, REDACTED)
    return CREDENTIAL.sub(lambda m: f"{m.group(1) or m.group(2) or ''}{REDACTED}", text)


def scrub_all(value: Any, secrets: tuple[str, ...]) -> Any:
    """`scrub` applied to every string in a JSON-like value."""
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, list):
        return [scrub_all(item, secrets) for item in value]
    if isinstance(value, dict):
        return {key: scrub_all(item, secrets) for key, item in value.items()}
    return value


def read_secret_file(path: str) -> str | None:
    """The first line of a secret's file ("" when it is empty), or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().strip()
    except (OSError, ValueError):
        return None


class ConfigError(ValueError):
    """The environment does not describe a server that can run; the message lists every problem."""


@dataclass(frozen=True)
class Config:
    """Everything the server reads from its environment (see `Config.from_env`)."""

    work_dir: Path
    host: str = "0.0.0.0"
    port: int = 8080
    app_port: int = 3001
    token: str | None = field(default=None, repr=False)
    claude_cmd: tuple[str, ...] = ("claude",)
    timeout_s: float = 1800.0
    state_file: Path | None = None
    phase_file: Path | None = None
    output_dir: Path | None = None  # None: see `outputs_folder`
    output_max_bytes: int = MAX_OUTPUT_BYTES
    secrets: tuple[str, ...] = field(default=(), repr=False)  # values `scrub` removes
    # Pool mode (see the module docstring): the pool token, until the claim replaces it.
    pool_token: str | None = field(default=None, repr=False)
    claim_file: Path | None = None
    token_file: Path | None = None  # where a claim writes the prompt token

    @property
    def claimable(self) -> bool:
        """Whether this is a pool-mode server that has not been claimed yet."""
        return bool(self.pool_token and self.claim_file and self.token_file and not self.token)

    @property
    def hidden(self) -> tuple[str, ...]:
        """What `scrub` removes besides credential shapes: the token and the other secrets."""
        return (self.token, *self.secrets) if self.token else self.secrets

    @property
    def outputs_folder(self) -> Path | None:
        """Where full job outputs go: `output_dir`, else `<state_file>.outputs`, else None (the
        queue then makes a temporary folder)."""
        if self.output_dir is not None:
            return self.output_dir
        if self.state_file is not None:
            return self.state_file.with_name(f"{self.state_file.name}.outputs")
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """Read PROMPT_HOST, PROMPT_PORT, APP_PORT, WORK_DIR, UAT_PROMPT_TOKEN (or
        UAT_PROMPT_TOKEN_FILE), CLAUDE_CMD, PROMPT_TIMEOUT_S, PROMPT_STATE, PHASE_FILE,
        PROMPT_OUTPUT_DIR, PROMPT_OUTPUT_MAX_BYTES, the secrets to scrub (SECRET_ENV,
        SECRET_FILE_ENV) and pool mode's UAT_POOL_TOKEN (or UAT_POOL_TOKEN_FILE) and
        UAT_CLAIM_FILE; raise ConfigError naming each bad value."""
        problems: list[str] = []

        def port(name: str, default: int) -> int:
            raw = env.get(name, "").strip() or str(default)
            if raw.isdigit() and 0 < int(raw) < 65536:
                return int(raw)
            problems.append(f"{name}={raw!r} is not a TCP port (1-65535)")
            return default

        def optional_path(name: str) -> Path | None:
            raw = env.get(name, "").strip()
            return Path(raw) if raw else None

        prompt_port = port("PROMPT_PORT", 8080)
        app_port = port("APP_PORT", 3001)
        timeout_raw = env.get("PROMPT_TIMEOUT_S", "").strip() or "1800"
        try:
            timeout_s = float(timeout_raw)
            if not timeout_s > 0:
                raise ValueError(timeout_raw)
        except ValueError:
            problems.append(f"PROMPT_TIMEOUT_S={timeout_raw!r} is not a positive number of seconds")
            timeout_s = 1800.0
        max_bytes_raw = env.get("PROMPT_OUTPUT_MAX_BYTES", "").strip() or str(MAX_OUTPUT_BYTES)
        if max_bytes_raw.isdigit() and int(max_bytes_raw) > 0:
            output_max_bytes = int(max_bytes_raw)
        else:
            problems.append(
                f"PROMPT_OUTPUT_MAX_BYTES={max_bytes_raw!r} is not a positive number of bytes"
            )
            output_max_bytes = MAX_OUTPUT_BYTES
        try:
            claude_cmd = tuple(shlex.split(env.get("CLAUDE_CMD", "").strip() or "claude"))
        except ValueError as exc:
            problems.append(f"CLAUDE_CMD cannot be split into arguments: {exc}")
            claude_cmd = ("claude",)
        pool_token = env.get("UAT_POOL_TOKEN") or None
        pool_token_file = env.get("UAT_POOL_TOKEN_FILE", "").strip()
        if pool_token is None and pool_token_file:
            pool_token = read_secret_file(pool_token_file) or None
        claim_file = optional_path("UAT_CLAIM_FILE")
        token = env.get("UAT_PROMPT_TOKEN") or None
        token_file = env.get("UAT_PROMPT_TOKEN_FILE", "").strip()
        if token is None and token_file:
            token = read_secret_file(token_file) or None
            waits_for_claim = pool_token is not None and not os.path.exists(token_file)
            if token is None and not waits_for_claim and not os.access(token_file, os.R_OK):
                problems.append(f"UAT_PROMPT_TOKEN_FILE={token_file!r} cannot be read")
        if pool_token and not (claim_file and token_file):
            problems.append(
                "a pool token is set but UAT_CLAIM_FILE or UAT_PROMPT_TOKEN_FILE is not: a claim"
                " needs both to hand over the environment"
            )
        if problems:
            raise ConfigError("; ".join(problems))
        secrets = [env.get(name, "") for name in SECRET_ENV]
        secrets += [read_secret_file(env[name]) or "" for name in SECRET_FILE_ENV if env.get(name)]
        return cls(
            work_dir=Path(env.get("WORK_DIR", "").strip() or os.getcwd()),
            host=env.get("PROMPT_HOST", "").strip() or "0.0.0.0",
            port=prompt_port,
            app_port=app_port,
            token=token,
            claude_cmd=claude_cmd,
            timeout_s=timeout_s,
            state_file=optional_path("PROMPT_STATE"),
            phase_file=optional_path("PHASE_FILE"),
            output_dir=optional_path("PROMPT_OUTPUT_DIR"),
            output_max_bytes=output_max_bytes,
            secrets=tuple(sorted({s for s in secrets if s}, key=len, reverse=True)),
            pool_token=pool_token,
            claim_file=claim_file,
            token_file=Path(token_file) if token_file else None,
        )


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Job:
    """One prompt and, once it ran, what came of it. `to_dict` is its JSON form."""

    id: str
    prompt: str
    user: str | None
    thread: str | None
    created_at: str
    state: str = "queued"
    started_at: str | None = None
    finished_at: str | None = None
    summary: str | None = None
    output_tail: str = ""
    output_chars: int = 0  # characters of full output (one piece per line), before any cut
    output_truncated: bool = False  # the output file stops at output_max_bytes
    cost_usd: float | None = None
    duration_s: float | None = None
    usage: dict[str, Any] | None = None
    commit: str | None = None
    pushed: bool | None = None
    files_changed: list[str] = field(default_factory=list)
    exit_code: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_saved(cls, data: object) -> Job:
        """A job as `to_dict` wrote it to PROMPT_STATE; ValueError saying what is wrong when a
        field is missing or of another type, or the id or state is not one this server makes."""
        if not isinstance(data, dict):
            raise ValueError(f"a job is a {type(data).__name__}, not an object")
        try:
            job = cls.from_dict(data)
        except TypeError as exc:
            raise ValueError(f"a job lacks a field: {exc}") from None
        for name, kinds in SAVED_TYPES.items():
            value = getattr(job, name)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ValueError(f"job field {name} is a {type(value).__name__}")
        if not JOB_ID.fullmatch(job.id):
            raise ValueError(f"job id {job.id!r} is not 12 hex digits")
        if job.state not in JOB_STATES:
            raise ValueError(f"job {job.id} has the unknown state {job.state!r}")
        if not all(isinstance(path, str) for path in job.files_changed):
            raise ValueError(f"job {job.id} lists a changed file that is not a string")
        return job


OPTIONAL_TEXT: Final = (str, type(None))
NUMBER: Final = (int, float, type(None))
# The type each saved field must have (bool only where listed: JSON true is not a count).
SAVED_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "id": (str,),
    "prompt": (str,),
    "user": OPTIONAL_TEXT,
    "thread": OPTIONAL_TEXT,
    "created_at": (str,),
    "state": (str,),
    "started_at": OPTIONAL_TEXT,
    "finished_at": OPTIONAL_TEXT,
    "summary": OPTIONAL_TEXT,
    "output_tail": (str,),
    "output_chars": (int,),
    "output_truncated": (bool,),
    "cost_usd": NUMBER,
    "duration_s": NUMBER,
    "usage": (dict, type(None)),
    "commit": OPTIONAL_TEXT,
    "pushed": (bool, type(None)),
    "files_changed": (list,),
    "exit_code": (int, type(None)),
    "error": OPTIONAL_TEXT,
}


@dataclass(frozen=True)
class Phase:
    """What PHASE_FILE says: the entrypoint's phase and, when it failed, why."""

    phase: str
    error: str | None = None
    updated_at: str | None = None


def read_phase(path: Path | None) -> Phase:
    """Read the PHASE_FILE protocol described in the module docstring."""
    if path is None:
        return Phase("starting")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return Phase("starting")
    try:
        data = json.loads(text)
    except ValueError:
        first, _, rest = text.strip().partition("\n")
        return Phase(first.strip() or "starting", rest.strip() or None)
    if not isinstance(data, dict):
        return Phase("starting")
    phase = data.get("phase")
    error = data.get("error")
    updated = data.get("updated_at")
    return Phase(
        phase if isinstance(phase, str) and phase else "starting",
        error if isinstance(error, str) and error else None,
        updated if isinstance(updated, str) else None,
    )


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a temp file in the same folder, fsync, os.replace, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class TextTail:
    """The last `limit` characters of the pieces appended, one piece per line."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.text = ""

    def add(self, piece: str) -> None:
        piece = piece.rstrip("\n")
        if piece:
            self.text = (f"{self.text}\n{piece}" if self.text else piece)[-self.limit :]


def size_text(limit: int) -> str:
    """A byte count as people write it: "5 MiB", "8 KiB", "1000 bytes"."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= size and limit % size == 0:
            return f"{limit // size} {unit}"
    return f"{limit} bytes"


class OutputFile:
    """A job's full output: the pieces it shows, one per line, appended to a utf-8 file through a
    buffered file object (flushed after each piece, never fsynced). Past `limit` bytes, one
    `… output cut at …` line ends the file and the rest is only counted in `job.output_chars`."""

    def __init__(self, job: Job, path: Path, limit: int) -> None:
        self.job = job
        self.path = path
        self.limit = limit
        self.written = 0
        self._file: io.BufferedWriter | None = path.open("wb")

    def add(self, piece: str) -> None:
        piece = piece.rstrip("\n")
        if not piece:
            return
        line = f"{piece}\n"
        self.job.output_chars += len(line)
        if self._file is None or self.job.output_truncated:
            return
        data = line.encode("utf-8", errors="replace")
        try:
            if self.written + len(data) <= self.limit:
                self._file.write(data)
                self.written += len(data)
            else:
                self._cut(data)
            self._file.flush()
        except OSError as exc:
            logger.error("job %s: cannot write its output to %s: %s", self.job.id, self.path, exc)
            self.close()

    def _cut(self, data: bytes) -> None:
        assert self._file is not None
        room = data[: self.limit - self.written].decode("utf-8", errors="ignore")
        kept = room.encode("utf-8")
        if kept:
            self._file.write(kept + b"\n")
        self._file.write(f"{OUTPUT_CUT_PREFIX}{size_text(self.limit)}\n".encode())
        self.written += len(kept)
        self.job.output_truncated = True
        logger.warning("job %s: output cut at %d bytes", self.job.id, self.limit)

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as exc:
                logger.error("job %s: cannot write its output: %s", self.job.id, exc)


class StreamJson:
    """Reads the agent's stream-json lines into a job: output tail (and full output), summary,
    cost, usage."""

    def __init__(
        self, job: Job, output: OutputFile | None = None, secrets: tuple[str, ...] = ()
    ) -> None:
        self.job = job
        self.output = output
        self.secrets = secrets
        self.tail = TextTail(OUTPUT_TAIL_CHARS)
        self.last_text: str | None = None
        self.result: dict[str, Any] | None = None

    def feed(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            return
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self._show(line)
            return
        kind = event.get("type")
        if kind == "assistant":
            message = event.get("message")
            content = message.get("content") if isinstance(message, dict) else None
            for block in content if isinstance(content, list) else []:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "text" and isinstance(block.get("text"), str):
                    self.last_text = block["text"]
                    self._show(block["text"])
                elif block.get("type") == "tool_use":
                    self._show(f"[tool: {block.get('name', '?')}]")
        elif kind == "result":
            self.result = event
            text = event.get("result")
            if isinstance(text, str) and text.strip() != (self.last_text or "").strip():
                self._show(text)
        elif kind == "system" and event.get("subtype") == "init":
            logger.info("job %s: agent session %s started", self.job.id, event.get("session_id"))

    def _show(self, text: str) -> None:
        text = scrub(text, self.secrets)
        self.tail.add(text)
        self.job.output_tail = self.tail.text
        if self.output is not None:
            self.output.add(text)

    @property
    def is_error(self) -> bool:
        if self.result is None:
            return False
        return bool(self.result.get("is_error")) or self.result.get("subtype") not in (
            None,
            "success",
        )

    def finish(self) -> None:
        """Copy the result line's figures into the job."""
        result = self.result or {}
        text = result.get("result")
        summary = text if isinstance(text, str) and text.strip() else self.last_text
        self.job.summary = summary
        cost = result.get("total_cost_usd", result.get("cost_usd"))
        if isinstance(cost, int | float) and not isinstance(cost, bool):
            self.job.cost_usd = float(cost)
        duration = result.get("duration_ms")
        if isinstance(duration, int | float) and not isinstance(duration, bool):
            self.job.duration_s = round(duration / 1000, 3)
        usage = result.get("usage")
        if isinstance(usage, dict):
            self.job.usage = usage


async def pump_lines(stream: asyncio.StreamReader | None, on_line: Callable[[bytes], None]) -> None:
    """Call `on_line` for each line of `stream` until EOF; lines over MAX_LINE_BYTES are skipped."""
    if stream is None:
        return
    buffer = bytearray()
    skipping = False
    while chunk := await stream.read(65536):
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            if not skipping:
                on_line(bytes(buffer[:end]))
            skipping = False
            del buffer[: end + 1]
        if len(buffer) > MAX_LINE_BYTES:
            logger.warning("skipping an output line longer than %d bytes", MAX_LINE_BYTES)
            buffer.clear()
            skipping = True
    if buffer and not skipping:
        on_line(bytes(buffer))


async def poll_until(check: Callable[[], bool], limit_s: float | None, interval: float) -> bool:
    """Wait until `check()` holds, for state only polling can see (a file, a child's exit status,
    which asyncio reports only once its pipes close); False when `limit_s` passed first."""
    deadline = None if limit_s is None else time.monotonic() + limit_s
    while True:
        if check():
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


def kill_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def parse_status_z(out: str) -> list[str]:
    """Paths from `git status --porcelain=v1 -z` (renames list the new path)."""
    paths: list[str] = []
    entries = iter(out.split("\0"))
    for entry in entries:
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":
            next(entries, None)  # the original path of a rename or copy
    return paths


class Git:
    """git in WORK_DIR, always as an argument list, with a timeout."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir

    async def run(self, *args: str) -> str | None:
        """git's stdout, or None when it failed (not a checkout yet, no such ref...)."""
        if not self.work_dir.is_dir():
            return None
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
        try:
            proc = await asyncio.create_subprocess_exec(
                "git",
                *args,
                cwd=self.work_dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            logger.warning("cannot run git: %s", exc)
            return None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), GIT_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            logger.warning("git %s timed out after %.0f s", args[0], GIT_TIMEOUT_S)
            return None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        if proc.returncode != 0:
            logger.debug("git %s failed: %s", args[0], err.decode(errors="replace").strip())
            return None
        return out.decode("utf-8", errors="replace")

    async def head(self) -> str | None:
        out = await self.run("rev-parse", "--verify", "-q", "HEAD")
        return (out or "").strip() or None

    async def version(self) -> dict[str, str | None] | None:
        out = await self.run("log", "-1", "--format=%H%x00%h%x00%cI%x00%s")
        if not out:
            return None
        commit, short, date, subject = [*out.rstrip("\n").split("\0"), "", "", ""][:4]
        branch = (await self.run("rev-parse", "--abbrev-ref", "HEAD") or "").strip()
        return {
            "commit": commit,
            "short": short,
            "branch": branch if branch and branch != "HEAD" else None,
            "date": date,
            "subject": subject,
        }

    async def changes(self, before: str | None, after: str | None) -> list[str]:
        """Files changed by commits before..after, plus what `git status` shows uncommitted."""
        paths: list[str] = []
        if before and after and before != after:
            out = await self.run("diff", "--name-only", "-z", f"{before}..{after}")
            paths += [p for p in (out or "").split("\0") if p]
        paths += parse_status_z(await self.run("status", "--porcelain=v1", "-z") or "")
        return sorted(set(paths))[:MAX_FILES_LISTED]


class PromptQueue:
    """The FIFO of jobs, the one worker that runs them, and their persistence."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.git = Git(config.work_dir)
        self._queue: deque[Job] = deque()
        self._running: Job | None = None
        self._recent: list[Job] = []  # newest first
        self._jobs: dict[str, Job] = {}
        self._wake = asyncio.Event()
        self._cancel = asyncio.Event()  # set to cancel the running job
        self._running_done = asyncio.Event()
        self._write_lock = threading.Lock()  # saves run in threads; the newest snapshot wins
        self._snapshots = 0
        self._written = 0
        self.output_dir: Path | None = None  # set by `open_outputs`
        self._temporary_output_dir = False
        self._output: OutputFile | None = None  # the running job's

    # ------------------------------------------------------------------ full outputs

    def open_outputs(self) -> None:
        """Make the folder for full outputs (a temporary one when the config names none)."""
        folder = self.config.outputs_folder
        try:
            if folder is None:
                folder = Path(tempfile.mkdtemp(prefix="prompt-outputs-"))
                self._temporary_output_dir = True
            else:
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.error("cannot make a folder for job outputs (%s): not keeping them", exc)
            return
        self.output_dir = folder
        logger.info("full job outputs go to %s", folder)

    def close_outputs(self) -> None:
        """Close the running job's output file; remove the folder if it was a temporary one."""
        if self._output is not None:
            self._output.close()
            self._output = None
        if self._temporary_output_dir and self.output_dir is not None:
            shutil.rmtree(self.output_dir, ignore_errors=True)
            self.output_dir = None
            self._temporary_output_dir = False

    def output_path(self, job: Job) -> Path | None:
        """Where the job's full output is (or would be) kept; None when outputs are not kept."""
        if self.output_dir is None or not JOB_ID.fullmatch(job.id):
            return None
        return self.output_dir / f"{job.id}.txt"

    def _open_output(self, job: Job) -> OutputFile | None:
        path = self.output_path(job)
        if path is None:
            return None
        try:
            return OutputFile(job, path, self.config.output_max_bytes)
        except OSError as exc:
            logger.error("job %s: cannot keep its full output in %s: %s", job.id, path, exc)
            return None

    def _forget_output(self, job: Job) -> None:
        path = self.output_path(job)
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("job %s: cannot delete its output %s: %s", job.id, path, exc)

    def prune_outputs(self) -> None:
        """Delete output files of jobs this queue does not know (best effort)."""
        if self.output_dir is None:
            return
        try:
            found = list(self.output_dir.glob("*.txt"))
        except OSError as exc:
            logger.warning("cannot list %s: %s", self.output_dir, exc)
            return
        for path in found:
            if JOB_ID.fullmatch(path.stem) and path.stem not in self._jobs:
                with contextlib.suppress(OSError):
                    path.unlink()
                    logger.info("deleted the output of forgotten job %s", path.stem)

    def _recount_output(self, job: Job) -> None:
        """After a crash: count what the interrupted job's output file holds (the state file was
        last saved when the job started)."""
        path = self.output_path(job)
        if path is None:
            return
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        body, _, last = text.rstrip("\n").rpartition("\n")
        if last.startswith(OUTPUT_CUT_PREFIX):
            job.output_truncated = True
            text = f"{body}\n" if body else ""
        job.output_chars = max(job.output_chars, len(text))

    # ------------------------------------------------------------------ reading

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """Jobs ahead of a queued job, the running one included; None when it is not queued."""
        if job.state != "queued":
            return None
        ahead = next((i for i, queued in enumerate(self._queue) if queued is job), 0)
        return ahead + (1 if self._running else 0)

    def view(self, job: Job) -> dict[str, Any]:
        """The job as the API shows it: secrets scrubbed, with its queue position."""
        shown: dict[str, Any] = scrub_all(job.to_dict(), self.config.hidden)
        return {**shown, "position": self.position(job)}

    def status(self) -> dict[str, Any]:
        return {
            "running": self.view(self._running) if self._running else None,
            "queue": [self.view(job) for job in self._queue],
            "recent": [self.view(job) for job in self._recent],
        }

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------ changing

    async def submit(self, prompt: str, user: str | None, thread: str | None) -> Job:
        job = Job(new_job_id(), prompt, user, thread, created_at=now_iso())
        self._queue.append(job)
        self._jobs[job.id] = job
        self._wake.set()
        await self.save()
        return job

    async def cancel(self, job: Job) -> Job:
        """Cancel a queued job, or kill a running one and wait until it is recorded."""
        if job.state == "queued":
            self._queue.remove(job)
            job.state = "cancelled"
            job.error = "cancelled before it started"
            job.finished_at = now_iso()
            self._remember(job)
            logger.info("job %s cancelled while queued", job.id)
            await self.save()
        elif job.state == "running" and job is self._running:
            logger.info("job %s: cancelling the running agent", job.id)
            self._cancel.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._running_done.wait(), KILL_GRACE_S + STRAGGLER_GRACE_S + 5
                )
        return job

    def _remember(self, job: Job) -> None:
        self._recent.insert(0, job)
        for old in self._recent[RECENT_LIMIT:]:
            self._jobs.pop(old.id, None)
            self._forget_output(old)
        del self._recent[RECENT_LIMIT:]

    # ------------------------------------------------------------------ persistence

    def _snapshot(self) -> bytes:
        data = {
            "version": 1,
            "saved_at": now_iso(),
            "queue": [job.to_dict() for job in self._queue],
            "running": self._running.to_dict() if self._running else None,
            "recent": [job.to_dict() for job in self._recent],
        }
        return json.dumps(data, indent=1).encode()

    async def save(self) -> None:
        """Write the queue to PROMPT_STATE (in a thread: it fsyncs)."""
        if self.config.state_file is not None:
            self._snapshots += 1
            await asyncio.to_thread(self._write, self._snapshots, self._snapshot())

    def _save_now(self) -> None:
        """Write the queue at once, without awaiting (the worker is being cancelled)."""
        if self.config.state_file is not None:
            self._snapshots += 1
            self._write(self._snapshots, self._snapshot())

    def _write(self, number: int, data: bytes) -> None:
        path = self.config.state_file
        with self._write_lock:
            if path is None or number <= self._written:
                return  # a newer snapshot is already on disk
            try:
                atomic_write(path, data)
                self._written = number
            except OSError as exc:
                logger.error("cannot save the prompt queue to %s: %s", path, exc)

    async def load(self) -> None:
        """Take over PROMPT_STATE: keep queued jobs, fail the one that was running."""
        path = self.config.state_file
        if path is None or not path.exists():
            return
        try:
            data = json.loads(await asyncio.to_thread(path.read_bytes))
            if not isinstance(data, dict):
                raise ValueError(f"the file holds a {type(data).__name__}, not an object")
            lists = {name: data.get(name) or [] for name in ("queue", "recent")}
            for name, value in lists.items():
                if not isinstance(value, list):
                    raise ValueError(f"{name} is a {type(value).__name__}, not a list")
            queue = [Job.from_saved(d) for d in lists["queue"]]
            running = Job.from_saved(data["running"]) if data.get("running") else None
            recent = [Job.from_saved(d) for d in lists["recent"]]
        except (OSError, ValueError) as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            logger.error("cannot read %s (%s): moved it to %s, starting empty", path, exc, aside)
            with contextlib.suppress(OSError):
                path.replace(aside)
            return
        self._recent = recent[:RECENT_LIMIT]
        if running is not None:
            running.state = "failed"
            running.error = INTERRUPTED
            running.finished_at = now_iso()
            await asyncio.to_thread(self._recount_output, running)
            self._recent.insert(0, running)
            logger.warning("job %s was running when the server stopped: failed", running.id)
        for job in queue:
            job.state = "queued"
        self._queue = deque(queue)
        self._jobs = {job.id: job for job in [*self._queue, *self._recent]}
        self._wake.set()
        logger.info("restored %d queued and %d recent jobs", len(queue), len(self._recent))
        await self.save()

    # ------------------------------------------------------------------ the worker

    async def run_forever(self) -> None:
        """Run queued jobs one at a time, in order, until cancelled."""
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._wait_for_checkout()
            if not self._queue:
                continue
            job = self._queue.popleft()
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one job stop the worker
                logger.exception("job %s: unexpected error in the worker", job.id)

    async def _wait_for_checkout(self) -> None:
        await poll_until(
            lambda: read_phase(self.config.phase_file).phase not in ("waiting", "cloning"),
            None,
            CHECKOUT_POLL_S,
        )

    async def _run(self, job: Job) -> None:
        self._running = job
        self._cancel = asyncio.Event()
        self._running_done = asyncio.Event()
        job.state = "running"
        job.started_at = now_iso()
        started = time.monotonic()
        logger.info("job %s started (%d chars, by %s)", job.id, len(job.prompt), job.user)
        await self.save()
        try:
            await self._execute(job)
        except asyncio.CancelledError:
            job.state, job.error = "failed", INTERRUPTED
            self._finish(job, started)
            self._save_now()
            raise
        except Exception as exc:
            logger.exception("job %s: internal error", job.id)
            job.state, job.error = "failed", f"internal error: {exc}"
        self._finish(job, started)
        logger.info("job %s %s in %.1f s", job.id, job.state, time.monotonic() - started)
        await self.save()

    def _finish(self, job: Job, started: float) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None
        job.finished_at = now_iso()
        if job.duration_s is None:
            job.duration_s = round(time.monotonic() - started, 3)
        self._running = None
        self._remember(job)
        self._running_done.set()

    async def _execute(self, job: Job) -> None:
        cfg = self.config
        if not cfg.work_dir.is_dir():
            phase = read_phase(cfg.phase_file)
            why = f" (phase {phase.phase}: {phase.error})" if phase.error else ""
            job.state, job.error = "failed", f"WORK_DIR {cfg.work_dir} does not exist{why}"
            return
        before = await self.git.head()
        argv = [*cfg.claude_cmd, "-p", job.prompt, "--output-format", "stream-json", "--verbose"]
        hidden = ("UAT_PROMPT_TOKEN", "UAT_PROMPT_TOKEN_FILE")
        env = {k: v for k, v in os.environ.items() if k not in hidden}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cfg.work_dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            job.state = "failed"
            job.error = f"cannot start the agent {cfg.claude_cmd[0]!r}: {exc.strerror or exc}"
            return
        logger.info("job %s: agent running as process group %d", job.id, proc.pid)
        self._output = self._open_output(job)
        stream = StreamJson(job, self._output, cfg.hidden)
        stderr = TextTail(STDERR_TAIL_CHARS)
        readers = asyncio.gather(
            pump_lines(proc.stdout, stream.feed),
            pump_lines(proc.stderr, lambda raw: stderr.add(raw.decode(errors="replace"))),
        )
        outcome: str | None = None
        try:
            outcome = await self._supervise(proc)
        finally:
            if outcome is None:  # cancelled (server stopping): leave nothing behind
                kill_group(proc.pid, signal.SIGKILL)
                readers.cancel()
        kill_group(proc.pid, signal.SIGKILL)  # whatever the agent left running
        try:
            await asyncio.wait_for(readers, STRAGGLER_GRACE_S)
            await proc.wait()
        except TimeoutError:
            # Something that left the agent's process group holds its pipes: stop reading them.
            logger.warning("job %s: output pipes still open after the agent ended", job.id)
            transport = getattr(proc, "_transport", None)
            if transport is not None:
                transport.close()
            await poll_until(lambda: proc.returncode is not None, None, 0.05)
        stream.finish()
        job.exit_code = proc.returncode
        after = await self.git.head()
        if after and after != before:
            job.commit = after
            upstream = await self.git.run("rev-parse", "--verify", "-q", "@{upstream}")
            job.pushed = (upstream or "").strip() == after
        job.files_changed = await self.git.changes(before, after)
        self._judge(job, outcome, stream, stderr.text)

    def _judge(self, job: Job, outcome: str, stream: StreamJson, stderr: str) -> None:
        if outcome == "cancelled":
            job.state, job.error = "cancelled", "cancelled while running"
            return
        if outcome == "timed_out":
            job.state = "timed_out"
            job.error = f"no result after {self.config.timeout_s:g} s: the agent was killed"
            return
        problems: list[str] = []
        code = job.exit_code
        if stream.is_error:
            subtype = (stream.result or {}).get("subtype", "error")
            problems.append(f"the agent reported an error ({subtype})")
        if code:
            problems.append(
                f"the agent was killed by signal {-code}" if code < 0 else f"exit status {code}"
            )
        if stream.result is None and not problems:
            problems.append("the agent ended without a result line")
        if not problems:
            job.state = "succeeded"
            return
        job.state = "failed"
        job.error = "; ".join(problems) + (f"\n{stderr}" if stderr else "")

    async def _supervise(self, proc: asyncio.subprocess.Process) -> str:
        """Wait for the agent; "exited", or "cancelled"/"timed_out" after killing its group."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        waiter = asyncio.ensure_future(proc.wait())
        cancel = asyncio.ensure_future(self._cancel.wait())
        exited_at: float | None = None
        outcome = "exited"
        try:
            while not waiter.done():
                now = loop.time()
                if self._cancel.is_set() or now >= deadline:
                    outcome = "cancelled" if self._cancel.is_set() else "timed_out"
                    await self._terminate(proc)
                    break
                if proc.returncode is not None:  # exited; wait() also waits for the pipes
                    exited_at = exited_at or now
                    if now - exited_at >= STRAGGLER_GRACE_S:
                        break
                await asyncio.wait(
                    {waiter, cancel},
                    timeout=min(0.25, deadline - now),
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            waiter.cancel()
            cancel.cancel()
        return outcome

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the agent's process group, SIGKILL it after KILL_GRACE_S."""
        kill_group(proc.pid, signal.SIGTERM)
        await poll_until(lambda: proc.returncode is not None, KILL_GRACE_S, 0.05)
        kill_group(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- HTTP

QUEUE_KEY: Final = web.AppKey("queue", PromptQueue)
WAITING_FOR_CLAIM: Final = (
    "this warm-pool task waits for a claim (POST /claim) before it runs anything"
)


def current_config(request: web.Request) -> Config:
    """The server's configuration now: a claim replaces it (the prompt token for the pool's)."""
    return request.app[QUEUE_KEY].config


def error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def check_token(request: web.Request) -> web.Response | None:
    """None when the request carries the right bearer token; else the response to send."""
    config = current_config(request)
    token = config.token
    if not token:
        if config.claimable:
            return error(503, WAITING_FOR_CLAIM)
        return error(503, "UAT_PROMPT_TOKEN is not set in this container, so it refuses requests")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", errors="replace"), token.encode()
    ):
        logger.warning("%s %s: missing or wrong bearer token", request.method, request.path)
        return error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
    return None


async def app_answers(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback at `port`."""
    for host in ("127.0.0.1", "::1"):
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), APP_PROBE_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def health(request: web.Request) -> web.Response:
    config = current_config(request)
    phase = read_phase(config.phase_file)
    body: dict[str, Any] = {"app_port": config.app_port, "updated_at": phase.updated_at}
    if phase.phase == "failed":
        error_text = phase.error or "the container failed to start"
        return web.json_response(
            {"ready": False, "phase": "failed", "error": error_text, **body}, status=503
        )
    if config.claimable:
        return web.json_response(
            {"ready": False, "phase": "waiting", "error": WAITING_FOR_CLAIM, **body}, status=503
        )
    if phase.phase == "waiting":
        phase = Phase("cloning")  # claimed: the entrypoint has yet to notice
    if await app_answers(config.app_port):
        return web.json_response({"ready": True, "phase": "ready", "error": None, **body})
    shown = phase.phase if phase.phase in ("cloning", "installing") else "starting"
    reason = phase.error
    if shown == "starting" and not reason:
        reason = f"the app is not answering on port {config.app_port} yet"
    return web.json_response({"ready": False, "phase": shown, "error": reason, **body}, status=503)


async def version(request: web.Request) -> web.Response:
    if (refused := check_token(request)) is not None:
        return refused
    found = await request.app[QUEUE_KEY].git.version()
    if found is None:
        work_dir = current_config(request).work_dir
        return error(503, f"no git checkout in {work_dir} yet")
    return web.json_response(found)


async def status(request: web.Request) -> web.Response:
    if (refused := check_token(request)) is not None:
        return refused
    return web.json_response(request.app[QUEUE_KEY].status())


async def submit_prompt(request: web.Request) -> web.Response:
    if (refused := check_token(request)) is not None:
        return refused
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        return error(400, f"the body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return error(400, 'the body must be a JSON object: {"prompt", "user", "thread"}')
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return error(400, "prompt is missing: send a non-empty string")
    if len(prompt) > MAX_PROMPT_CHARS:
        return error(
            400, f"prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}"
        )
    for name in ("user", "thread"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return error(400, f"{name} must be a string")
    queue = request.app[QUEUE_KEY]
    if queue.queued >= MAX_QUEUED:
        return error(429, f"{MAX_QUEUED} prompts are already waiting; try again later")
    job = await queue.submit(prompt, body.get("user"), body.get("thread"))
    position = queue.position(job)
    logger.info("job %s queued by %s, position %s", job.id, job.user, position)
    return web.json_response({"id": job.id, "position": position, "state": job.state}, status=202)


JobHandler = Callable[[PromptQueue, Job], Awaitable[web.Response]]


def job_route(handler: JobHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """`handler` for the job the path names, after the bearer token is checked (`check_token`);
    the 404 to send when there is no such job."""

    async def route(request: web.Request) -> web.Response:
        if (refused := check_token(request)) is not None:
            return refused
        queue = request.app[QUEUE_KEY]
        job = queue.get(request.match_info["id"])
        if job is None:
            return error(404, f"no job {request.match_info['id']}")
        return await handler(queue, job)

    return route


async def get_prompt(queue: PromptQueue, job: Job) -> web.Response:
    return web.json_response(queue.view(job))


async def get_output(queue: PromptQueue, job: Job) -> web.Response:
    path = queue.output_path(job)
    try:
        if path is None:
            raise FileNotFoundError
        data = await asyncio.to_thread(path.read_bytes)
    except (FileNotFoundError, IsADirectoryError):
        return error(404, f"job {job.id} has no output ({job.state})")
    except OSError as exc:
        logger.error("job %s: cannot read its output: %s", job.id, exc)
        return error(500, f"cannot read the output of job {job.id}: {exc.strerror or exc}")
    text = scrub(data.decode("utf-8", errors="replace"), queue.config.hidden)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def cancel_prompt(queue: PromptQueue, job: Job) -> web.Response:
    if job.state not in ACTIVE_STATES:
        return error(409, f"job {job.id} already ended: {job.state}")
    await queue.cancel(job)
    return web.json_response(queue.view(job), status=202 if job.state in ACTIVE_STATES else 200)


# ---------------------------------------------------------------------------- claim (pool mode)

# What a claim may carry; anything else is refused (400) before it reaches a file or git.
# repo: an http(s) or file URL without credentials (no `@`), nothing git could read as an option
# or a transport of its own (`ext::`); git_ref: a full ref of plain characters, checked further
# by `is_safe_ref`; head_sha: a full SHA-1 or SHA-256 commit id; session_id: a DNS label (it names
# the app's host, ${SESSION_ID}.${UAT_DOMAIN}); prompt_token: bot/prompt_tokens.py's shape;
# branch (display only: entrypoint.sh still asks git whether it is a valid branch name).
CLAIM_REPO: Final = re.compile(r"(?:https?|file)://[A-Za-z0-9._~%+/:-]{1,500}")
CLAIM_REF: Final = re.compile(r"refs/[A-Za-z0-9._/-]{1,250}")
CLAIM_SHA: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
CLAIM_SESSION: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
CLAIM_TOKEN: Final = re.compile(r"uatp_[A-Za-z0-9_-]{20,200}")
CLAIM_BRANCH: Final = re.compile(r"[A-Za-z0-9._/+-]{1,250}")
CLAIM_FIELDS: Final = ("repo", "git_ref", "head_sha", "session_id", "prompt_token")


class BadClaim(ValueError):
    """A claim's body that is refused; the message says which field and what it must be."""


@dataclass(frozen=True)
class Claim:
    """A valid claim: the environment a pool task becomes."""

    repo: str
    git_ref: str
    head_sha: str
    session_id: str
    prompt_token: str = field(repr=False)
    branch: str = ""
    pr_number: int | None = None

    def file_text(self) -> str:
        """UAT_CLAIM_FILE's content for entrypoint.sh: KEY=value lines, no token."""
        values = {
            "REPO": self.repo,
            "GIT_REF": self.git_ref,
            "HEAD_SHA": self.head_sha,
            "SESSION_ID": self.session_id,
            "BRANCH": self.branch,
            "PR_NUMBER": "" if self.pr_number is None else str(self.pr_number),
        }
        return "".join(f"{key}={value}\n" for key, value in values.items())


def is_safe_ref(ref: str) -> bool:
    """`ref` is a full ref of plain characters that git accepts (`git check-ref-format`'s rules
    for these characters): no empty, `.`-led or `.lock` component, no `..`, no trailing `.`."""
    if not CLAIM_REF.fullmatch(ref) or ".." in ref or ref.endswith((".", "/")):
        return False
    return all(
        part and not part.startswith(".") and not part.endswith(".lock") for part in ref.split("/")
    )


def parse_claim(body: object) -> Claim:
    """The claim `body` describes; BadClaim naming the first field that is missing or wrong."""
    if not isinstance(body, dict):
        raise BadClaim(f"the body must be a JSON object with {', '.join(CLAIM_FIELDS)}")
    missing = [name for name in CLAIM_FIELDS if not isinstance(body.get(name), str)]
    if missing:
        raise BadClaim(
            f"{', '.join(missing)} missing or not a string: send all of {', '.join(CLAIM_FIELDS)}"
        )
    repo, ref, sha = body["repo"], body["git_ref"], body["head_sha"]
    session, token = body["session_id"], body["prompt_token"]
    if not CLAIM_REPO.fullmatch(repo):
        raise BadClaim("repo must be an https:// (or file://) clone URL without credentials")
    if not is_safe_ref(ref):
        raise BadClaim("git_ref must be a full ref git accepts, such as refs/pull/7/head")
    if not CLAIM_SHA.fullmatch(sha):
        raise BadClaim("head_sha must be the full commit id: 40 (or 64) lower-case hex digits")
    if not CLAIM_SESSION.fullmatch(session):
        raise BadClaim("session_id must be a DNS label: lower-case letters, digits and hyphens")
    if not CLAIM_TOKEN.fullmatch(token):
        raise BadClaim("prompt_token must be an environment's prompt token (uatp_...)")
    branch = body.get("branch")
    if branch is None:
        branch = ""
    if not isinstance(branch, str) or (branch and not CLAIM_BRANCH.fullmatch(branch)):
        raise BadClaim("branch, when given, must be a branch name of plain characters")
    pr_number = body.get("pr_number")
    if pr_number is not None and (
        isinstance(pr_number, bool) or not isinstance(pr_number, int) or not 0 < pr_number < 10**9
    ):
        raise BadClaim("pr_number, when given, must be a positive whole number")
    return Claim(repo, ref, sha, session, token, branch, pr_number)


def write_claim(config: Config, claim: Claim) -> None:
    """The prompt token to `config.token_file`, then the claim to `config.claim_file`, both 0400;
    FileExistsError when the claim file exists already (someone claimed this task first)."""
    assert config.token_file is not None and config.claim_file is not None
    if config.claim_file.exists():
        raise FileExistsError(config.claim_file)
    write_private(config.token_file, f"{claim.prompt_token}\n", replace_old=True)
    write_private(config.claim_file, claim.file_text(), replace_old=False)


def write_private(path: Path, text: str, *, replace_old: bool) -> None:
    """`text` into `path`, readable by its owner only (0400), all at once: a temp file moved into
    place (over an old one when `replace_old`, else FileExistsError if there is one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o400)
        if replace_old:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if `path` exists, unlike a rename
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


async def claim(request: web.Request) -> web.Response:
    queue = request.app[QUEUE_KEY]
    config = queue.config
    if config.claim_file is not None and config.claim_file.exists():
        return error(409, "this task was claimed already: it runs another environment")
    if not config.claimable:
        return error(409, "this task is not a warm-pool member: it was started for an environment")
    assert config.pool_token is not None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", errors="replace"), config.pool_token.encode()
    ):
        logger.warning("POST /claim: missing or wrong pool token")
        return error(401, "missing or wrong pool token", **{"WWW-Authenticate": "Bearer"})
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        return error(400, f"the body is not valid JSON: {exc}")
    try:
        found = parse_claim(body)
    except BadClaim as exc:
        return error(400, str(exc))
    if queue.config is not config:  # claimed while this request's body was read
        return error(409, "this task was claimed already: it runs another environment")
    try:
        write_claim(config, found)
    except FileExistsError:
        return error(409, "this task was claimed already: it runs another environment")
    except OSError as exc:
        logger.error("cannot write the claim: %s", exc)
        return error(500, f"cannot write the claim: {exc.strerror or exc}; start another task")
    queue.config = replace(config, token=found.prompt_token, pool_token=None)
    logger.info("claimed for session %s: %s at %s", found.session_id, found.git_ref, found.head_sha)
    return web.json_response({"claimed": True, "session_id": found.session_id})


async def run_worker(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: restore the queue, run the worker, cancel and await it on shutdown."""
    queue = app[QUEUE_KEY]
    await asyncio.to_thread(queue.open_outputs)
    await queue.load()
    await asyncio.to_thread(queue.prune_outputs)
    worker = asyncio.create_task(queue.run_forever(), name="prompt-worker")
    yield
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    await asyncio.to_thread(queue.close_outputs)


def create_app(config: Config) -> web.Application:
    """The prompt server as an aiohttp application (the worker starts with the app)."""
    app = web.Application()
    app[QUEUE_KEY] = PromptQueue(config)
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/status", status)
    app.router.add_post("/prompt", submit_prompt)
    app.router.add_get("/prompts/{id}", job_route(get_prompt))
    app.router.add_get("/prompts/{id}/output", job_route(get_output))
    app.router.add_delete("/prompts/{id}", job_route(cancel_prompt))
    app.router.add_post("/claim", claim)
    app.cleanup_ctx.append(run_worker)
    return app


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s prompt_server: %(message)s"
    )
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        logger.error("cannot start: %s", exc)
        return 2
    if config.claimable:
        logger.info("pool mode: waiting for a claim")
    elif not config.token:
        logger.warning("UAT_PROMPT_TOKEN is not set: every endpoint but /health answers 503")
    logger.info(
        "serving on %s:%d for %s (app port %d, timeout %g s)",
        config.host,
        config.port,
        config.work_dir,
        config.app_port,
        config.timeout_s,
    )
    web.run_app(
        create_app(config), host=config.host, port=config.port, print=None, shutdown_timeout=5
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
