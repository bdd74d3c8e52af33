"""Validate manifest.yml against the official Slack app manifest JSON schema.

The schema is read from a copy of slackapi/manifest-schema in tests/fixtures (source and license
in its README). Nothing is fetched over the network: the top-level "all versions" schema refers to
the versioned files by their raw.githubusercontent.com URLs, which a Registry serves from the
local files.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_PATH = REPO_ROOT / "manifest.yml"
SCHEMA_DIR = REPO_ROOT / "tests" / "fixtures" / "slack" / "manifest-schema"
MANIFEST_MAJOR_VERSION = 1
VERSIONED_SCHEMA_PATH = (
    SCHEMA_DIR / "schemas" / f"manifest.schema.{MANIFEST_MAJOR_VERSION}.0.0.json"
)
ALL_VERSIONS_SCHEMA_PATH = SCHEMA_DIR / "manifest.schema.json"

EVENTS_PATH = "/slack/events"

# Every bot scope must be something the product actually calls.
EXPECTED_BOT_SCOPES = {
    "commands",  # /uat
    "chat:write",  # chat.postMessage / chat.update / chat.postEphemeral
    "channels:history",  # message.channels: PR-thread replies in public channels
    "groups:history",  # message.groups: PR-thread replies in private channels
    "files:write",  # files.getUploadURLExternal / files.completeUploadExternal: long outputs
    "usergroups:read",  # usergroups.users.list: UAT_OPERATORS' user groups (S…)
}
EXPECTED_BOT_EVENTS = {"app_home_opened", "message.channels", "message.groups"}
# Scope Slack requires before it will deliver each subscribed bot event.
EVENT_REQUIRED_SCOPE = {
    "app_home_opened": None,
    "message.channels": "channels:history",
    "message.groups": "groups:history",
}


def _load_json(path: Path) -> dict[str, Any]:
    assert path.is_file(), f"missing schema file {path}"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = _load_json(VERSIONED_SCHEMA_PATH)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    Draft7Validator.check_schema(schema)
    # All $refs in the versioned schema are internal (#/definitions/...); no registry needed.
    return Draft7Validator(schema)


def _collect_refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        refs = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            refs |= _collect_refs(value)
        return refs
    if isinstance(node, list):
        return set().union(*(_collect_refs(v) for v in node)) if node else set()
    return set()


@pytest.fixture(scope="module")
def all_versions_validator() -> Draft7Validator:
    """Top-level schema whose remote $refs resolve to the local versioned files only."""
    schema = _load_json(ALL_VERSIONS_SCHEMA_PATH)
    remote = {ref for ref in _collect_refs(schema) if not ref.startswith("#")}
    assert remote, "expected the all-versions schema to reference the versioned schema files"
    resources = []
    for uri in sorted(remote):
        local = SCHEMA_DIR / "schemas" / uri.rsplit("/", 1)[-1]
        resources.append((uri, Resource.from_contents(_load_json(local))))
    # A Registry without a retrieve callable never touches the network: an unknown URI fails.
    registry: Registry[Any] = Registry().with_resources(resources)
    return Draft7Validator(schema, registry=registry)


def _errors(validator: Draft7Validator, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def test_manifest_declares_the_version_of_the_schema_used(manifest: dict[str, Any]) -> None:
    assert manifest["_metadata"]["major_version"] == MANIFEST_MAJOR_VERSION


def test_manifest_is_valid_against_official_schema(
    manifest: dict[str, Any], validator: Draft7Validator
) -> None:
    assert _errors(validator, manifest) == []


def test_manifest_is_valid_against_all_versions_schema(
    manifest: dict[str, Any], all_versions_validator: Draft7Validator
) -> None:
    assert _errors(all_versions_validator, manifest) == []


def test_official_fixtures_behave_as_upstream_expects(validator: Draft7Validator) -> None:
    tests_dir = SCHEMA_DIR / "tests"
    valid = _load_json(tests_dir / f"v{MANIFEST_MAJOR_VERSION}_manifest.valid.json")
    invalid = _load_json(tests_dir / f"v{MANIFEST_MAJOR_VERSION}_manifest.invalid.json")
    assert _errors(validator, valid) == []
    assert _errors(validator, invalid) != []


def _without_command(m: dict[str, Any]) -> None:
    del m["features"]["slash_commands"][0]["command"]


def _unknown_top_level_key(m: dict[str, Any]) -> None:
    m["not_a_manifest_key"] = True


def _non_http_request_url(m: dict[str, Any]) -> None:
    m["settings"]["event_subscriptions"]["request_url"] = "uat-bot.example.com/slack/events"


def _command_without_slash(m: dict[str, Any]) -> None:
    m["features"]["slash_commands"][0]["command"] = "uat"


@pytest.mark.parametrize(
    ("breakage", "expected_fragment"),
    [
        (_without_command, "'command' is a required property"),
        (_unknown_top_level_key, "Additional properties are not allowed"),
        (_non_http_request_url, "does not match"),
        (_command_without_slash, "does not match"),
    ],
    ids=["slash-command-without-command", "unknown-top-level-key", "non-http-url", "no-slash"],
)
def test_schema_rejects_broken_copies(
    manifest: dict[str, Any],
    validator: Draft7Validator,
    all_versions_validator: Draft7Validator,
    breakage: Any,
    expected_fragment: str,
) -> None:
    broken = copy.deepcopy(manifest)
    breakage(broken)
    errors = _errors(validator, broken)
    assert any(expected_fragment in e for e in errors), errors
    assert not all_versions_validator.is_valid(broken)


def test_uat_slash_command(manifest: dict[str, Any]) -> None:
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert set(commands) == {"/uat"}
    uat = commands["/uat"]
    assert uat["url"].startswith("https://")
    assert uat["url"].endswith(EVENTS_PATH)
    assert uat["should_escape"] is False
    assert uat["description"]
    for sub in ("help", "staging", "promote", "status", "prompt"):
        assert sub in uat["usage_hint"]


def _request_urls(manifest: dict[str, Any]) -> list[str]:
    settings = manifest["settings"]
    urls = [c["url"] for c in manifest["features"].get("slash_commands", []) if "url" in c]
    urls.append(settings["event_subscriptions"]["request_url"])
    urls.append(settings["interactivity"]["request_url"])
    return urls


def test_every_request_url_targets_slack_events(manifest: dict[str, Any]) -> None:
    urls = _request_urls(manifest)
    assert len(urls) == 3
    for url in urls:
        assert re.fullmatch(r"https://[^/\s]+/slack/events", url), url
    assert len({url.split("/")[2] for url in urls}) == 1, "all request URLs should share one host"


def test_bot_scopes_are_exactly_what_the_product_uses(manifest: dict[str, Any]) -> None:
    scopes = manifest["oauth_config"]["scopes"]
    assert set(scopes) == {"bot"}, "no user scopes or optional scopes"
    assert len(scopes["bot"]) == len(set(scopes["bot"]))
    assert set(scopes["bot"]) == EXPECTED_BOT_SCOPES


def test_every_bot_scope_is_justified_by_a_comment() -> None:
    text = MANIFEST_PATH.read_text(encoding="utf-8")
    for scope in EXPECTED_BOT_SCOPES:
        line = re.compile(rf"^\s*-\s*{re.escape(scope)}\s+#\s*\S", re.MULTILINE)
        assert line.search(text), f"scope {scope} has no justifying comment on its line"


def test_event_subscriptions(manifest: dict[str, Any]) -> None:
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert "app_home_opened" in events
    assert set(events) == EXPECTED_BOT_EVENTS
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    for event in events:
        needed = EVENT_REQUIRED_SCOPE[event]
        assert needed is None or needed in scopes, f"{event} needs {needed}"


def test_app_home_bot_user_and_settings(manifest: dict[str, Any]) -> None:
    features = manifest["features"]
    assert features["app_home"]["home_tab_enabled"] is True
    assert features["app_home"]["messages_tab_enabled"] is False
    assert features["bot_user"]["always_online"] is True
    assert manifest["display_information"]["name"] == "UAT Bot"
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["org_deploy_enabled"] is False
    assert settings["socket_mode_enabled"] is False
    assert settings["token_rotation_enabled"] is False
