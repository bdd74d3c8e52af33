"""Developer tools, never imported by `uat-bot serve`: the local console (`console`, its embedded
world in `local`), the terminal's image operations (`terminal`) and the README's generated
command reference (`docs`)."""
