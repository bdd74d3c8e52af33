"""The `/uat` subcommands: one module each with NAME, a docstring that is its help, and `run`.

A module may also define `configure(parser)` to declare its arguments (argparse) and
`ack(args) -> str | None` for the text shown the moment Slack gets its acknowledgement.
`bot.slack.dispatch.load_commands()` discovers them; nothing else needs registering.
"""
