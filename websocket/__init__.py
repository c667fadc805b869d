"""A WebSocket server library on Trio streams, built for broadcast: frames are built once
and offered to many sockets without blocking. It knows nothing of Sinal's topics, users or
messages (docs/architecture.md, "The house")."""

from __future__ import annotations

from sinal.websocket.connection import ConnectionClosed, ConnectionLimits, WebSocketConnection
from sinal.websocket.handshake import (
    Admit,
    HandshakeError,
    Refuse,
    SubprotocolChooser,
    UpgradeRequest,
    accept_websocket,
    default_subprotocol_chooser,
)
from sinal.websocket.server import (
    ConnectionHandler,
    listener_port,
    run_websocket,
    serve_websockets,
)

__all__ = [
    "Admit",
    "ConnectionClosed",
    "ConnectionHandler",
    "ConnectionLimits",
    "HandshakeError",
    "Refuse",
    "SubprotocolChooser",
    "UpgradeRequest",
    "WebSocketConnection",
    "accept_websocket",
    "default_subprotocol_chooser",
    "listener_port",
    "run_websocket",
    "serve_websockets",
]
