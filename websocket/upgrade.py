"""The HTTP side of the opening handshake, sans-IO: one pass over the request head.

A WebSocket upgrade is the only request this port takes, so the head is parsed here
once, strictly, into what the handshake needs, instead of by a general HTTP parser and
then again by a WebSocket library's own (which cost about a third of a connect).
:func:`find_head_end` finds the end of the head as bytes arrive (linear: each byte is
looked at a bounded number of times); :func:`parse_upgrade` checks the head as RFC 9112
(request line, header fields) and RFC 6455 section 4.2.1 (the upgrade) say, raising
:class:`Refuse` with the status to answer; :func:`accept_response` is the ``101``.

What is refused, and how: a method other than GET 405; a version other than HTTP/1.1,
a malformed request line or header field (no colon, a space before the colon, a
character a field may not hold, a folded line), no Host or two, a body (Transfer-Encoding,
or a Content-Length other than 0), no ``Upgrade: websocket``, no ``Connection: upgrade``,
or a Sec-WebSocket-Key that is not 16 bytes in base64: 400; a Sec-WebSocket-Version other
than 13: 426 with ``Sec-WebSocket-Version: 13``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from sinal.websocket.errors import Refuse

__all__ = ["ParsedUpgrade", "accept_response", "find_head_end", "parse_upgrade"]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
# RFC 9110 token characters (a method, a header name)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# a request target: visible ASCII, no space (RFC 9112 3.2)
_TARGET = re.compile(rb"[\x21-\x7e]+")
# a field value may hold visible characters, spaces, tabs and obs-text, nothing else
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ParsedUpgrade:
    """A checked upgrade request: its target, its header fields (names lowercased,
    values latin-1 with surrounding whitespace removed, in order), the client's
    subprotocols in its order of preference, Host, and the key to answer."""

    target: str
    headers: tuple[tuple[str, str], ...]
    subprotocols: tuple[str, ...]
    host: str
    key: bytes


def find_head_end(buffer: bytes | bytearray, searched: int) -> int:
    """The index just past the head's blank line in `buffer`, or -1. `searched` is how
    much of `buffer` an earlier call looked at (the search starts 3 bytes before it)."""
    end = buffer.find(b"\r\n\r\n", max(0, searched - 3))
    return -1 if end < 0 else end + 4


def _tokens(value: str) -> set[str]:
    """The comma-separated tokens of a header value, lowercased."""
    return {item.strip().lower() for item in value.split(",")}


def parse_upgrade(head: bytes) -> ParsedUpgrade:
    """Check a request head (up to and including its blank line) as a WebSocket upgrade."""
    lines = head.split(b"\r\n")
    while lines and lines[0] == b"":  # RFC 9112 2.2: empty lines before the request line
        lines.pop(0)
    if not lines:
        raise Refuse(400, "bad request: no request line")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise Refuse(400, "bad request: malformed request line")
    method, target, version = parts
    if version[:5] != b"HTTP/" or not re.fullmatch(rb"HTTP/[0-9]\.[0-9]", version):
        raise Refuse(400, "bad request: malformed request line")
    if method != b"GET":
        raise Refuse(405, "a WebSocket upgrade must be a GET", [("Allow", "GET")])
    if version != b"HTTP/1.1":
        raise Refuse(400, "a WebSocket upgrade needs HTTP/1.1")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue  # the blank line that ends the head
        if line[0] in b" \t":
            raise Refuse(400, "bad request: a folded header line")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise Refuse(400, "bad request: malformed header field")
        if _BAD_VALUE.search(value):
            raise Refuse(400, "bad request: a header field holds a control character")
        headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
    return _check_upgrade(target.decode("ascii"), tuple(headers))


def _check_upgrade(target: str, headers: tuple[tuple[str, str], ...]) -> ParsedUpgrade:
    hosts: list[str] = []
    upgrade = connection = key = version = ""
    offered: list[str] = []
    for name, value in headers:
        if name == "host":
            hosts.append(value)
        elif name == "transfer-encoding" or (name == "content-length" and value != "0"):
            raise Refuse(400, "an upgrade request has no body")
        elif name == "upgrade":
            upgrade = value
        elif name == "connection":
            connection += "," + value
        elif name == "sec-websocket-key":
            key = value
        elif name == "sec-websocket-version":
            version = value
        elif name == "sec-websocket-protocol":
            offered.extend(item.strip() for item in value.split(","))
    if len(hosts) != 1:
        raise Refuse(400, "bad request: exactly one Host header is required")
    if "websocket" not in _tokens(upgrade):
        raise Refuse(400, "bad upgrade request: missing header, 'Upgrade: websocket'")
    if "upgrade" not in _tokens(connection):
        raise Refuse(400, "bad upgrade request: missing header, 'Connection: Upgrade'")
    if version != "13":
        raise Refuse(426, "bad upgrade request: unsupported Sec-WebSocket-Version",
                     [("Sec-WebSocket-Version", "13")])
    try:
        decoded = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        decoded = b""
    if len(decoded) != 16:
        raise Refuse(400, "bad upgrade request: Sec-WebSocket-Key must be 16 bytes in base64")
    return ParsedUpgrade(target=target, headers=headers,
                         subprotocols=tuple(name for name in offered if name),
                         host=hosts[0], key=key.encode("ascii"))


def accept_response(key: bytes, subprotocol: str | None) -> bytes:
    """The ``101 Switching Protocols`` answer to an upgrade with `key`."""
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    extra = b"" if subprotocol is None else (
        b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n")
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n" + extra
            + b"\r\n")
