"""Hostile input over real sockets: every bad frame gets its documented error frame and/or
close code (protocol/errors.py, docs/protocol.md sections 2, 3 and 9), and the node keeps
serving everyone else: an admin connected beforehand (the watcher) still receives a
data_update committed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import jwt
import msgpack
import psycopg
import pytest
import trio
import trio_websocket

from sinal.domain.tokens import mint_token
from sinal.node.wiring import Node
from sinal.protocol import (
    Connect,
    DataUpdate,
    Encoding,
    ErrorCode,
    Heartbeat,
    ProtocolError,
    Subscribe,
    Subscribed,
    Welcome,
    decode,
)
from tests.realtime.edge_support import (
    Closed,
    assert_refused,
    expect_error,
    insert_supplier,
    read_until_closed,
    wait_until,
    watching,
)
from tests.realtime.realtime_support import SECRET, client, token_for

MSGPACK, JSON = Encoding.MSGPACK, Encoding.JSON
T = TypeVar("T")
FRAME_LIMIT = 64 * 1024  # protocol limit on a client frame
TRANSPORT_LIMIT = 1 << 20  # ConnectionLimits.max_message_size


def packed(wire: dict[str, Any]) -> bytes:
    return msgpack.packb(wire)  # type: ignore[no-any-return]


def nested(levels: int) -> Any:
    """`levels` arrays inside each other (inside the frame's map: levels + 1 in all)."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


@dataclass(frozen=True)
class BadFrame:
    """A frame sent as the first message of a fresh connection, and what it must get."""

    frame: bytes | str
    code: ErrorCode
    ref: object = None
    encoding: Encoding = MSGPACK


rng = random.Random(4)
GARBAGE = b"\xc1" + rng.randbytes(200)  # 0xc1 is never valid MessagePack

BEFORE_CONNECT = {
    "random-binary": BadFrame(GARBAGE, ErrorCode.BAD_FRAME),
    "random-text-on-msgpack": BadFrame("".join(chr(rng.randrange(32, 0x2FF)) for _ in range(99)),
                                       ErrorCode.BAD_FRAME),
    "msgpack-as-text": BadFrame(packed({"event": "heartbeat", "timestamp": 1}).decode("latin-1"),
                                ErrorCode.BAD_FRAME),
    "random-text-on-json": BadFrame('}{"event":: nope', ErrorCode.BAD_FRAME, encoding=JSON),
    "random-binary-on-json": BadFrame(GARBAGE, ErrorCode.BAD_FRAME, encoding=JSON),
    "trailing-bytes": BadFrame(packed({"event": "connect", "token": "t"}) + b"\x00",
                               ErrorCode.BAD_FRAME),
    "repeated-key-json": BadFrame('{"event":"connect","token":"a","token":"b"}',
                                  ErrorCode.BAD_FRAME, encoding=JSON),
    "oversize-frame": BadFrame(packed({"event": "connect", "token": "x" * FRAME_LIMIT}),
                               ErrorCode.FRAME_TOO_LARGE),
    "oversize-json": BadFrame(json.dumps({"event": "connect", "token": "x" * FRAME_LIMIT}),
                              ErrorCode.FRAME_TOO_LARGE, encoding=JSON),
    "long-string": BadFrame(packed({"event": "connect", "token": "x" * (8 * 1024 + 1)}),
                            ErrorCode.FRAME_TOO_LARGE),
    "long-array": BadFrame(packed({"event": "subscribe", "events": ["t"] * 257}),
                           ErrorCode.FRAME_TOO_LARGE),
    "nine-levels": BadFrame(packed({"event": "connect", "token": nested(8), "ref": "d"}),
                            ErrorCode.TOO_DEEP, ref="d"),
    "eight-levels-is-not-too-deep": BadFrame(
        packed({"event": "connect", "token": nested(7), "ref": "d"}),
        ErrorCode.INVALID_MESSAGE, ref="d"),
    "very-deep-msgpack": BadFrame(b"\x91" * 60_000 + b"\xc0", ErrorCode.TOO_DEEP),
    "very-deep-json": BadFrame("[" * 30_000 + "]" * 30_000, ErrorCode.TOO_DEEP, encoding=JSON),
    "not-a-map": BadFrame(packed([1, 2, 3]), ErrorCode.INVALID_MESSAGE),  # type: ignore[arg-type]
    "no-event": BadFrame(packed({"token": "t", "ref": 5}), ErrorCode.INVALID_MESSAGE, ref=5),
    "wrong-type-token": BadFrame(packed({"event": "connect", "token": 123, "ref": "w"}),
                                 ErrorCode.INVALID_MESSAGE, ref="w"),
    "bool-is-not-int": BadFrame('{"event":"heartbeat","timestamp":true,"ref":"b"}',
                                ErrorCode.INVALID_MESSAGE, ref="b", encoding=JSON),
    "missing-token": BadFrame(packed({"event": "connect", "ref": "m"}),
                              ErrorCode.INVALID_MESSAGE, ref="m"),
    "extra-field": BadFrame(packed({"event": "connect", "token": "t", "admin": True, "ref": "x"}),
                            ErrorCode.INVALID_MESSAGE, ref="x"),
    "nan": BadFrame('{"event":"heartbeat","timestamp":NaN}', ErrorCode.INVALID_MESSAGE,
                    encoding=JSON),
    "unknown-event": BadFrame(packed({"event": "bogus", "ref": "u"}), ErrorCode.UNKNOWN_EVENT,
                              ref="u"),
    "server-event-from-client": BadFrame(packed({"event": "welcome", "ref": "u"}),
                                         ErrorCode.UNKNOWN_EVENT, ref="u"),
    "subscribe-before-connect": BadFrame(
        packed({"event": "subscribe", "events": ["supplier_changed"], "ref": "s"}),
        ErrorCode.NOT_AUTHENTICATED, ref="s"),
    "heartbeat-before-connect": BadFrame(packed({"event": "heartbeat", "timestamp": 1}),
                                         ErrorCode.NOT_AUTHENTICATED),
}


async def each_case(cases: dict[str, T], check: Callable[[T], Awaitable[None]]) -> None:
    """Run `check` on every case against the same node; report every failing case."""
    failures: list[str] = []
    for name, case in cases.items():
        try:
            await check(case)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


async def first_frame(node: Node, bad: BadFrame) -> Closed:
    async with client(node, bad.encoding) as c:
        await c.send_raw(bad.frame)
        return await read_until_closed(c)


async def test_bad_first_frame_closes_with_its_code(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    async with watching(node, users, db_url) as watcher:

        async def check(bad: BadFrame) -> None:
            closed = await first_frame(node, bad)
            assert_refused(closed, bad.code, bad.ref)
            assert closed.messages == closed.errors  # nothing else was sent (no welcome)
            await watcher.still_served()

        await each_case(BEFORE_CONNECT, check)
        await only_the_watcher_left(node)


async def only_the_watcher_left(node: Node) -> None:
    """Every refused connection gave its pool slot back (nothing leaks, nothing stuck)."""
    pool, hub = node.pool, node.hub
    assert pool is not None and hub is not None
    await wait_until(lambda: pool.live == 1)
    assert hub.active_connections == 1


async def test_random_frames_get_the_codec_verdict(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    """Seeded random bytes and text, each the first frame of a connection: the close code
    is the one the sans-IO codec gives for it, and the node is unharmed."""
    fuzz = random.Random(20240115)
    frames: list[tuple[Encoding, bytes | str]] = []
    for _ in range(12):
        frames.append((MSGPACK, fuzz.randbytes(fuzz.randrange(1, 300))))
        frames.append((JSON, "".join(chr(fuzz.randrange(1, 0x7F)) for _ in range(40))))
    frames.append((MSGPACK, bytes([0x81, 0xA5]) + b"event" + bytes(range(0x80, 0xA0))))
    async with watching(node, users, db_url) as watcher:
        for encoding, frame in frames:
            try:
                message = decode(frame, encoding)
            except ProtocolError as error:
                expected, ref = error.code, error.ref
            else:  # random input that happens to be a valid non-connect message
                expected, ref = ErrorCode.NOT_AUTHENTICATED, getattr(message, "ref", None)
            closed = await first_frame(node, BadFrame(frame, expected, ref, encoding))
            assert_refused(closed, expected, ref)
        await watcher.still_served()


async def test_message_above_the_transport_limit_closes_with_1009(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    async with watching(node, users, db_url) as watcher:
        async with client(node) as c:
            await c.connect(token_for(users["ana@sinal.dev"]))
            await c.send_raw(b"\x00" * (TRANSPORT_LIMIT + 1))
            closed = await read_until_closed(c)
        assert closed.code == 1009 and closed.errors == []
        await watcher.still_served()


# --- after connect: frame errors close, message errors stay open ------------------------

CLOSING_AFTER_CONNECT: dict[str, tuple[bytes | str, ErrorCode, object]] = {
    "random-binary": (GARBAGE, ErrorCode.BAD_FRAME, None),
    "text-on-msgpack": ("hello", ErrorCode.BAD_FRAME, None),
    "oversize-frame": (packed({"event": "heartbeat", "timestamp": 1, "ref": "x" * FRAME_LIMIT}),
                       ErrorCode.FRAME_TOO_LARGE, None),
    "too-deep": (packed({"event": "subscribe", "events": ["a"], "filters": {"f": nested(8)},
                         "ref": "deep"}), ErrorCode.TOO_DEEP, "deep"),
}


@pytest.mark.parametrize("case", list(CLOSING_AFTER_CONNECT), ids=list(CLOSING_AFTER_CONNECT))
async def test_frame_error_after_connect_closes(
        node: Node, users: dict[str, Any], db_url: str, case: str) -> None:
    frame, code, ref = CLOSING_AFTER_CONNECT[case]
    async with watching(node, users, db_url) as watcher:
        async with client(node) as c:
            await c.connect(token_for(users["fabio@sinal.dev"]))
            await c.subscribe("quotation_changed")
            await c.send_raw(frame)
            closed = await read_until_closed(c)
        assert_refused(closed, code, ref)
        await watcher.still_served()
        # the closed session let go of its subscriptions and its registration
        assert node.hub is not None
        quotations = node.hub.topics["quotation_changed"]
        await only_the_watcher_left(node)
        assert quotations.subscribers == 0
        assert users["fabio@sinal.dev"]["id"] not in node.hub.connections_by_user


STAYING_OPEN: dict[str, tuple[dict[str, Any], ErrorCode, object]] = {
    "wrong-type-events": ({"event": "subscribe", "events": "supplier_changed", "ref": "e"},
                          ErrorCode.INVALID_MESSAGE, "e"),
    "wrong-type-since": ({"event": "subscribe", "events": ["supplier_changed"],
                          "since": {"supplier_changed": "0"}, "ref": 7},
                         ErrorCode.INVALID_MESSAGE, 7),
    "since-not-in-events": ({"event": "subscribe", "events": ["supplier_changed"],
                             "since": {"quotation_changed": 0}, "ref": "s"},
                            ErrorCode.INVALID_MESSAGE, "s"),
    "missing-events": ({"event": "subscribe", "ref": "m"}, ErrorCode.INVALID_MESSAGE, "m"),
    "extra-field": ({"event": "heartbeat", "timestamp": 1, "extra": 1, "ref": "x"},
                    ErrorCode.INVALID_MESSAGE, "x"),
    "bad-ref": ({"event": "heartbeat", "timestamp": 1, "ref": ""}, ErrorCode.INVALID_MESSAGE,
                None),
    "unknown-event": ({"event": "publish", "ref": "u"}, ErrorCode.UNKNOWN_EVENT, "u"),
    "server-event": ({"event": "data_update", "ref": "u"}, ErrorCode.UNKNOWN_EVENT, "u"),
    "bad-filter": ({"event": "subscribe", "events": ["supplier_changed"],
                    "filters": {"name; drop": 1}, "ref": "f"}, ErrorCode.INVALID_FILTER, "f"),
}


@pytest.mark.parametrize("encoding", [MSGPACK, JSON], ids=["msgpack", "json"])
async def test_message_errors_after_connect_keep_the_session(
        node: Node, users: dict[str, Any], db_url: str, encoding: Encoding) -> None:
    admin = users["admin@sinal.dev"]
    async with watching(node, users, db_url) as watcher:
        async with client(node, encoding) as c:
            await c.connect(token_for(admin))
            await c.subscribe("supplier_changed")
            for case, (wire, code, ref) in STAYING_OPEN.items():
                data: bytes | str = (packed(wire) if encoding is MSGPACK
                                     else json.dumps(wire))
                await c.send_raw(data)
                error = await expect_error(c, code, ref)
                assert error.message, case
            # the session is intact: its subscription still delivers, a new one works
            await trio.to_thread.run_sync(insert_supplier, db_url, "after-errors")
            update = await c.expect(DataUpdate)
            assert update.data["name"] == "after-errors"
            subscribed = await c.subscribe("metrics", ref="ok")
            assert subscribed.ref == "ok"
        await watcher.still_served()


async def test_second_connect_is_refused_and_changes_nothing(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    admin, ana = users["admin@sinal.dev"], users["ana@sinal.dev"]
    async with watching(node, users, db_url) as watcher:
        async with client(node) as c:
            await c.send(Connect(token=token_for(admin), ref="c1"))
            await c.send(Connect(token=token_for(admin), ref="c2"))  # pipelined
            welcome = await c.expect(Welcome)
            assert welcome.ref == "c1"
            await expect_error(c, ErrorCode.ALREADY_AUTHENTICATED, "c2")
            await c.subscribe("supplier_changed")
            await c.send(Connect(token=token_for(ana), ref="again"))
            await expect_error(c, ErrorCode.ALREADY_AUTHENTICATED, "again")
            await c.send(Connect(token="forged", ref="junk"))  # not even checked
            await expect_error(c, ErrorCode.ALREADY_AUTHENTICATED, "junk")
            # still the admin's session: admin-only topic allowed, data still flows
            await c.send(Subscribe(events=("metrics",), ref="m"))
            subscribed = await c.expect(Subscribed)
            assert subscribed.ref == "m"
            await trio.to_thread.run_sync(insert_supplier, db_url, "still-admin")
            update = await c.expect(DataUpdate)
            assert update.data["name"] == "still-admin"
        assert node.hub is not None
        assert welcome.user_id == admin["id"]
        await watcher.still_served()


# --- authentication -------------------------------------------------------------------


def set_active(db_url: str, user_id: str, active: bool) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET is_active = %s WHERE id = %s", (active, user_id))


def unsigned_token(user: dict[str, Any]) -> str:
    return jwt.encode({"sub": user["id"], "role": "admin", "exp": 2**31}, key=None,
                      algorithm="none")


TokenMaker = Callable[[dict[str, Any]], str]

AUTH_CASES: dict[str, tuple[TokenMaker, bool, ErrorCode]] = {
    # name: (token for the user, send a userId of someone else?, expected error)
    "forged": (lambda u: token_for(u, secret="z" * 40), False, ErrorCode.AUTH_FAILED),
    "alg-none": (unsigned_token, False, ErrorCode.AUTH_FAILED),
    "garbage": (lambda u: "not.a.jwt", False, ErrorCode.AUTH_FAILED),
    "expired": (lambda u: token_for(u, ttl=-60), False, ErrorCode.TOKEN_EXPIRED),
    "unknown-user": (lambda u: mint_token(SECRET, str(uuid.uuid4()), "admin"), False,
                     ErrorCode.AUTH_FAILED),
    "subject-not-a-uuid": (lambda u: mint_token(SECRET, "root", "admin"), False,
                           ErrorCode.AUTH_FAILED),
    "user-id-mismatch": (token_for, True, ErrorCode.AUTH_FAILED),
    "oversized-token": (lambda u: token_for(u) + "x" * 5000, False, ErrorCode.AUTH_FAILED),
    "empty-token": (lambda u: "", False, ErrorCode.INVALID_MESSAGE),
}


async def refused_connect(node: Node, token: str, user_id: str | None, code: ErrorCode) -> None:
    async with client(node) as c:
        await c.send(Connect(token=token, user_id=user_id, ref="c1"))
        # frames pipelined behind a failed connect are ignored (if the close is not
        # already there)
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await c.send(Subscribe(events=("quotation_changed",), ref="behind"))
            await c.send(Heartbeat(timestamp=1))
        closed = await read_until_closed(c)
    error = assert_refused(closed, code, "c1")
    assert closed.messages == [error]


async def test_refused_token_closes_with_its_code(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    fabio, ana = users["fabio@sinal.dev"], users["ana@sinal.dev"]
    assert node.hub is not None
    hub = node.hub
    async with watching(node, users, db_url) as watcher:

        async def check(case: tuple[TokenMaker, bool, ErrorCode]) -> None:
            make_token, other_id, code = case
            await refused_connect(node, make_token(fabio), ana["id"] if other_id else None,
                                  code)
            assert fabio["id"] not in hub.connections_by_user
            await watcher.still_served()

        await each_case(AUTH_CASES, check)
        await only_the_watcher_left(node)


async def test_inactive_user_is_refused(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    bruno = users["bruno@sinal.dev"]
    async with watching(node, users, db_url) as watcher:
        async with client(node) as c:  # the same token works while bruno is active
            await c.connect(token_for(bruno))
        await trio.to_thread.run_sync(set_active, db_url, bruno["id"], False)
        await refused_connect(node, token_for(bruno), None, ErrorCode.AUTH_FAILED)
        await refused_connect(node, token_for(bruno), bruno["id"], ErrorCode.AUTH_FAILED)
        await watcher.still_served()


async def test_role_claim_of_the_token_grants_nothing(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    """The role comes from the users table, not from the token's claims."""
    ana = users["ana@sinal.dev"]
    async with watching(node, users, db_url) as watcher, client(node) as c:
        welcome = await c.connect(mint_token(SECRET, ana["id"], "admin"))
        assert welcome.role == "requester"
        await c.send(Subscribe(events=("metrics",), ref="m"))
        await expect_error(c, ErrorCode.FORBIDDEN, "m")
        await c.send(Subscribe(events=("quotation_changed",), ref="q"))
        await expect_error(c, ErrorCode.FORBIDDEN, "q")
        await watcher.still_served()


async def test_the_same_user_is_welcome_with_a_good_token(
        node: Node, users: dict[str, Any]) -> None:
    """The control case of the auth table: userId matching, fresh token, active user."""
    fabio = users["fabio@sinal.dev"]
    async with client(node) as c:
        await c.send(Connect(token=token_for(fabio), user_id=fabio["id"], ref="c1"))
        await c.send(Subscribe(events=("quotation_changed",), ref="behind"))  # pipelined
        welcome = await c.expect(Welcome)
        assert welcome.user_id == fabio["id"] and welcome.ref == "c1"
        subscribed = await c.expect(Subscribed)
        assert subscribed.ref == "behind"

