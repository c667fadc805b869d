"""Incremental decoding of a byte stream of client frames.

MessagePack frames are simply concatenated (each frame is one self-delimiting value);
JSON frames are separated by newlines (``\\n``; the encoder never emits a newline
inside a frame; blank lines are skipped). Feed any split of the stream: the messages
come out the same as from ``codec.decode`` on each frame.

Errors: ``feed`` raises ``StreamDecodeError`` (a ``ProtocolError``) at the first bad
frame; its ``decoded`` holds the messages decoded before it in that call. An error that
closes the connection (``ProtocolError.closes``: bad_frame, frame_too_large, too_deep)
also breaks the decoder: every later ``feed`` raises it again. After any other error
(invalid_message, unknown_event, invalid_filter) the stream is still in step: the bytes
after the bad frame are kept, and the next ``feed`` (``feed(b"")`` will do) goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import msgpack

from sinal.protocol.codec import (
    DEFAULT_LIMITS,
    Encoding,
    ProtocolLimits,
    checked_tree,
    msgpack_failure,
    parse_json_text,
    unpack_options,
)
from sinal.protocol.errors import ErrorCode, ProtocolError
from sinal.protocol.messages import CLIENT_MESSAGE_TYPES, ClientMessage, from_wire

__all__ = ["Decoder", "StreamDecodeError"]


class StreamDecodeError(ProtocolError):
    """A bad frame in a stream; ``decoded`` are the good messages before it."""

    decoded: list[ClientMessage]

    def __init__(self, error: ProtocolError, decoded: list[ClientMessage]) -> None:
        super().__init__(error.code, error.message, error.ref)
        self.decoded = decoded


class Decoder:
    """Bytes of client frames in, ``ClientMessage`` out (sans-IO)."""

    def __init__(
        self, encoding: Encoding = Encoding.MSGPACK, limits: ProtocolLimits = DEFAULT_LIMITS
    ) -> None:
        self._encoding = encoding
        self._limits = limits
        self._pending = bytearray()  # bytes not yet handed to the parser
        self._broken: ProtocolError | None = None
        self._unpacker = msgpack.Unpacker(
            max_buffer_size=limits.max_frame_bytes, **unpack_options(limits)
        )
        self._fed = 0  # bytes handed to the unpacker so far

    @property
    def encoding(self) -> Encoding:
        return self._encoding

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a whole frame (or wait after an error)."""
        if self._encoding is Encoding.MSGPACK:
            return len(self._pending) + self._fed - int(self._unpacker.tell())
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> list[ClientMessage]:
        """Take more bytes; return every message completed by them, in order."""
        if self._broken is not None:
            raise StreamDecodeError(self._broken, [])
        self._pending += data
        decoded: list[ClientMessage] = []
        try:
            for tree in self._frames():  # each parsed and checked (codec steps 1 and 2)
                decoded.append(cast(ClientMessage, from_wire(tree, CLIENT_MESSAGE_TYPES)))
        except ProtocolError as error:
            if error.closes:
                self._broken = error
                self._pending.clear()
            raise StreamDecodeError(error, decoded) from None
        return decoded

    def _frames(self) -> Iterator[Any]:
        if self._encoding is Encoding.MSGPACK:
            return self._msgpack_frames()
        return self._json_frames()

    def _msgpack_frames(self) -> Iterator[Any]:
        limit = self._limits.max_frame_bytes
        while True:
            while True:
                try:
                    tree = self._unpacker.unpack()
                except msgpack.OutOfData:
                    break
                except Exception as error:  # untrusted input
                    raise msgpack_failure(error) from None
                yield checked_tree(tree, self._limits, bounded=True)
            if not self._pending:
                return
            room = limit - (self._fed - self._unpacker.tell())
            if room <= 0:
                raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"a frame is above {limit} bytes")
            chunk = bytes(self._pending[:room])
            del self._pending[:room]
            self._unpacker.feed(chunk)
            self._fed += len(chunk)

    def _json_frames(self) -> Iterator[Any]:
        limit = self._limits.max_frame_bytes
        while True:
            end = self._pending.find(b"\n")
            if end < 0:
                if len(self._pending) > limit + 1:  # + 1: a "\r" may end the line
                    raise ProtocolError(
                        ErrorCode.FRAME_TOO_LARGE, f"a frame is above {limit} bytes"
                    )
                return
            line = bytes(self._pending[:end])
            del self._pending[: end + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line.strip():
                continue
            if len(line) > limit:
                raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"a frame is above {limit} bytes")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(ErrorCode.BAD_FRAME, "a frame is not valid UTF-8") from None
            yield parse_json_text(text, self._limits, line)
