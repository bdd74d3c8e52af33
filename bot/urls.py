"""The URL templates `UAT_CONTAINER_URL` and `UAT_APP_URL`: their placeholders, the check that
stops `serve` on a bad one, and the one function that fills either for an environment.

Placeholders: `{session}` (the launch's session id: the task's SESSION_ID, so
`https://{session}.<UAT_DOMAIN>` is the host entrypoint.sh routes on the ALB), `{pr}`, `{task_id}`
(the last part of the task's ARN) and `{ip}` (the task's private address).
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.aws.gateways import TaskInfo
    from bot.store import Environment

PLACEHOLDERS = ("session", "pr", "task_id", "ip")
_EXAMPLE = {"session": "pr1-0a1b2c3d", "pr": 1, "task_id": "0123456789abcdef", "ip": "10.0.0.1"}


def template_problem(template: str) -> str | None:
    """Why `template` is not a usable URL template (a phrase), or None when it is."""
    *first, last = [f"{{{name}}}" for name in PLACEHOLDERS]
    allowed = f"{', '.join(first)} or {last}"
    if not template.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL"
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        unknown = [name for name in names if name not in PLACEHOLDERS]
        if unknown:
            return f"has {{{unknown[0]}}}, which is not a placeholder: use only {allowed}"
        template.format(**_EXAMPLE)
    except (ValueError, IndexError, KeyError) as exc:
        return f"is not a valid template: {exc}; use only {allowed}, and {{{{ }}}} for a brace"
    return None


def environment_url(template: str, env: Environment, task: TaskInfo | None = None) -> str:
    """`template` filled for `env` (with `task`'s address and id when given, else what `env`
    last recorded), without a trailing slash. Unknown values are empty."""
    task_id = task.task_id if task else (env.task_arn or "").rsplit("/", 1)[-1]
    ip = (task.private_ip if task else env.facts.task_ip) or ""
    filled = template.format(session=env.facts.session or "", pr=env.pr, task_id=task_id, ip=ip)
    return filled.rstrip("/")


def task_url(template: str, task: TaskInfo) -> str:
    """`template` filled for a task that runs no environment yet (a warm-pool task): its
    address and id only; UAT_WARM_POOL refuses a template with {session} or {pr}."""
    filled = template.format(session="", pr="", task_id=task.task_id, ip=task.private_ip or "")
    return filled.rstrip("/")
