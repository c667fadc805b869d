"""The upgrade request parser (websocket/upgrade.py): what it accepts, what it refuses with
which status, the 101 it writes, and that no input makes it fail any other way."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage

from sinal.websocket import HandshakeError, accept_websocket
from sinal.websocket.errors import Refuse
from sinal.websocket.upgrade import accept_response, find_head_end, parse_upgrade

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455, section 1.3


def head(*lines: str, request_line: str = "GET /ws?token=a%20b HTTP/1.1") -> bytes:
    return ("\r\n".join([request_line, *lines]) + "\r\n\r\n").encode("latin-1")


GOOD = ("Host: example.com:3001", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13")


def test_a_good_request_and_its_101() -> None:
    parsed = parse_upgrade(head(*GOOD, "Sec-WebSocket-Protocol: sinal.json.v1, sinal.msgpack.v1",
                                "X-Note:  caf\xe9 \t"))
    assert parsed.target == "/ws?token=a%20b" and parsed.host == "example.com:3001"
    assert parsed.subprotocols == ("sinal.json.v1", "sinal.msgpack.v1")
    assert ("x-note", "caf\xe9") in parsed.headers  # obs-text kept, whitespace trimmed
    assert parsed.headers[0] == ("host", "example.com:3001")
    answer = accept_response(parsed.key, "sinal.msgpack.v1")
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer  # the RFC's
    assert b"Sec-WebSocket-Protocol: sinal.msgpack.v1\r\n" in answer
    assert answer.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Protocol" not in accept_response(parsed.key, None)


def test_what_is_tolerated() -> None:
    # token lists in any case, several Connection headers, empty lines before the request
    parsed = parse_upgrade(b"\r\n" + head(
        "host: x", "UPGRADE: WebSocket", "Connection: keep-alive", "connection: Upgrade",
        f"sec-websocket-key: {KEY}", "Sec-WebSocket-Version: 13", "Content-Length: 0",
        "Sec-WebSocket-Protocol: , a,,b", "Sec-WebSocket-Protocol: c"))
    assert parsed.subprotocols == ("a", "b", "c")


@pytest.mark.parametrize(("lines", "request_line", "status"), [
    (GOOD, "POST /ws HTTP/1.1", 405),
    (GOOD, "GET /ws HTTP/1.0", 400),
    (GOOD, "GET /ws HTTP/2", 400),
    (GOOD, "GET  /ws HTTP/1.1", 400),
    (GOOD, "GET /w s HTTP/1.1", 400),
    (GOOD, "G(T /ws HTTP/1.1", 400),
    (GOOD[1:], None, 400),  # no Host
    ((*GOOD, "Host: other"), None, 400),
    ((*GOOD, " folded"), None, 400),
    ((*GOOD, "Bad Name: x"), None, 400),
    ((*GOOD, "X-Null: a\x00b"), None, 400),
    ((*GOOD, "no colon here"), None, 400),
    ((*GOOD, "Transfer-Encoding: chunked"), None, 400),
    ((*GOOD, "Content-Length: 5"), None, 400),
    (tuple(g for g in GOOD if not g.startswith("Upgrade")), None, 400),
    (tuple(g if not g.startswith("Connection") else "Connection: keep-alive" for g in GOOD),
     None, 400),
    (tuple(g for g in GOOD if not g.startswith("Sec-WebSocket-Key")), None, 400),
    (tuple(g if "Key" not in g else "Sec-WebSocket-Key: c2hvcnQ=" for g in GOOD), None, 400),
    (tuple(g if "Key" not in g else "Sec-WebSocket-Key: not base64!!" for g in GOOD), None, 400),
    (tuple(g if "Version" not in g else "Sec-WebSocket-Version: 8" for g in GOOD), None, 426),
])
def test_what_is_refused_and_how(lines: tuple[str, ...], request_line: str | None,
                                 status: int) -> None:
    with pytest.raises(Refuse) as refused:
        parse_upgrade(head(*lines, request_line=request_line or "GET /ws HTTP/1.1"))
    assert refused.value.status == status
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in refused.value.headers


def test_the_end_of_the_head_is_found_across_reads() -> None:
    data = head(*GOOD) + b"\x81\x00"
    cut = data.index(b"\r\n\r\n") + 2  # the blank line split between two reads
    first = data[:cut]
    assert find_head_end(first, 0) == -1
    assert find_head_end(data, len(first)) == len(data) - 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.lists(st.sampled_from(
    [b"GET", b" ", b"/ws", b"HTTP/1.1", b"\r\n", b":", b"Host", b"Upgrade", b"websocket",
     b"Connection", b"Sec-WebSocket-Key", KEY.encode(), b"13", b"\t", b"\x00", b",", b"\xe9"]),
    max_size=60).map(b"".join))
def test_no_input_fails_other_than_with_a_refusal(data: bytes) -> None:
    try:
        parsed = parse_upgrade(data + b"\r\n\r\n")
    except Refuse as refusal:
        assert refusal.status in (400, 405, 426)
    else:
        assert parsed.key == KEY.encode()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_a_request_in_any_pieces_is_accepted_and_trailing_bytes_kept(sizes: list[int]) -> None:
    early = Connection(ConnectionType.CLIENT).send(BytesMessage(data=b"early"))
    data = head(*GOOD) + early  # a frame right behind the request

    async def main() -> None:
        server, client = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            async def feed() -> None:
                rest = data
                for size in sizes:
                    if not rest:
                        break
                    await client.send_all(rest[:size])
                    rest = rest[size:]
                    await trio.testing.wait_all_tasks_blocked()
                if rest:
                    await client.send_all(rest)

            nursery.start_soon(feed)
            ws = await accept_websocket(server, subprotocols=["x"])
            assert ws.request.host == "example.com:3001" and ws.request.path == "/ws"
            with trio.fail_after(5):
                assert await ws.receive() == b"early"

    trio.run(main)


async def test_a_head_past_the_limit_is_431_even_when_it_arrives_whole() -> None:
    server, client = trio.testing.memory_stream_pair()
    await client.send_all(head(*GOOD, "X-Big: " + "a" * 2000))
    with pytest.raises(HandshakeError) as failed:
        await accept_websocket(server, max_handshake_bytes=1024)
    assert failed.value.status == 431
