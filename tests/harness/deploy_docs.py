"""The deployment documented in docs/ as tests read it: each JSON file without its comment, and
the environment the documented bot service and UAT task definition set."""

from __future__ import annotations

import json
from typing import Any

from tests.harness.bot import ROOT

DOCS = ROOT / "docs"


def document(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DOCS / name).read_text())
    return {k: v for k, v in loaded.items() if k != "_comment"}


def bot_environment() -> dict[str, str]:
    """docs/ecs-service.json's bot container environment, its secrets as placeholders."""
    [container] = document("ecs-service.json")["taskDefinition"]["containerDefinitions"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    env.update({s["name"]: "from-secrets-manager" for s in container["secrets"]})
    return env


def uat_task_environment() -> dict[str, str]:
    """docs/uat-task-definition.json's container environment."""
    [container] = document("uat-task-definition.json")["containerDefinitions"]
    return {e["name"]: e["value"] for e in container["environment"]}
