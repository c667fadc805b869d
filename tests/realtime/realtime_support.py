"""Helpers for end-to-end realtime tests: a node on loopback, a protocol client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from sinal.domain.tokens import mint_token
from sinal.node.config import Config, load_config
from sinal.protocol import (
    ClientMessage,
    Connect,
    DataUpdate,
    Encoding,
    Heartbeat,
    Notification,
    ServerMessage,
    Subscribe,
    decode_server,
    encode_client,
)

SECRET = "s" * 40


def node_config(db_url: str, **overrides: str) -> Config:
    env = {"DATABASE_URL": db_url, "HTTP_PORT": "0", "WEBSOCKET_PORT": "0",
           "JWT_SECRET": SECRET, "LOG_LEVEL": "warning", **overrides}
    return load_config(env, env_file=None)


def token_for(user: dict[str, Any], secret: str = SECRET, ttl: int = 3600) -> str:
    return mint_token(secret, user["id"], user["role"], ttl_seconds=ttl)


class Client:
    def __init__(self, ws: WebSocketConnection, encoding: Encoding) -> None:
        self.ws = ws
        self.encoding = encoding

    async def send(self, message: ClientMessage) -> None:
        data = encode_client(message, self.encoding)
        await self.ws.send_message(data if self.encoding.binary else data.decode())

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send_message(data)

    async def recv(self, timeout: float = 10) -> ServerMessage:
        with trio.fail_after(timeout):
            while True:
                message = decode_server(await self.ws.get_message(), self.encoding)
                if not isinstance(message, Heartbeat):
                    return message

    async def expect(self, kind: type, timeout: float = 10) -> Any:
        message = await self.recv(timeout)
        assert isinstance(message, kind), f"expected {kind.__name__}, got {message!r}"
        return message

    async def connect(self, token: str) -> Any:
        from sinal.protocol import Welcome

        await self.send(Connect(token=token))
        return await self.expect(Welcome)

    async def subscribe(self, *events: str, since: dict[str, int] | None = None,
                        filters: dict[str, Any] | None = None, ref: str = "s") -> Any:
        from sinal.protocol import Subscribed

        await self.send(Subscribe(events=tuple(events), filters=filters or {},
                                  since=since or {}, ref=ref))
        return await self.expect(Subscribed)

    async def updates(self, count: int, timeout: float = 20) -> list[DataUpdate]:
        out: list[DataUpdate] = []
        with trio.fail_after(timeout):
            while len(out) < count:
                message = await self.recv(timeout)
                if isinstance(message, Notification):
                    continue
                assert isinstance(message, DataUpdate), message
                out.append(message)
        return out


@asynccontextmanager
async def client(node: Any, encoding: Encoding = Encoding.MSGPACK,
                 path: str = "/ws") -> AsyncIterator[Client]:
    url = node.websocket_url.rsplit("/", 1)[0] + path
    async with open_websocket_url(url, subprotocols=[encoding.subprotocol],
                                  message_queue_size=100000) as ws:
        yield Client(ws, encoding)


def users_of(db_url: str) -> dict[str, dict[str, Any]]:
    from sinal.node.demo import seed_demo

    with psycopg.connect(db_url, autocommit=True) as conn:
        return seed_demo(conn)
