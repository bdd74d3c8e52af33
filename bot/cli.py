"""The `uat-bot` command: `serve`, `console`, and (as they land) the image operations."""

from __future__ import annotations

from typing import Annotated

import typer

from bot.config import Settings, load_settings, withhold_secrets
from bot.docs import command_help
from bot.errors import ConfigError
from bot.logs import configure_logging

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


@cli.command()
def console(
    embedded: Annotated[
        bool,
        typer.Option("--embedded", help="use the embedded AWS (moto) even when AWS is configured"),
    ] = False,
) -> None:
    """A local chat shell: /uat commands as in Slack, GitHub events, buttons by number.

    Without AWS configuration (no AWS_ENDPOINT_URL, no AWS credentials) it runs on an embedded,
    seeded AWS and stand-in containers, all on 127.0.0.1.
    """
    settings = _settings()
    configure_logging(settings.secrets(), level=30)
    from bot.console import main as console_main

    raise typer.Exit(console_main(settings, embedded=True if embedded else None))


Yes = Annotated[bool, typer.Option("--yes", "-y", help="answer the confirmation with yes")]
Ref = Annotated[str | None, typer.Argument(help="branch, tag or sha (default UAT_SOURCE_REF)")]


@cli.command(help=command_help("staging"))
def staging(ref: Ref = None, yes: Yes = False) -> None:
    """Build REF and push it as :staging and :<sha> (replaces deploy.sh staging)."""
    from bot import terminal

    raise typer.Exit(terminal.run(_settings(), lambda p: terminal.build(p, ref, "staging")))


@cli.command(help=command_help("promote"))
def promote(yes: Yes = False) -> None:
    """Copy the :staging manifest to :latest, no rebuild (replaces deploy.sh promote)."""
    from bot import terminal

    raise typer.Exit(terminal.run(_settings(), lambda p: terminal.promote(p, yes)))


@cli.command(help=command_help("latest"))
def latest(ref: Ref = None, yes: Yes = False) -> None:
    """Emergency: build REF straight to :latest and :<sha> (replaces deploy.sh latest)."""
    from bot import terminal

    raise typer.Exit(terminal.run(_settings(), lambda p: terminal.latest(p, ref, yes)))


@cli.command(help=command_help("rollback"))
def rollback(
    sha: Annotated[str | None, typer.Argument(help="the sha tag to go back to")] = None,
    yes: Yes = False,
) -> None:
    """Re-tag a known-good :<sha> image as :latest; without SHA, list the recent ones."""
    from bot import terminal

    raise typer.Exit(terminal.run(_settings(), lambda p: terminal.rollback(p, sha, yes)))


@cli.command(help=command_help("images"))
def images(yes: Yes = False) -> None:
    """Show what :latest and :staging point at, and the last 10 sha images."""
    from bot import terminal

    raise typer.Exit(terminal.run(_settings(), terminal.images))


def main() -> None:
    cli(prog_name="uat-bot")


if __name__ == "__main__":
    main()
