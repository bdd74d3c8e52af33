"""The `uat-bot` command: `serve`, `console`, and (as they land) the image operations."""

from __future__ import annotations

from typing import Annotated

import typer

from bot.config import Settings, load_settings, withhold_secrets
from bot.errors import ConfigError
from bot.logs import configure_logging
from bot.slack.dispatch import terminal_help
from bot.store import StoreUnavailable

cli = typer.Typer(
    help="uat-bot: per-pull-request UAT environments from Slack and the terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@cli.command()
def serve() -> None:
    """Serve Slack (/slack/events or Socket Mode), GitHub webhooks and /healthz."""
    try:  # whatever is wrong at start: one line each, exit status 1
        settings = load_settings()
        problems = settings.problems_for_serve()
        if problems:
            raise ConfigError(problems)
        withhold_secrets()
        configure_logging(settings.secrets())
        from bot.app import build_runtime
        from bot.server import serve as run_server

        run_server(settings, build_runtime(settings))
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except StoreUnavailable as exc:  # UAT_DB or the table: which, why, what to do
        typer.echo(exc.line, err=True)
        raise typer.Exit(1) from None


@cli.command()
def console(
    aws: Annotated[
        bool,
        typer.Option(
            "--aws",
            help="act on AWS as configured (says which account and asks before changing it)",
        ),
    ] = False,
) -> None:
    """A local chat shell: /uat commands as in Slack, GitHub events, buttons by number.

    It runs on an embedded, seeded AWS (moto), stand-in containers and builds that land in the
    embedded ECR, all on 127.0.0.1, whatever AWS settings the shell has. `--aws` acts on AWS as
    configured instead.
    """
    settings = _settings()
    configure_logging(settings.secrets(), level=30)
    from bot.devtools.console import main as console_main

    raise typer.Exit(console_main(settings, real_aws=aws))


Yes = Annotated[bool, typer.Option("--yes", "-y", help="answer the confirmation with yes")]
NoQuestion = Annotated[
    bool, typer.Option("--yes", "-y", hidden=True)
]  # asks nothing; scripts pass it
Ref = Annotated[str | None, typer.Argument(help="branch, tag or sha (default UAT_SOURCE_REF)")]


@cli.command(help=terminal_help("staging"))
def staging(ref: Ref = None, yes: NoQuestion = False) -> None:
    """Build REF and push it as :staging and :<sha> (replaces deploy.sh staging)."""
    from bot.devtools import terminal

    raise typer.Exit(terminal.run(_settings(), lambda p: terminal.staging(p, ref)))


@cli.command(help=terminal_help("promote"))
def promote(yes: Yes = False) -> None:
    """Copy the :staging manifest to :latest, no rebuild (replaces deploy.sh promote)."""
    from bot.devtools import terminal

    raise typer.Exit(terminal.run(_settings(), lambda p: terminal.promote(p, yes)))


@cli.command(help=terminal_help("latest"))
def latest(ref: Ref = None, yes: Yes = False) -> None:
    """Emergency: build REF straight to :latest and :<sha> (replaces deploy.sh latest)."""
    from bot.devtools import terminal

    raise typer.Exit(terminal.run(_settings(), lambda p: terminal.latest(p, ref, yes)))


@cli.command(help=terminal_help("rollback"))
def rollback(
    sha: Annotated[str | None, typer.Argument(help="the sha tag to go back to")] = None,
    yes: Yes = False,
) -> None:
    """Re-tag a known-good :<sha> image as :latest; without SHA, list the recent ones."""
    from bot.devtools import terminal

    raise typer.Exit(terminal.run(_settings(), lambda p: terminal.rollback(p, sha, yes)))


@cli.command(help=terminal_help("images"))
def images() -> None:
    """Show what :latest and :staging point at, and the last 10 sha images."""
    from bot.devtools import terminal

    raise typer.Exit(terminal.run(_settings(), terminal.images))


@cli.command(help=terminal_help("cleanup"))
def cleanup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would go")] = False,
    yes: Yes = False,
) -> None:
    """List what no environment owns and, once confirmed, remove it."""
    from bot.devtools import terminal

    settings = _settings()
    raise typer.Exit(terminal.run_main(lambda: terminal.cleanup(settings, yes, dry_run)))


@cli.command(help=terminal_help("logs"))
def logs(
    pr: Annotated[str, typer.Argument(help="PR-123, #123, 123 or owner/repo#123")],
    lines: Annotated[int, typer.Option("--lines", help="how many (1 to 500)")] = 50,
    since: Annotated[str | None, typer.Option("--since", help="only the last 10m, 2h …")] = None,
    grep: Annotated[str | None, typer.Option("--grep", help="only lines containing TEXT")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
) -> None:
    """Print a PR container's last log lines; --follow keeps printing new ones."""
    from bot.devtools import terminal

    settings = _settings()
    raise typer.Exit(
        terminal.run_main(lambda: terminal.logs(settings, pr, lines, since, grep, follow))
    )


def main() -> None:
    cli(prog_name="uat-bot")


if __name__ == "__main__":
    main()
