"""SessionGuard actor: ends or narrows live sessions when what they were granted changes.

Every node reads every change of `users` from the change log (the listener sends this
actor each batch it reads). When a user is deactivated or deleted, or their role or
department changes, the guard tells each of that user's connections on this node to
re-check its principal (`Recheck`): a connection whose user is no longer active closes
with `auth_failed`; one whose rights changed ends its subscriptions with
`resync {reason: "permissions_changed"}` and answers later subscribes with the new
rights. Since every node runs a guard, a revocation reaches every node within its
listener's lag (milliseconds). With Redis, the guard also announces each revocation on
the cluster bus (actors/bus.py), and acts on the other processes' announcements for
changes its own listener has not read yet: a node catching up a backlog revokes at once,
not when it gets there. Token expiry is the HeartbeatScheduler's job (one deadline per
connection, no task).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from sinal.actors.hub import Hub
from sinal.domain.changes import Change
from sinal.engine.actor import Actor

GUARD_NAME = "session_guard"
_GRANTS = ("is_active", "role", "department_id")


def revokes(change: Change) -> bool:
    """Does this change of a user touch what their sessions were granted?"""
    if change.table != "users":
        return False
    if change.op == "delete":
        return True
    return change.op == "update" and any(f in (change.changed or {}) for f in _GRANTS)


class SessionGuard(Actor[list[Change]]):
    kind = "session_guard"

    def __init__(self, hub: Hub, *, inbox_size: int = 64,
                 announce: Callable[[str, int], None] | None = None) -> None:
        super().__init__(GUARD_NAME, capacity=inbox_size, registry=hub.registry)
        self.hub = hub
        self.rechecks = 0
        self.position = 0  # the last change of the log this guard has read
        self.announce = announce  # the cluster bus's announce_revoke, with Redis
        self._early: OrderedDict[tuple[str, int], None] = OrderedDict()  # acted on early

    def _recheck_user(self, user_id: str) -> None:
        for conn in list(self.hub.connections_by_user.get(user_id, ())):
            conn.recheck()
            self.rechecks += 1

    async def handle(self, changes: list[Change]) -> None:
        for change in changes:
            self.position = max(self.position, change.position)
            if revokes(change):
                key = (change.row_id, change.position)
                if key in self._early:  # done when another process announced it
                    del self._early[key]
                    continue
                self._recheck_user(change.row_id)
                if self.announce is not None:
                    self.announce(change.row_id, change.position)

    def revoke_early(self, user_id: str, position: int) -> None:
        """Another process read a revoking change at `position`: re-check the user's
        sessions now unless this guard has read it already (or acted on it)."""
        key = (user_id, position)
        if position <= self.position or key in self._early:
            return
        self._early[key] = None
        while len(self._early) > 1024:
            self._early.popitem(last=False)
        self._recheck_user(user_id)
