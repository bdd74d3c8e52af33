"""The `uat-bot` command: `serve`, `console`, and (as they land) the image operations."""

from __future__ import annotations

import typer

from bot.config import Settings, load_settings
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
    settings = _settings()
    missing = settings.missing_for_serve()
    if missing:
        typer.echo(str(ConfigError(missing)), err=True)
        raise typer.Exit(2)
    configure_logging(settings.secrets())
    from bot.app import build_runtime
    from bot.server import serve as run_server

    run_server(settings, build_runtime(settings))


@cli.command()
def console() -> None:
    """A local chat shell: type /uat commands as you would in Slack."""
    settings = _settings()
    configure_logging(settings.secrets(), level=30)
    from bot.console import main as console_main

    raise typer.Exit(console_main(settings))


def main() -> None:
    cli(prog_name="uat-bot")


if __name__ == "__main__":
    main()
