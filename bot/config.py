"""Settings: read once from the environment and `.env`, validated, every problem listed at once.

This is the only module that reads the process environment. Names follow DESIGN.md's contract.
"""

from __future__ import annotations

import os
import re
import string
import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bot.errors import ConfigError
from bot.urls import PLACEHOLDERS, template_problem

CommaList = Annotated[tuple[str, ...], NoDecode]

# What to put in each variable, used to turn validation errors into instructions.
HINTS: dict[str, str] = {
    "SLACK_BOT_TOKEN": "the app's Bot User OAuth Token (xoxb-...) from OAuth & Permissions",
    "SLACK_SIGNING_SECRET": "the Signing Secret from the Slack app's Basic Information page",
    "SLACK_APP_TOKEN": "an app-level token (xapp-...) with connections:write, for Socket Mode",
    "SLACK_API_URL": "the Slack Web API base URL ending in /api/, e.g. https://slack.com/api/",
    "UAT_PORT": "a TCP port number between 1 and 65535, e.g. 3000",
    "UAT_CHANNEL": "the ID (C0123ABCD, not the name) of the channel where PR threads live",
    "GITHUB_WEBHOOK_SECRET": "the secret set on the GitHub webhook",
    "UAT_PROMPT_TOKEN": (
        "a long random string, the bot's master secret for prompt tokens: each environment's "
        "container gets its own token derived from it (HMAC-SHA256 of repo, PR and session), "
        "never this value"
    ),
    "UAT_POLL_SECONDS": "seconds between ECS status polls, a number > 0, e.g. 10",
    "UAT_GITHUB_TOKEN": (
        "a GitHub token allowed to write deployments and commit statuses on the repositories "
        "(fine-grained: Deployments and Commit statuses read and write)"
    ),
    "UAT_GITHUB_APP_ID": "the numeric App ID from the GitHub App's settings page, e.g. 123456",
    "UAT_GITHUB_PRIVATE_KEY": (
        "the GitHub App's private key (the PEM text, -----BEGIN RSA PRIVATE KEY----- ...), "
        "generated on the App's settings page"
    ),
    "UAT_GITHUB_API_URL": (
        "the GitHub REST API base URL, https://api.github.com or "
        "https://<host>/api/v3 for GitHub Enterprise Server"
    ),
    "UAT_QUICK_POLL_SECONDS": (
        "seconds between the first probes of a starting environment, a number > 0, e.g. 0.5"
    ),
    "UAT_IDLE_HOURS": "hours without activity before an environment is stopped, e.g. 8",
    "UAT_CONTAINER_URL": (
        f"a URL, with {', '.join('{' + p + '}' for p in PLACEHOLDERS)} if needed, "
        "e.g. http://{ip}:8080"
    ),
    "UAT_APP_URL": "a URL with the same placeholders, e.g. https://{session}.uat.example.com",
    "UAT_LABEL_LATEST": "the GitHub label that starts :latest environments, e.g. uat",
    "UAT_LABEL_STAGING": "the GitHub label that starts :staging environments, e.g. uat-staging",
    "UAT_ASSIGN_PUBLIC_IP": "ENABLED or DISABLED",
    "UAT_STORE": "sqlite (one replica) or dynamodb (several, with UAT_DYNAMODB_TABLE)",
    "UAT_BUILDER": "docker (the local docker engine) or codebuild (with UAT_CODEBUILD_PROJECT)",
    "UAT_CODEBUILD_PROJECT": (
        "the name of the CodeBuild project that builds :<sha> (docs/codebuild-project.json), "
        "or UAT_BUILDER=docker"
    ),
    "UAT_BUILD_TIMEOUT_S": "seconds a CodeBuild build may take before it is stopped, e.g. 1800",
    "UAT_EVENTS_QUEUE": (
        "the URL of the SQS queue an EventBridge rule fills with ECS Task State Change events "
        "(docs/ecs-events.json), "
        "e.g. https://sqs.us-east-1.amazonaws.com/123456789012/uat-ecs-events"
    ),
    "UAT_WARM_POOL": (
        "tag=count pairs of the image tags latest and staging, counts 0 to 20, e.g. "
        "latest=2,staging=0"
    ),
    "UAT_INSTANCE": (
        "this installation's name, tagged on every task it starts (it acts on no other), "
        "e.g. uat/test-tickets-uat; letters, numbers, spaces and _ . : / = + - @"
    ),
}


# Slack's IDs are uppercase letters and digits; a channel's starts with C (G: an older private one).
CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")
# AWS resource IDs: a prefix and hex digits (8, or 17 for newer ones).
AWS_IDS = {
    "UAT_SUBNETS": (re.compile(r"subnet-[0-9a-f]{8,17}"), "subnet", "subnet-0123456789abcdef0"),
    "UAT_SECURITY_GROUPS": (
        re.compile(r"sg-[0-9a-f]{8,17}"),
        "security group",
        "sg-0123456789abcdef0",
    ),
}
FIND_CHANNEL_ID = (
    'in Slack, open the channel\'s details (click its name): "Channel ID" is at the bottom'
)


# ECS's Tag value: up to 256 characters, pattern ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$ (letters,
# separators such as spaces, numbers and _ . : / = + - @); the aws: prefix is AWS's own.
# https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Tag.html
TAG_VALUE_MAX = 256
TAG_VALUE_SYMBOLS = "_.:/=+-@"


def tag_value_problem(value: str) -> str | None:
    """Why ECS would refuse `value` as a tag value (a phrase), or None; empty is refused too,
    since a label needs a name."""
    if not value:
        return "is empty"
    if len(value) > TAG_VALUE_MAX:
        return f"is {len(value)} characters long; ECS takes at most {TAG_VALUE_MAX}"
    if value.lower().startswith("aws:"):
        return "starts with aws:, which AWS keeps for itself"
    bad = sorted(
        {
            ch
            for ch in value
            if ch not in TAG_VALUE_SYMBOLS and unicodedata.category(ch)[0] not in "LZN"
        }
    )
    if bad:
        shown = " ".join(repr(ch) for ch in bad)
        return f"has {shown}; use letters, numbers, spaces and {' '.join(TAG_VALUE_SYMBOLS)}"
    return None


def channel_problem(value: str) -> str | None:
    """Why `value` is not a usable UAT_CHANNEL, or None when it looks like a channel ID."""
    if CHANNEL_ID.fullmatch(value):
        return None
    what = "a channel name, not its ID" if value.startswith("#") else "not a channel ID"
    return (
        f"UAT_CHANNEL is {value!r}, {what}: set it to the channel's ID (like C0123ABCD, "
        f"uppercase letters and digits); {FIND_CHANNEL_ID}"
    )


def aws_id_problems(name: str, values: tuple[str, ...]) -> list[str]:
    """One line per entry of UAT_SUBNETS / UAT_SECURITY_GROUPS that is not an AWS ID."""
    pattern, kind, example = AWS_IDS[name]
    return [
        f"{name} has {value!r}, not a {kind} ID: list IDs like {example} (VPC console), "
        "comma-separated"
        for value in values
        if not pattern.fullmatch(value)
    ]


def token_refused(error: str) -> str:
    """The line `uat-bot serve` stops with when Slack's auth.test refuses the bot token."""
    return f"SLACK_BOT_TOKEN is refused by Slack: {error}: set it to {HINTS['SLACK_BOT_TOKEN']}"


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Everything the bot can be told from outside; defaults are the embedded, local ones."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    uat_host: str = "0.0.0.0"
    uat_port: int = Field(3000, ge=1, le=65535)

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"

    uat_channel: str | None = None
    uat_deployers: CommaList = ()
    uat_operators: CommaList = ()  # who may change environments (none set: anyone in the channel)
    github_webhook_secret: SecretStr | None = None
    uat_repositories: CommaList = ()
    uat_label_latest: str = "uat"
    uat_label_staging: str = "uat-staging"

    aws_region: str | None = None
    aws_endpoint_url: str | None = None

    uat_ecr_repository: str = "test-tickets-uat"
    uat_registry: str | None = None
    uat_source_repo: str | None = None
    uat_source_ref: str = "main"
    uat_build_path: str = "container"
    uat_platform: str = "linux/amd64"
    uat_builder: Literal["docker", "codebuild"] = "docker"
    uat_codebuild_project: str | None = None
    uat_build_timeout_s: float = Field(1800.0, gt=0)

    uat_ecs_cluster: str | None = None
    uat_task_definition: str | None = None
    uat_container_name: str | None = None
    uat_subnets: CommaList = ()
    uat_security_groups: CommaList = ()
    uat_assign_public_ip: Literal["ENABLED", "DISABLED"] = "DISABLED"
    uat_alb_listener_arn: str | None = None
    uat_launch_timeout_s: float = Field(900.0, gt=0)
    # an SQS queue of ECS Task State Change events; unset: polling alone
    uat_events_queue: str | None = None
    # warm-pool tasks per image tag (bot/environments/pool.py), e.g. "latest=2,staging=0"
    uat_warm_pool: Annotated[tuple[tuple[str, int], ...], NoDecode] = ()
    # this installation's name (see `installation`); never read from the store, so a lost or
    # wrong store cannot change which tasks are this bot's
    uat_instance: str | None = None

    uat_container_url: str = "http://{ip}:8080"
    uat_app_url: str | None = None
    uat_prompt_token: SecretStr | None = None

    uat_db: str = "uat-bot.db"
    uat_store: Literal["sqlite", "dynamodb"] = "sqlite"
    uat_dynamodb_table: str = "uat-bot"
    uat_poll_seconds: float = Field(10.0, gt=0)
    # how often a starting environment is probed at first (bot/environments/watcher.py)
    uat_quick_poll_seconds: float = Field(0.5, gt=0)
    uat_idle_hours: float = Field(8.0, gt=0)
    # Fargate's prices, in USD, instead of bot/cost.py's table for the region
    uat_price_vcpu_hour: float | None = Field(None, ge=0)
    uat_price_gb_hour: float | None = Field(None, ge=0)

    # GitHub access for deployments and commit statuses (bot/github_api.py): a token, or an App
    uat_github_token: SecretStr | None = None
    uat_github_app_id: str | None = None
    uat_github_private_key: SecretStr | None = None
    uat_github_api_url: str = "https://api.github.com"
    uat_github_status: bool = True

    @field_validator(
        "uat_deployers",
        "uat_operators",
        "uat_repositories",
        "uat_subnets",
        "uat_security_groups",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value if value.endswith("/") else value + "/"

    @field_validator("uat_github_api_url")
    @classmethod
    def _github_api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("uat_github_app_id")
    @classmethod
    def _github_app_id(cls, value: str | None) -> str | None:
        if value is not None and value.strip() and not value.strip().isdigit():
            raise ValueError("must be the App's numeric ID")
        return value.strip() or None if value is not None else None

    @property
    def github_access(self) -> str | None:
        """How the bot reaches GitHub's API: "app", "token", or None (no GitHub writes)."""
        if self.uat_github_app_id and self.uat_github_private_key:
            return "app"
        return "token" if self.uat_github_token else None

    @field_validator("uat_events_queue")
    @classmethod
    def _queue_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be the queue's URL, starting with https://")
        return value or None

    @field_validator("uat_warm_pool", mode="before")
    @classmethod
    def _warm_pool(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return parse_warm_pool(value)

    @property
    def warm_pool(self) -> dict[str, int]:
        """Image tag -> how many warm-pool tasks wait for a claim (tags with 0 left out)."""
        return {tag: count for tag, count in self.uat_warm_pool if count > 0}

    @field_validator("uat_container_url", "uat_app_url")
    @classmethod
    def _url_template(cls, value: str | None) -> str | None:
        problem = template_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("uat_label_latest", "uat_label_staging", "uat_instance")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        problem = tag_value_problem(value) if value is not None else None
        if problem:
            raise ValueError(f"ECS refuses it as a task tag: it {problem}")
        return value

    @property
    def installation(self) -> str:
        """The installation tag on every task this bot starts (`UAT_INSTANCE`, by default
        `<cluster>/<ECR repository>`): it adopts, stops and reports only tasks carrying it."""
        cluster = self.uat_ecs_cluster or "default"
        return self.uat_instance or f"{cluster}/{self.uat_ecr_repository}"

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def missing_for_serve(self) -> list[str]:
        """What `uat-bot serve` cannot start without."""
        needed = ["SLACK_BOT_TOKEN"]
        needed.append("SLACK_APP_TOKEN" if self.socket_mode else "SLACK_SIGNING_SECRET")
        return [_problem(name, "is not set") for name in needed if not self._value(name)]

    def problems_for_serve(self) -> list[str]:
        """Everything `uat-bot serve` can tell is wrong before it reaches Slack or AWS: what is
        missing, a channel name where its ID belongs, subnets and security groups that are not
        AWS IDs. One line each."""
        problems = self.missing_for_serve()
        if self.uat_channel:
            problems += [p for p in [channel_problem(self.uat_channel)] if p]
        problems += aws_id_problems("UAT_SUBNETS", self.uat_subnets)
        problems += aws_id_problems("UAT_SECURITY_GROUPS", self.uat_security_groups)
        return problems

    def combination_problems(self) -> list[str]:
        """Settings that are each valid but do not go together; one line each."""
        problems = []
        if self.uat_builder == "codebuild" and not self.uat_codebuild_project:
            problems.append(
                _problem("UAT_CODEBUILD_PROJECT", "is not set but UAT_BUILDER is codebuild")
            )
        if bool(self.uat_github_app_id) != bool(self.uat_github_private_key):
            missing = "UAT_GITHUB_PRIVATE_KEY" if self.uat_github_app_id else "UAT_GITHUB_APP_ID"
            other = "UAT_GITHUB_APP_ID" if self.uat_github_app_id else "UAT_GITHUB_PRIVATE_KEY"
            problems.append(_problem(missing, f"is not set but {other} is"))
        if self.warm_pool:
            problems += self._warm_pool_problems()
        return problems

    def _warm_pool_problems(self) -> list[str]:
        problems = []
        names = {n for _, n, _, _ in string.Formatter().parse(self.uat_container_url) if n}
        if names & {"session", "pr"}:
            problems.append(
                "UAT_CONTAINER_URL uses {session} or {pr}, which a warm-pool task has not got "
                "until it is claimed: set it to a URL with {ip} or {task_id} only, e.g. "
                "http://{ip}:8080, or set UAT_WARM_POOL to nothing"
            )
        if self.uat_prompt_token is None or not self.uat_prompt_token.get_secret_value():
            problems.append(
                _problem(
                    "UAT_PROMPT_TOKEN",
                    "is not set but UAT_WARM_POOL is (pool tokens are derived from it)",
                )
            )
        return problems

    def secrets(self) -> list[str]:
        """The configured secret values, for scrubbing from anything shown or logged."""
        fields = (
            self.slack_bot_token,
            self.slack_signing_secret,
            self.slack_app_token,
            self.github_webhook_secret,
            self.uat_prompt_token,
            self.uat_github_token,
            self.uat_github_private_key,
        )
        return [f.get_secret_value() for f in fields if f is not None and f.get_secret_value()]

    def _value(self, name: str) -> Any:
        value = getattr(self, name.lower())
        return value.get_secret_value() if isinstance(value, SecretStr) else value


class _GivenSettings(Settings):
    """Settings from an explicit mapping only: no process environment, no `.env`."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


SECRET_NAMES = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "GITHUB_WEBHOOK_SECRET",
    "UAT_PROMPT_TOKEN",
    "UAT_GITHUB_TOKEN",
    "UAT_GITHUB_PRIVATE_KEY",
)


def withhold_secrets() -> None:
    """Take the secrets out of the process environment once `Settings` holds them.

    Libraries read some of them on their own: Bolt's AsyncApp does
    `token = token or os.environ.get("SLACK_BOT_TOKEN")` and, given our client as well, logs
    "As you gave `client` as well, `token` will be unused". Nothing but `Settings` should read
    them, and no child process (git, docker) needs them.
    """
    for name in SECRET_NAMES:
        os.environ.pop(name, None)


POOL_MAX = 20  # warm-pool tasks per tag at most
POOL_TAGS = ("latest", "staging")


def parse_warm_pool(text: str) -> tuple[tuple[str, int], ...]:
    """UAT_WARM_POOL's `tag=count,...`; ValueError saying what is wrong."""
    pairs: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        tag, equals, count = (x.strip() for x in part.partition("="))
        if not equals or tag not in POOL_TAGS or not count.isdigit():
            raise ValueError(f"{part!r} is not tag=count with a tag of {' or '.join(POOL_TAGS)}")
        if int(count) > POOL_MAX or tag in pairs:
            why = f"more than {POOL_MAX}" if tag not in pairs else "given twice"
            raise ValueError(f"{tag}'s count is {why}")
        pairs[tag] = int(count)
    return tuple(pairs.items())


def _problem(name: str, what: str) -> str:
    hint = HINTS.get(name)
    return f"{name} {what}" + (f": set it to {hint}" if hint else "")


def load_settings(
    env: Mapping[str, str] | None = None, *, env_file: str | None = ".env"
) -> Settings:
    """Read settings once; raise ConfigError naming every bad variable and what to put there.

    `env` replaces the process environment and `.env` entirely (tests pass their own).
    """
    try:
        if env is None:
            settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
        else:
            fields: dict[str, Any] = {
                k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields
            }
            settings = _GivenSettings(**fields)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(_problem(name, f"is invalid ({message})"))
        raise ConfigError(problems) from None
    if settings.combination_problems():
        raise ConfigError(settings.combination_problems())
    return settings
