"""usergroups.users.list: the members of a user group, as UAT_OPERATORS' `S…` IDs are read.

As https://api.slack.com/methods/usergroups.users.list says: it needs the `usergroups:read` scope
(`missing_scope` otherwise; the token itself is checked like every method's), the `usergroup`
argument is required (`invalid_arguments` without it), an unknown group answers `no_such_subteam`
and a disabled one `subteam_disabled` unless `include_disabled` is true; the answer is
`{"ok": true, "users": [user IDs]}`.
"""

from __future__ import annotations

from typing import Any

from tests.harness.slack_stub.records import UserGroup
from tests.harness.slack_stub.server import Handler, StubServer
from tests.harness.slack_stub.validation import SlackError, flag


class UserGroupMethods(StubServer):
    """usergroups.users.list over the groups a test adds (`add_usergroup`)."""

    def add_usergroup(self, group: str, users: list[str], *, disabled: bool = False) -> None:
        """A user group `group` (an `S…` ID) whose members are `users`."""
        self.usergroups[group] = UserGroup(list(users), disabled)

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group_id = self._required_param(params, "usergroup")
        group = self.usergroups.get(group_id)
        if group is None:
            raise SlackError("no_such_subteam")
        if group.disabled and not flag(params.get("include_disabled", False)):
            raise SlackError("subteam_disabled")
        return {"ok": True, "users": list(group.users)}

    def _handlers(self) -> dict[str, Handler]:
        return {**super()._handlers(), "usergroups.users.list": self._usergroups_users_list}
