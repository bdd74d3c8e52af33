"""chat.*: post, update, ephemeral, delete, permalink."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from tests.harness.slack_stub.server import BOT_USER_ID, Handler, StubServer
from tests.harness.slack_stub.validation import SlackError, checked_metadata


class ChatMethods(StubServer):
    """chat.*: post, update, ephemeral, delete, permalink."""

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._target(self._str_param(params, "channel"), write=True).id
        text, blocks, attachments = self._checked_content(params)
        metadata = checked_metadata(params)
        thread_ts = self._thread_root(channel, self._str_param(params, "thread_ts"))
        ts = self._next_ts()
        msg = self._new_message(channel, ts, text or "", blocks, attachments, thread_ts)
        if metadata is not None:
            msg["metadata"] = metadata
        self._store_post(msg)
        return {"ok": True, "channel": channel, "ts": ts, "message": self._public(msg)}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, msg = self._existing(params, "ts", write=True)
        # https://docs.slack.dev/reference/methods/chat.update: "cant_update_message: This
        # message cannot be updated" (a bot token edits only its own messages) and
        # "edit_window_closed: The message cannot be edited due to the team message edit
        # settings" (a workspace's window, set here with ``edit_window_s``).
        if msg.get("user") != BOT_USER_ID:
            raise SlackError("cant_update_message")
        window = self.edit_window_s
        if window is not None and time.time() - float(Decimal(msg["ts"])) > window:
            raise SlackError("edit_window_closed")
        text, blocks, attachments = self._checked_content(params)
        metadata = checked_metadata(params)
        # Slack keeps fields that the update omits; an empty list clears blocks/attachments.
        if metadata is not None:
            msg["metadata"] = metadata
        if text is not None:
            msg["text"] = text
        if blocks is not None:
            msg["blocks"] = blocks or None
        if attachments is not None:
            msg["attachments"] = attachments or None
        msg["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        return {
            "ok": True,
            "channel": channel,
            "ts": msg["ts"],
            "text": msg["text"],
            "message": self._public(msg),
        }

    def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        record = self._target(self._str_param(params, "channel"), write=True)
        channel = record.id
        user = self._required_param(params, "user")
        # https://docs.slack.dev/reference/methods/chat.postEphemeral: "user_not_in_channel:
        # Intended recipient is not in the specified channel."
        if record.members is not None and user not in record.members:
            raise SlackError("user_not_in_channel")
        text, blocks, attachments = self._checked_content(params)
        message_ts = self._next_ts()
        self.ephemerals.append(
            {
                "channel": channel,
                "user": user,
                "text": text or "",
                "blocks": blocks,
                "attachments": attachments,
                "thread_ts": self._str_param(params, "thread_ts"),
                "message_ts": message_ts,
            }
        )
        return {"ok": True, "message_ts": message_ts}

    def _chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, msg = self._existing(params, "ts", write=True)
        # https://docs.slack.dev/reference/methods/chat.delete: "cant_delete_message" for a
        # message the token may not delete (a bot's token deletes only its own).
        if msg.get("user") != BOT_USER_ID:
            raise SlackError("cant_delete_message")
        self.messages[channel].remove(msg)
        self.deleted.append(msg)
        return {"ok": True, "channel": channel, "ts": msg["ts"]}

    def _chat_get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, msg = self._existing(params, "message_ts")
        link = f"{self.base_url}archives/{channel}/p{msg['ts'].replace('.', '')}"
        root = msg.get("thread_ts")
        if root and root != msg["ts"]:
            link += "?" + urlencode({"thread_ts": root, "cid": channel})
        return {"ok": True, "channel": channel, "permalink": link}

    def _handlers(self) -> dict[str, Handler]:
        return {
            **super()._handlers(),
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.delete": self._chat_delete,
            "chat.getPermalink": self._chat_get_permalink,
        }
