"""The sizes Slack refuses or truncates past, named once; Block Kit builders cut to these.

https://api.slack.com/reference/block-kit/blocks and https://api.slack.com/methods/chat.postMessage
"""

from __future__ import annotations

from typing import Final

SECTION_TEXT: Final = 3000  # a section's (or a context element's) text
FIELD_TEXT: Final = 2000  # one of a section's fields
BUTTON_VALUE: Final = 2000  # a button's value, sent back on the click
BUTTON_TEXT: Final = 75  # a button's label
ACTION_ID: Final = 255  # an action_id or block_id
MESSAGE_TEXT: Final = 40_000  # a message's text; Slack truncates past it
BLOCKS: Final = 50  # blocks in one message
