"""The bounds of one WebSocket connection, and the error that says it is closed."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectionClosed", "ConnectionLimits"]


class ConnectionClosed(Exception):
    """The WebSocket is closed (or closing); ``code`` and ``reason`` say why.

    ``code`` is the close code of whichever side closed first; 1006 means the
    TCP connection was lost without a close frame.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        suffix = f": {self.reason}" if self.reason else ""
        return f"WebSocket closed with code {self.code}{suffix}"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection bounds.

    ``max_message_size``: largest inbound message, in bytes (text: in code
    points); larger closes with 1009. It is also what a slow-loris peer can
    make us hold, plus one ``receive_chunk``.
    ``outbox_limit``: bytes queued for the writer before ``offer`` refuses and
    the connection turns slow. The outbox never holds more than this plus one
    frame. ``close_timeout``: how long closing waits for the outbox to flush
    and for the peer's close frame before dropping the TCP connection.
    """

    max_message_size: int = 1 << 20
    outbox_limit: int = 1 << 20
    receive_chunk: int = 64 * 1024
    close_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_message_size", "outbox_limit", "receive_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"ConnectionLimits.{name} must be positive")
        if self.close_timeout < 0:
            raise ValueError("ConnectionLimits.close_timeout must not be negative")
