"""A local stand-in for the Slack Web API that test suites drive through real HTTP.

``SlackStub`` runs an aiohttp server on 127.0.0.1 (ephemeral port) that answers the Web API
methods uat-bot uses the way Slack does: it checks the bearer token, accepts form-encoded and
JSON bodies, validates Block Kit payloads with slack_sdk's own models, keeps the messages it
was sent (so ``chat.update``/threads/permalinks can be checked against them), and records every
call. It also serves ``response_url`` endpoints and can inject rate limits and server errors.

One module a surface, as Slack's API is divided: ``server`` (lifecycle, recording, faults, auth,
scopes, the message store), ``chat``, ``conversations`` (history and replies, pagination,
metadata), ``files`` (the v2 upload flow that ``files_upload_v2`` uses; files land in
:attr:`SlackStub.files`), ``views``, ``usergroups`` (a user group's members),
``response_urls``,
``socket_mode`` (apps.connections.open and its websocket); ``validation`` holds the checks
they share (Block Kit through slack_sdk's models, message metadata, argument errors) and
``records`` what the stub keeps. Put a scope in
:attr:`SlackStub.missing_scopes` to get ``missing_scope``.

Point a real client at it::

    async with SlackStub() as stub:
        client = AsyncWebClient(token=stub.token, base_url=stub.api_url)
        await client.chat_postMessage(channel="C1", text="hi")
        assert stub.messages["C1"][0]["text"] == "hi"
"""

from tests.harness.slack_stub.chat import ChatMethods
from tests.harness.slack_stub.conversations import ConversationMethods
from tests.harness.slack_stub.files import FileMethods
from tests.harness.slack_stub.records import Call, Response, StubFile
from tests.harness.slack_stub.response_urls import ResponseUrls
from tests.harness.slack_stub.socket_mode import SocketModeMethods
from tests.harness.slack_stub.usergroups import UserGroupMethods
from tests.harness.slack_stub.validation import validate_blocks
from tests.harness.slack_stub.views import ViewMethods

__all__ = ["Call", "Response", "SlackStub", "StubFile", "validate_blocks"]


class SlackStub(
    ChatMethods,
    ConversationMethods,
    FileMethods,
    ViewMethods,
    UserGroupMethods,
    ResponseUrls,
    SocketModeMethods,
):
    """A loopback Slack Web API server with recording, validation and fault injection: every
    surface above over one server (see `server.StubServer`)."""
