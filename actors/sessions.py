"""SessionGuard actor: ends or narrows live sessions when what they were granted changes.

Every node reads every change of `users` from the change log (the listener sends this
actor each batch it reads). When a user is deactivated or deleted, or their role or
department changes, the guard tells each of that user's connections on this node to
re-check its principal (`Recheck`): a connection whose user is no longer active closes
with `auth_failed`; one whose rights changed ends its subscriptions with
`resync {reason: "permissions_changed"}` and answers later subscribes with the new
rights. Since every node runs a guard, a revocation reaches every node within its
listener's lag (milliseconds). Token expiry is the HeartbeatScheduler's job (one deadline
per connection, no task).
"""

from __future__ import annotations

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

    def __init__(self, hub: Hub, *, inbox_size: int = 64) -> None:
        super().__init__(GUARD_NAME, capacity=inbox_size, registry=hub.registry)
        self.hub = hub
        self.rechecks = 0

    async def handle(self, changes: list[Change]) -> None:
        for change in changes:
            if revokes(change):
                for conn in list(self.hub.connections_by_user.get(change.row_id, ())):
                    conn.recheck()
                    self.rechecks += 1
