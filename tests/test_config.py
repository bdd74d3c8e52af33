"""Settings: names from DESIGN.md, every problem at once, `serve` refuses to start unconfigured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import FIND_CHANNEL_ID, load_settings, withhold_secrets
from bot.errors import ConfigError

CREDENTIALS = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s-1"}


def test_defaults_are_the_embedded_ones() -> None:
    settings = load_settings({})
    assert (settings.uat_host, settings.uat_port) == ("0.0.0.0", 3000)
    assert settings.slack_api_url == "https://slack.com/api/"
    assert (settings.uat_label_latest, settings.uat_label_staging) == ("uat", "uat-staging")
    assert settings.uat_ecr_repository == "test-tickets-uat"
    assert (settings.uat_source_ref, settings.uat_build_path) == ("main", "container")
    assert settings.uat_container_url == "http://{ip}:8080"
    assert settings.uat_db == "uat-bot.db"
    assert (settings.uat_poll_seconds, settings.uat_idle_hours) == (10, 8)
    assert settings.uat_deployers == ()


def test_lists_are_comma_separated() -> None:
    settings = load_settings(
        {"UAT_DEPLOYERS": "U1, U2,,", "UAT_REPOSITORIES": "acme/web", "UAT_SUBNETS": "s-1,s-2"}
    )
    assert settings.uat_deployers == ("U1", "U2")
    assert settings.uat_repositories == ("acme/web",)
    assert settings.uat_subnets == ("s-1", "s-2")


def test_every_problem_is_reported_at_once_with_what_to_put() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "UAT_PORT": "70000",
                "UAT_POLL_SECONDS": "0",
                "UAT_CONTAINER_URL": "http://{host}:8080",
                "SLACK_API_URL": "slack.com/api",
            }
        )
    message = str(caught.value)
    for name in ("UAT_PORT", "UAT_POLL_SECONDS", "UAT_CONTAINER_URL", "SLACK_API_URL"):
        assert name in message
    assert len(caught.value.problems) == 4
    assert "e.g. http://{ip}:8080" in message


def test_secrets_are_not_shown_in_reprs() -> None:
    settings = load_settings({"SLACK_BOT_TOKEN": "xoxb-very-secret-value"})
    assert "xoxb-very-secret-value" not in repr(settings)
    assert settings.secrets() == ["xoxb-very-secret-value"]


def test_socket_mode_needs_the_app_token_not_the_signing_secret() -> None:
    settings = load_settings({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"})
    assert settings.socket_mode
    assert settings.missing_for_serve() == []


def test_dotenv_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("UAT_PORT=4100\nUAT_CHANNEL=C0FROMENV\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UAT_PORT", raising=False)
    monkeypatch.delenv("UAT_CHANNEL", raising=False)
    settings = load_settings()
    assert (settings.uat_port, settings.uat_channel) == (4100, "C0FROMENV")


def test_serve_without_slack_credentials_exits_with_the_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "UAT_"))}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "SLACK_BOT_TOKEN is not set" in result.stderr
    assert "SLACK_SIGNING_SECRET is not set" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("channel", ["#uat", "uat-prs", "c0123abcd", "C", "C0123-ABC"])
def test_serve_refuses_a_channel_that_is_not_an_id_and_says_where_to_find_it(channel: str) -> None:
    settings = load_settings({**CREDENTIALS, "UAT_CHANNEL": channel})
    [problem] = settings.problems_for_serve()
    assert problem.startswith(f"UAT_CHANNEL is {channel!r}, ")
    assert problem.endswith(FIND_CHANNEL_ID)
    assert "Channel ID" in problem


@pytest.mark.parametrize("channel", ["C0123ABCD", "G01AB2CD3", "C0UAT"])
def test_serve_takes_channel_ids(channel: str) -> None:
    assert load_settings({**CREDENTIALS, "UAT_CHANNEL": channel}).problems_for_serve() == []


def test_serve_refuses_subnets_and_security_groups_that_are_not_aws_ids() -> None:
    settings = load_settings(
        {
            **CREDENTIALS,
            "UAT_SUBNETS": "subnet-0123456789abcdef0,public-a,subnet-XYZ12345",
            "UAT_SECURITY_GROUPS": "sg-1a2b3c4d,web",
        }
    )
    assert settings.problems_for_serve() == [
        "UAT_SUBNETS has 'public-a', not a subnet ID: list IDs like subnet-0123456789abcdef0 "
        "(VPC console), comma-separated",
        "UAT_SUBNETS has 'subnet-XYZ12345', not a subnet ID: list IDs like "
        "subnet-0123456789abcdef0 (VPC console), comma-separated",
        "UAT_SECURITY_GROUPS has 'web', not a security group ID: list IDs like "
        "sg-0123456789abcdef0 (VPC console), comma-separated",
    ]


def test_withheld_secrets_are_gone_from_the_environment_and_the_rest_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-env")
    monkeypatch.setenv("UAT_PROMPT_TOKEN", "prompt-from-env")
    monkeypatch.setenv("UAT_CHANNEL", "C0UAT")
    settings = load_settings(env_file=None)
    withhold_secrets()
    assert "SLACK_BOT_TOKEN" not in os.environ and "UAT_PROMPT_TOKEN" not in os.environ
    assert os.environ["UAT_CHANNEL"] == "C0UAT"
    assert settings.secrets()[0] == "xoxb-from-env"  # Settings keeps what it read


def test_the_builder_is_docker_unless_told_codebuild_with_a_project() -> None:
    settings = load_settings({})
    assert (settings.uat_builder, settings.uat_build_timeout_s) == ("docker", 1800)
    settings = load_settings({"UAT_BUILDER": "codebuild", "UAT_CODEBUILD_PROJECT": "uat-image"})
    assert (settings.uat_builder, settings.uat_codebuild_project) == ("codebuild", "uat-image")


def test_codebuild_without_a_project_is_one_line_saying_what_to_set() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"UAT_BUILDER": "codebuild"})
    [line] = caught.value.problems
    assert line.startswith("UAT_CODEBUILD_PROJECT is not set but UAT_BUILDER is codebuild: ")
    assert "docs/codebuild-project.json" in line and "UAT_BUILDER=docker" in line


def test_an_unknown_builder_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"UAT_BUILDER": "kaniko", "UAT_BUILD_TIMEOUT_S": "0"})
    assert [p.split(" ")[0] for p in caught.value.problems] == [
        "UAT_BUILDER",
        "UAT_BUILD_TIMEOUT_S",
    ]


@pytest.mark.parametrize("name", ["UAT_APP_URL", "UAT_CONTAINER_URL"])
def test_url_templates_take_session_pr_task_id_and_ip(name: str) -> None:
    template = "https://{session}.uat.example.com/{pr}/{task_id}?ip={ip}"
    settings = load_settings({name: template})
    assert getattr(settings, name.lower()) == template


def the_one_problem(name: str, value: str) -> str:
    """The one line load_settings refuses `name`=`value` with (the credentials being fine)."""
    with pytest.raises(ConfigError) as caught:
        load_settings({**CREDENTIALS, name: value})
    [problem] = caught.value.problems
    return problem


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("https://{host}.uat.example.com", "has {host}, which is not a placeholder"),
        ("https://{0}.uat.example.com", "has {0}, which is not a placeholder"),
        ("https://{session.id}.uat.example.com", "has {session.id}, which is not a placeholder"),
        ("https://{session.uat.example.com", "is not a valid template"),
        ("https://uat.example.com/}", "is not a valid template"),
        ("{session}.uat.example.com", "must be an http:// or https:// URL"),
    ],
)
@pytest.mark.parametrize("name", ["UAT_APP_URL", "UAT_CONTAINER_URL"])
def test_an_unknown_placeholder_or_a_broken_template_is_one_line_naming_it(
    name: str, template: str, words: str
) -> None:
    problem = the_one_problem(name, template)
    assert problem.startswith(f"{name} is invalid ({words}")
    assert "\n" not in problem


@pytest.mark.parametrize(
    "label", ["uat", "UAT staging", "uat:pr/preview@v2_+=-.", "прогон", "x" * 256]
)
def test_labels_that_ecs_takes_as_tag_values_are_accepted(label: str) -> None:
    assert load_settings({"UAT_LABEL_LATEST": label}).uat_label_latest == label


@pytest.mark.parametrize(
    ("label", "words"),
    [
        ("uat!", "has '!'"),
        ("uat, staging", "has ','"),
        ("🚀 uat", "has '🚀'"),
        ("uat\tstaging", "has '\\t'"),
        ("x" * 257, "is 257 characters long; ECS takes at most 256"),
        ("aws:uat", "starts with aws:"),
        ("", "is empty"),
    ],
)
@pytest.mark.parametrize("name", ["UAT_LABEL_LATEST", "UAT_LABEL_STAGING"])
def test_a_label_ecs_would_refuse_as_a_task_tag_stops_at_start(
    name: str, label: str, words: str
) -> None:
    problem = the_one_problem(name, label)
    assert problem.startswith(f"{name} is invalid (ECS refuses it as a task tag: it {words}")


def test_github_access_is_a_token_or_an_app_and_nothing_without_either() -> None:
    assert load_settings({}).github_access is None
    token = load_settings({"UAT_GITHUB_TOKEN": "ghp-1"})
    assert (token.github_access, token.uat_github_api_url) == ("token", "https://api.github.com")
    app = load_settings(
        {
            "UAT_GITHUB_APP_ID": "12345",
            "UAT_GITHUB_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----",
            "UAT_GITHUB_API_URL": "https://ghe.example.com/api/v3/",
        }
    )
    assert (app.github_access, app.uat_github_api_url) == ("app", "https://ghe.example.com/api/v3")
    assert "ghp-1" in token.secrets() and "-----BEGIN RSA PRIVATE KEY-----" in app.secrets()
    assert load_settings({}).uat_github_status is True
    assert load_settings({"UAT_GITHUB_STATUS": "false"}).uat_github_status is False


def test_half_a_github_app_is_one_line_saying_what_else_to_set() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"UAT_GITHUB_APP_ID": "12345"})
    [line] = caught.value.problems
    assert line.startswith("UAT_GITHUB_PRIVATE_KEY is not set but UAT_GITHUB_APP_ID is: ")
    assert "private key" in line


def test_a_github_app_id_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"UAT_GITHUB_APP_ID": "my-app", "UAT_GITHUB_PRIVATE_KEY": "k"})
    [line] = caught.value.problems
    assert line.startswith("UAT_GITHUB_APP_ID is invalid (must be the App's numeric ID)")
