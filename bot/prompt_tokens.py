"""Each environment's own prompt token, derived from the bot's master secret (UAT_PROMPT_TOKEN).

`uatp_` + the urlsafe base64 (unpadded) of HMAC-SHA256(master, "repo\\npr\\nsession"): the same
environment always gets the same token, so a bot restarted with a lost store still knows it, and a
token says nothing of the master or of any other environment's token. The master never leaves the
bot: a task gets its environment's token (bot/environments/launcher.py), and the bot uses that
token on every call to that environment's container (bot/prompts.py, bot/environments/watcher.py).
The `uatp_` prefix gives the tokens a shape bot/scrub.py recognises wherever one turns up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

PREFIX: Final = "uatp_"


def environment_token(master: str, repo: str, pr: int, session: str) -> str:
    """The prompt token of the environment `session` of `repo`#`pr`."""
    message = f"{repo.lower()}\n{pr}\n{session}".encode()
    digest = hmac.new(master.encode(), message, hashlib.sha256).digest()
    return PREFIX + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def pool_token(master: str, installation: str, pool_id: str) -> str:
    """The token a warm-pool task `pool_id` is started with, which alone may claim it (POST
    /claim): derived like an environment's token (a "pool" line first, so no environment's
    token is ever a pool token), never stored, and spent by the claim."""
    message = f"pool\n{installation}\n{pool_id}".encode()
    digest = hmac.new(master.encode(), message, hashlib.sha256).digest()
    return PREFIX + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
