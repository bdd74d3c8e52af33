"""The words of the gateways' errors (AWS, CodeBuild, DynamoDB, git and docker): plain text that
says what to do, written for Slack's mrkdwn (`escape` makes outside text inert there) and read in
the terminal as is. The gateways take their words from here, not from the Slack layer;
bot/slack/slack_ui.py re-exports every one, so each message is still found by its name there."""

from __future__ import annotations

from collections.abc import Sequence

from bot.scrub import scrub


def escape(text: str) -> str:
    """User text as Slack shows it literally: no mentions, links or injected formatting, and no
    credential (bot/scrub.py: each becomes `[redacted]`)."""
    return entities(scrub(text))


def entities(text: str) -> str:
    """`&`, `<` and `>` as Slack's entities: for text already scrubbed (see `escape`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


AWS_HINTS = {
    "RepositoryNotFoundException": "check UAT_ECR_REPOSITORY names an ECR repository in AWS_REGION",
    "ImageNotFoundException": "that image is not in the repository",
    "AccessDeniedException": "the bot's IAM role lacks this permission (see docs/iam)",
    "AccessDenied": "the bot's IAM role lacks this permission (see docs/iam)",
    "UnrecognizedClientException": "the AWS credentials are invalid",
    "ExpiredTokenException": "the AWS credentials have expired",
    "ThrottlingException": "AWS is throttling requests; try again in a minute",
    "ClusterNotFoundException": "check UAT_ECS_CLUSTER names a cluster in AWS_REGION",
}


def bad_ref(ref: str) -> str:
    shown = escape(ref).replace("`", "'").replace("\n", " ")  # as slack_ui.code shows it
    return f"`{shown}` is not a git ref I can build: use a branch, tag or commit sha."


def no_such_ref(ref: str) -> str:
    return f"There is no `{ref}` in the source repository. Check the branch, tag or sha."


UNREADABLE_SOURCE = "The source repository cannot be read: check UAT_SOURCE_REPO."


def fetch_failed(ref: str, detail: str) -> str:
    return f"git could not fetch `{ref}`: {detail}"


def no_dockerfile(build_path: str) -> str:
    return f"There is no Dockerfile in `{build_path}` of that commit: check UAT_BUILD_PATH."


def docker_unreachable(where: str) -> str:
    return (
        f"No docker engine answers at {where}: install Debian's docker.io and start dockerd, "
        "or set DOCKER_HOST."
    )


def build_failed_at(step: str) -> str:
    return f"The build failed at {step or 'the start'}."


def push_failed(
    tag: str, repository: str, problem: str, moved: Sequence[str], not_pushed: Sequence[str]
) -> str:
    moved_text = ", ".join(f":{t}" for t in moved) or "none"
    rest = ", ".join(f":{t}" for t in not_pushed) or "none"
    return (
        f"Pushing :{tag} to {repository} failed ({problem}). "
        f"Tags that moved: {moved_text}; not pushed: {rest}."
    )


PUSH_DENIED = "access denied: check the bot's ECR permissions"


def no_such_build(build_id: str) -> str:
    return f"CodeBuild does not know the build `{escape(build_id)}`: check UAT_CODEBUILD_PROJECT."


REGISTRY_UNREACHABLE = "the registry is unreachable"


def aws_failed(what: str, why: str, code: str | None = None) -> str:
    """The one sentence every failed AWS call ends in: what failed, AWS's code, what to do."""
    said = f" ({code})" if code else ""
    return f"AWS {what} failed{said}: {why}."


def aws_read_only(what: str) -> str:
    return (
        f"AWS {what} was not called: this console was told not to change ECR or ECS (the answer "
        "at start was no). Quit and start `uat-bot console --aws` again to answer yes."
    )


AWS_NO_CREDENTIALS = (
    "no AWS credentials. Give the bot a role, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)
AWS_NO_REGION = "set AWS_REGION"


def aws_unreachable(endpoint: str) -> str:
    return f"cannot reach {endpoint}; check the network and AWS_ENDPOINT_URL"


def no_image_in_repository(ref: str, repository: str) -> str:
    return f"There is no image {ref} in {repository}."


def no_container(base: str, container: str, names: Sequence[str]) -> str:
    return (
        f"The task definition {base} has no container `{container}` "
        f"(it has {', '.join(names)}): check UAT_CONTAINER_NAME."
    )


def ecs_refused(reasons: Sequence[str]) -> str:
    return "ECS did not start the task: " + "; ".join(reasons or ["no reason given"])


DYNAMODB_HINTS = {
    "ResourceNotFoundException": (
        "check UAT_DYNAMODB_TABLE names a table in AWS_REGION; the bot creates it on start "
        "when its role may dynamodb:CreateTable"
    ),
    "AccessDeniedException": (
        "the bot's IAM role lacks this DynamoDB permission on the table "
        "(it needs GetItem, PutItem, UpdateItem, DeleteItem, Query and DescribeTable)"
    ),
    "ProvisionedThroughputExceededException": (
        "the table is out of capacity; switch it to on-demand billing or raise its throughput"
    ),
    "RequestLimitExceeded": "the account's DynamoDB request limit was hit; try again shortly",
    "ResourceInUseException": "the table is being created or changed; try again in a minute",
}


def not_the_bots_table(table: str) -> str:
    return (
        f"DynamoDB table {table} is not the bot's: its key must be pk (partition) and sk (sort), "
        "both strings. Point UAT_DYNAMODB_TABLE at another name and the bot creates it."
    )


# Why a store cannot be used, and what to do about it (serve's one line at start, the log).
STORE_CORRUPT = "is corrupt"
STORE_READ_ONLY = "cannot be written"
STORE_LOCKED = "is locked by another process"
STORE_FULL = "cannot grow: its disk is full"
STORE_BROKEN = "cannot be used"
STORE_FIXES = {
    STORE_CORRUPT: (
        "restore it from a backup (README: Backing up) or move it away, and the bot starts "
        "a new one"
    ),
    STORE_READ_ONLY: "give the bot's user write access to the file and its folder",
    STORE_LOCKED: (
        "stop the process that holds it (one uat-bot per SQLite file; several replicas need "
        "UAT_STORE=dynamodb)"
    ),
    STORE_FULL: "free space on its disk (or raise the process's file-size limit)",
    STORE_BROKEN: "check the file and its folder",
}


def sqlite_unusable(path: str, problem: str, cause: str) -> str:
    """One line: which file, what is wrong with it, SQLite's words, what to do."""
    return f"UAT_DB {path} {problem} ({cause}): {STORE_FIXES[problem]}."


def dynamodb_unusable(table: str, why: str) -> str:
    """One line: which table, and the failed call's own sentence (what to do included)."""
    return f"UAT_DYNAMODB_TABLE {table} cannot be used: {why}"


def lock_keeps_changing(name: str) -> str:
    return f"Could not take the {name} lock: it keeps changing hands; try again."


# CloudWatch Logs (bot/aws/logs.py): where a container's log is and why it cannot be read.


def no_awslogs(definition: str, container: str) -> str:
    return (
        f"The task definition `{definition}` sends no log of container `{container}` to "
        "CloudWatch Logs: give that container a `logConfiguration` with `logDriver` `awslogs` "
        "and the options `awslogs-group`, `awslogs-region` and `awslogs-stream-prefix` "
        "(as docs/uat-task-definition.json has it)."
    )


def logs_access_denied(group_arn: str) -> str:
    return (
        "The bot may not read the container's log: allow it `logs:GetLogEvents` and "
        f"`logs:FilterLogEvents` on `{group_arn}` (the `ReadTheContainersLogs` statement of "
        "docs/iam/bot-policy.json)."
    )


def log_stream_gone(group: str, stream: str) -> str:
    return (
        f"The log stream `{stream}` is not in the log group `{group}` (any more): the task "
        "may not have started its container, or the stream was deleted by the group's retention."
    )
