"""Error codes of the Sinal WebSocket protocol and the typed error that carries them.

Every error a peer can cause has a stable string code (sent in ``error`` frames and used
as the WebSocket close reason) and a WebSocket close code in the 4000-4999 range (used
when the server closes the connection because of it). The table below is the single
source of truth; ``docs/protocol.md`` repeats it for client authors.

========================  =====  ============  ==============================================
code                      close  after connect meaning
========================  =====  ============  ==============================================
bad_frame                 4000   closes        frame not decodable: not MessagePack/JSON,
                                               bad UTF-8, trailing bytes, duplicate keys,
                                               lone surrogates, text message on a
                                               MessagePack session, binary message on a
                                               JSON session
frame_too_large           4001   closes        frame above max_frame_bytes, or a string,
                                               array or map above its length limit
too_deep                  4002   closes        containers nested deeper than max_depth
unknown_event             4003   stays open    ``event`` names no client event
invalid_message           4004   stays open    not a map; missing, extra or wrong-typed
                                               field (bool is not int); bad ``ref``; NaN or
                                               infinite number; int out of 64-bit range;
                                               binary or extension value
not_authenticated         4100   closes        a frame other than ``connect`` first
already_authenticated     4101   stays open    a second ``connect``
auth_failed               4102   closes        bad or forged token, unknown or inactive user,
                                               userId not matching the token
token_expired             4103   closes        the token's ``exp`` has passed
forbidden                 4200   stays open    a topic this user may not subscribe to
unknown_topic             4201   stays open    a topic the server does not have
invalid_filter            4202   stays open    a filter that is not {column: scalar|[scalars]},
                                               or an unknown dashboard figure or window
rate_limited              4300   stays open*   too many frames; *closed when it persists
slow_consumer             4301   closes        the client does not read fast enough
heartbeat_timeout         4302   closes        nothing received for connectionTimeout ms
internal_error            4500   closes        a server bug; reconnect with backoff
server_shutdown           4501   closes        the node is stopping; reconnect elsewhere
pool_full                 4502   closes        MAX_CONCURRENT_CONNECTIONS reached
========================  =====  ============  ==============================================

Before the server has answered ``connect`` with ``welcome``, every error closes the
connection. Errors that "stay open" are answered with an ``error`` frame (echoing the
offending message's ``ref`` when it had a valid one) and the connection goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "CLOSE_CODES",
    "ERRORS",
    "ErrorCode",
    "ErrorSpec",
    "ProtocolError",
    "Ref",
]

Ref = str | int
"""A client-chosen correlation value: a string of at most 64 characters or a 64-bit int."""


class ErrorCode(StrEnum):
    """Stable string codes of protocol errors (the wire value is the enum value)."""

    BAD_FRAME = "bad_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    TOO_DEEP = "too_deep"
    UNKNOWN_EVENT = "unknown_event"
    INVALID_MESSAGE = "invalid_message"
    NOT_AUTHENTICATED = "not_authenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    AUTH_FAILED = "auth_failed"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    UNKNOWN_TOPIC = "unknown_topic"
    INVALID_FILTER = "invalid_filter"
    RATE_LIMITED = "rate_limited"
    SLOW_CONSUMER = "slow_consumer"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    INTERNAL_ERROR = "internal_error"
    SERVER_SHUTDOWN = "server_shutdown"
    POOL_FULL = "pool_full"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One row of the error table.

    ``closes``: once the session is open, does the server close the connection when it
    reports this error (True), or answer with an ``error`` frame and go on (False)?
    Before ``welcome`` every error closes.
    """

    code: ErrorCode
    close_code: int
    closes: bool
    description: str
    client_action: str


def _spec(
    code: ErrorCode, close_code: int, closes: bool, description: str, client_action: str
) -> tuple[ErrorCode, ErrorSpec]:
    return code, ErrorSpec(code, close_code, closes, description, client_action)


_FIX = "fix the client; do not resend the same frame"

ERRORS: Mapping[ErrorCode, ErrorSpec] = MappingProxyType(
    dict(
        [
            _spec(ErrorCode.BAD_FRAME, 4000, True, "the frame could not be decoded", _FIX),
            _spec(
                ErrorCode.FRAME_TOO_LARGE,
                4001,
                True,
                "the frame, or a string, array or map in it, is above its size limit",
                _FIX,
            ),
            _spec(ErrorCode.TOO_DEEP, 4002, True, "the frame is nested too deeply", _FIX),
            _spec(ErrorCode.UNKNOWN_EVENT, 4003, False, "the event is not a client event", _FIX),
            _spec(
                ErrorCode.INVALID_MESSAGE,
                4004,
                False,
                "a field is missing, unexpected or of the wrong type",
                _FIX,
            ),
            _spec(
                ErrorCode.NOT_AUTHENTICATED,
                4100,
                True,
                "the first frame must be connect",
                "reconnect and send connect first",
            ),
            _spec(
                ErrorCode.ALREADY_AUTHENTICATED,
                4101,
                False,
                "this connection has already sent connect",
                "ignore; the session is unchanged",
            ),
            _spec(
                ErrorCode.AUTH_FAILED,
                4102,
                True,
                "the token or the user was refused",
                "do not retry with the same token",
            ),
            _spec(
                ErrorCode.TOKEN_EXPIRED,
                4103,
                True,
                "the token has expired",
                "obtain a new token, then reconnect",
            ),
            _spec(
                ErrorCode.FORBIDDEN,
                4200,
                False,
                "this user may not subscribe to the topic",
                "do not subscribe to it",
            ),
            _spec(
                ErrorCode.UNKNOWN_TOPIC,
                4201,
                False,
                "the server has no such topic",
                "check the topic name",
            ),
            _spec(
                ErrorCode.INVALID_FILTER,
                4202,
                False,
                "the filters are not {column: scalar or [scalars]}, or name an unknown "
                "dashboard figure or window",
                _FIX,
            ),
            _spec(
                ErrorCode.RATE_LIMITED,
                4300,
                False,
                "too many frames; this one was dropped",
                "slow down; after a close wait a minute before reconnecting",
            ),
            _spec(
                ErrorCode.SLOW_CONSUMER,
                4301,
                True,
                "the client did not read its frames fast enough",
                "reconnect and resume with since",
            ),
            _spec(
                ErrorCode.HEARTBEAT_TIMEOUT,
                4302,
                True,
                "nothing was received within connectionTimeout",
                "reconnect and resume with since; send heartbeats",
            ),
            _spec(
                ErrorCode.INTERNAL_ERROR,
                4500,
                True,
                "the server failed",
                "reconnect with backoff and resume with since",
            ),
            _spec(
                ErrorCode.SERVER_SHUTDOWN,
                4501,
                True,
                "the server is shutting down",
                "reconnect with backoff and jitter and resume with since",
            ),
            _spec(
                ErrorCode.POOL_FULL,
                4502,
                True,
                "the server has reached its connection limit",
                "reconnect with backoff and jitter",
            ),
        ]
    )
)
"""The error table: code -> close code, whether it closes an open session, meaning."""

CLOSE_CODES: Mapping[int, ErrorCode] = MappingProxyType(
    {spec.close_code: code for code, spec in ERRORS.items()}
)
"""WebSocket close code -> error code (the reverse of ``ERRORS``)."""


class ProtocolError(Exception):
    """An error the remote peer caused, with its documented code.

    ``ref`` is the offending message's ``ref`` when it had a valid one, so that the
    ``error`` frame answering it can echo it.
    """

    code: ErrorCode
    message: str
    ref: Ref | None

    def __init__(self, code: ErrorCode | str, message: str, ref: Ref | None = None) -> None:
        self.code = ErrorCode(code)
        self.message = message
        self.ref = ref
        super().__init__(f"{self.code}: {message}")

    @property
    def spec(self) -> ErrorSpec:
        return ERRORS[self.code]

    @property
    def close_code(self) -> int:
        return ERRORS[self.code].close_code

    @property
    def closes(self) -> bool:
        """Does this error close an open session (see the table)?"""
        return ERRORS[self.code].closes

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.message!r}, ref={self.ref!r})"
