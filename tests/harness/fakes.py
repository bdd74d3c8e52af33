"""Recording stand-ins for the environments' gateways (ECS, ECR, Slack, the containers), for fast
decision tests: each records what it was asked, in order, and answers from what the test set up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from bot.aws.gateways import Ecr, Ecs, ImageInfo, TaskInfo
from bot.config import Settings
from bot.container import Answer, ContainerClient
from bot.slack.chat import Blocks, Message, Upload

ACCOUNT = "arn:aws:ecs:eu-west-1:123456789012"


class RecordingEcs(Ecs):
    """ECS as the launcher and watcher use it; `tasks` is what DescribeTasks answers."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.asked: list[tuple[str, Any]] = []
        self.tasks: dict[str, TaskInfo] = {}
        self.run_status = "RUNNING"
        self.while_running: Callable[[], Awaitable[None]] | None = None  # inside RunTask

    def said(self, call: str) -> list[Any]:
        return [args for name, args in self.asked if name == call]

    async def register_pinned(
        self, base_family: str, family: str, container: str, image: str, tags: dict[str, str]
    ) -> str:
        self.asked.append(("RegisterTaskDefinition", image))
        return f"{ACCOUNT}:task-definition/{family}:{len(self.said('RegisterTaskDefinition'))}"

    async def deregister(self, task_definition_arn: str) -> None:
        self.asked.append(("DeregisterTaskDefinition", task_definition_arn))

    async def task_size(self, task_definition_arn: str) -> tuple[int, int]:
        return 1024, 2048  # 1 vCPU, 2 GB, as the base definitions of the tests

    async def run_task(
        self,
        task_definition_arn: str,
        *,
        started_by: str,
        environment: dict[str, str],
        container: str,
        tags: dict[str, str],
    ) -> TaskInfo:
        self.asked.append(("RunTask", started_by))
        arn = f"{ACCOUNT}:task/uat/{len(self.tasks) + 1:032x}"
        task = TaskInfo(arn, self.run_status, "RUNNING", task_definition_arn, started_by, tags=tags)
        self.tasks[arn] = task
        if self.while_running is not None:
            await self.while_running()
        return task

    async def describe(self, arns: list[str]) -> dict[str, TaskInfo]:
        self.asked.append(("DescribeTasks", list(arns)))
        return {arn: self.tasks[arn] for arn in arns if arn in self.tasks}

    async def stop_task(self, arn: str, reason: str) -> None:
        self.asked.append(("StopTask", arn))
        if arn in self.tasks:
            self.tasks[arn] = replace(self.tasks[arn], last_status="STOPPED", stopped_reason=reason)

    async def tasks_started_by(self, started_by: str | None = None) -> list[str]:
        self.asked.append(("ListTasks", started_by))
        return [a for a, t in self.tasks.items() if started_by in (None, t.started_by)]

    async def task_definitions(self, family: str) -> list[str]:
        return []

    async def routing(self) -> list[tuple[str, str]]:
        return []

    async def delete_routing(self, arns: list[str]) -> None:
        self.asked.append(("DeleteRouting", arns))

    async def remove_routing(self, session_id: str) -> list[str]:
        self.asked.append(("RemoveRouting", session_id))
        return []


class RecordingEcr(Ecr):
    """ECR with one image per tag in `images`."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.images: dict[str, ImageInfo] = {}
        self.asked: list[str] = []

    async def describe(self, tag: str) -> ImageInfo | None:
        self.asked.append(tag)
        return self.images.get(tag)

    async def repository_uri(self) -> str:
        return "123456789012.dkr.ecr.eu-west-1.amazonaws.com/uat"


class RecordingChat:
    """Slack's chat as `bot.slack.chat.Chat`: messages posted (with their thread) and updates."""

    def __init__(self) -> None:
        self.posts: list[tuple[str | None, str]] = []  # (thread_ts, text)
        self.updates: list[tuple[str, str]] = []  # (ts, text)

    async def post(self, message: Message) -> str:
        self.posts.append((message.thread_ts, message.text))
        return f"{1000 + len(self.posts)}.000100"

    async def find(
        self, channel: str, key: str, thread_ts: str | None = None, since: float | None = None
    ) -> str | None:
        return None

    async def upload(self, upload: Upload) -> str:
        return "F0"

    async def update(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: Blocks | None = None,
        *,
        urgent: bool = False,
    ) -> None:
        self.updates.append((ts, text))

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: Blocks | None = None
    ) -> None:
        self.posts.append((None, text))

    def replies(self, thread_ts: str) -> list[str]:
        return [text for ts, text in self.posts if ts == thread_ts]


class AnsweringContainers(ContainerClient):
    """The containers' /health, one answer (or error) per PR, read from the URL's last segment
    (decision tests use UAT_CONTAINER_URL=http://127.0.0.1:9/{pr}); it records what was probed."""

    def __init__(self) -> None:
        super().__init__(self._no_session)
        self.answers: dict[int, Answer | Exception] = {}
        self.probed: list[int] = []

    @staticmethod
    def _no_session() -> Any:
        raise RuntimeError("decision tests reach no container over HTTP")

    async def health(self, base: str) -> Answer | None:
        pr = int(base.rstrip("/").rsplit("/", 1)[-1])
        self.probed.append(pr)
        answer = self.answers.get(pr)
        if isinstance(answer, Exception):
            raise answer
        return answer
