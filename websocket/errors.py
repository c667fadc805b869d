"""The handshake's two exceptions: a refusal to answer with an HTTP status, and a handshake
that did not complete."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["HandshakeError", "Refuse"]


class Refuse(Exception):
    """Raised by a subprotocol chooser or an ``admit`` hook to refuse the upgrade.

    The client gets an HTTP response with ``status`` (503 when the connection
    pool is full, 401/403 for a bad token, ...) and ``reason`` as a short body.
    """

    def __init__(
        self, status: int, reason: str = "", headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)


class HandshakeError(Exception):
    """The opening handshake did not complete; the stream has been closed.

    ``status`` is the HTTP status sent to the client, or ``None`` when nothing
    was sent (timeout, peer gone).
    """

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
