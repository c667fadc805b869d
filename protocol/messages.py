"""The messages of the Sinal WebSocket protocol and the one table of their wire tags.

Every message is a frozen slotted dataclass under ``Message``; ``ClientMessage`` and
``ServerMessage`` say which way it travels (``Heartbeat`` goes both ways). On the wire
a message is one map: ``"event"`` holds the tag from ``MESSAGE_TYPES`` and the fields
sit beside it under their camelCase names (``WIRE_FIELDS``). ``to_wire`` builds that
map without checking anything; ``from_wire`` checks a decoded map strictly and builds
the message or raises ``ProtocolError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from sinal.protocol import fields as f
from sinal.protocol.errors import ErrorCode, ProtocolError, Ref

__all__ = [
    "BROADCAST_LEVELS",
    "BROADCAST_MAX_CHARS",
    "CLIENT_MESSAGE_TYPES",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "SERVER_MESSAGE_TYPES",
    "TAGS",
    "WIRE_FIELDS",
    "Broadcast",
    "ClientMessage",
    "Connect",
    "DashboardSnapshot",
    "DashboardUpdate",
    "DataUpdate",
    "Error",
    "FilterValue",
    "Heartbeat",
    "JsonValue",
    "Message",
    "Metrics",
    "Notification",
    "Operation",
    "Resync",
    "Scalar",
    "ServerMessage",
    "Subscribe",
    "Subscribed",
    "Unsubscribe",
    "Unsubscribed",
    "WireField",
    "Welcome",
    "from_wire",
    "to_wire",
    "wire_ref",
]

PROTOCOL_VERSION = 1

JsonValue: TypeAlias = "None | bool | int | float | str | list[JsonValue] | dict[str, JsonValue]"
Scalar: TypeAlias = None | bool | int | float | str
FilterValue: TypeAlias = Scalar | tuple[Scalar, ...]
Operation: TypeAlias = Literal["insert", "update", "delete"]


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every protocol message."""


@dataclass(frozen=True, slots=True)
class ClientMessage(Message):
    """A message a client sends to the server."""


@dataclass(frozen=True, slots=True)
class ServerMessage(Message):
    """A message the server sends to a client."""


# --- client -> server ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect(ClientMessage):
    """First frame of every connection: authenticate with a JWT."""

    token: str
    user_id: str | None = None
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Subscribe(ClientMessage):
    """Subscribe to topics, optionally filtered and resumed after given offsets."""

    events: tuple[str, ...]
    filters: Mapping[str, FilterValue] = field(default_factory=dict)
    since: Mapping[str, int] = field(default_factory=dict)
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe(ClientMessage):
    events: tuple[str, ...]
    ref: Ref | None = None


# --- both ways ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heartbeat(ClientMessage, ServerMessage):
    """Sent by both sides every heartbeatInterval; ``timestamp`` is ms since the epoch."""

    timestamp: int | float
    ref: Ref | None = None


# --- server -> client ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome(ServerMessage):
    """The answer to a successful ``connect``."""

    session_id: str
    server_time: int
    heartbeat_interval: int
    connection_timeout: int
    user_id: str
    role: str
    protocol_version: int = PROTOCOL_VERSION
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Subscribed(ServerMessage):
    """The answer to ``subscribe``: every topic of it, with its current offset."""

    events: tuple[str, ...]
    offsets: Mapping[str, int]
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribed(ServerMessage):
    events: tuple[str, ...]
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class DataUpdate(ServerMessage):
    """A committed change of one row. ``topic`` is sent as ``type`` on the wire."""

    topic: str
    op: Operation
    id: str | int
    data: Mapping[str, JsonValue]
    delta: Mapping[str, JsonValue]
    offset: int
    timestamp: str


@dataclass(frozen=True, slots=True)
class Notification(ServerMessage):
    """A message for one user. ``kind`` is sent as ``type`` on the wire."""

    id: str | int
    message: str
    kind: str
    action: Mapping[str, JsonValue] | None
    timestamp: str
    offset: int | None = None
    sound: bool | None = None


@dataclass(frozen=True, slots=True)
class Metrics(ServerMessage):
    performance: Mapping[str, JsonValue]
    status: Mapping[str, JsonValue]


@dataclass(frozen=True, slots=True)
class DashboardSnapshot(ServerMessage):
    """Every figure of a ``dashboard`` subscription, exact at ``offset``: replaces the
    client's copy. ``today`` is the UTC date the time-dependent figures were taken for."""

    offset: int
    today: str
    window: str
    aggregates: Mapping[str, JsonValue]


@dataclass(frozen=True, slots=True)
class DashboardUpdate(ServerMessage):
    """The figures that changed, each whole, exact at ``offset``: replace those in the
    client's copy, keep the others."""

    offset: int
    today: str
    aggregates: Mapping[str, JsonValue]


@dataclass(frozen=True, slots=True)
class Broadcast(ServerMessage):
    """An administrator's message to every connected user (or to some roles), on every
    node of the cluster. ``level`` is info, warning or critical. Not kept: a user who is
    not connected when it is sent does not get it later."""

    id: str
    message: str
    level: str
    timestamp: str


@dataclass(frozen=True, slots=True)
class Error(ServerMessage):
    """An error report; ``code`` is one of ``protocol.errors.ErrorCode``."""

    code: str
    message: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Resync(ServerMessage):
    """The subscription to ``topic`` has ended: refetch via REST at ``offset``, resubscribe."""

    topic: str
    offset: int
    reason: str


# --- the one table of wire tags -------------------------------------------------------

MESSAGE_TYPES: Mapping[str, type[Message]] = MappingProxyType(
    {
        "connect": Connect,
        "subscribe": Subscribe,
        "unsubscribe": Unsubscribe,
        "heartbeat": Heartbeat,
        "welcome": Welcome,
        "subscribed": Subscribed,
        "unsubscribed": Unsubscribed,
        "data_update": DataUpdate,
        "notification": Notification,
        "metrics": Metrics,
        "dashboard_snapshot": DashboardSnapshot,
        "dashboard_update": DashboardUpdate,
        "broadcast": Broadcast,
        "error": Error,
        "resync": Resync,
    }
)
"""Wire tag (the ``event`` key) -> message class. The only place tags are defined."""

TAGS: Mapping[type[Message], str] = MappingProxyType(
    {cls: tag for tag, cls in MESSAGE_TYPES.items()}
)
CLIENT_MESSAGE_TYPES: Mapping[str, type[Message]] = MappingProxyType(
    {tag: cls for tag, cls in MESSAGE_TYPES.items() if issubclass(cls, ClientMessage)}
)
SERVER_MESSAGE_TYPES: Mapping[str, type[Message]] = MappingProxyType(
    {tag: cls for tag, cls in MESSAGE_TYPES.items() if issubclass(cls, ServerMessage)}
)


@dataclass(frozen=True, slots=True)
class WireField:
    """How one attribute travels: its wire key, its checker, whether it may be absent.

    An optional field is left out of the wire map when it is None or an empty map.
    """

    attr: str
    key: str
    check: f.Checker
    optional: bool = False


def _w(attr: str, key: str, check: f.Checker, optional: bool = False) -> WireField:
    return WireField(attr, key, check, optional)


BROADCAST_LEVELS = ("info", "warning", "critical")
BROADCAST_MAX_CHARS = 2000
_REF = _w("ref", "ref", f.ref, optional=True)
_NAME = f.text(max_chars=256)
_OFFSET = f.integer(minimum=0)
_EPOCH_MS = f.integer(minimum=0)
_TIMESTAMP_TEXT = f.text(max_chars=64)
_DATE_TEXT = f.text(max_chars=10)

WIRE_FIELDS: Mapping[type[Message], tuple[WireField, ...]] = MappingProxyType(
    {
        Connect: (
            _w("user_id", "userId", _NAME, optional=True),
            _w("token", "token", f.text()),
            _REF,
        ),
        Subscribe: (
            _w("events", "events", f.topics()),
            _w("filters", "filters", f.filters, optional=True),
            _w("since", "since", f.since, optional=True),
            _REF,
        ),
        Unsubscribe: (_w("events", "events", f.topics()), _REF),
        Heartbeat: (_w("timestamp", "timestamp", f.number(minimum=0)), _REF),
        Welcome: (
            _w("session_id", "sessionId", _NAME),
            _w("server_time", "serverTime", _EPOCH_MS),
            _w("heartbeat_interval", "heartbeatInterval", f.integer(minimum=1)),
            _w("connection_timeout", "connectionTimeout", f.integer(minimum=1)),
            _w("user_id", "userId", _NAME),
            _w("role", "role", _NAME),
            _w("protocol_version", "protocolVersion", f.integer(minimum=1)),
            _REF,
        ),
        Subscribed: (
            _w("events", "events", f.topics(allow_empty=True)),
            _w("offsets", "offsets", f.string_map_of_offsets),
            _REF,
        ),
        Unsubscribed: (_w("events", "events", f.topics(allow_empty=True)), _REF),
        DataUpdate: (
            _w("topic", "type", f.text(max_chars=f.MAX_TOPIC_CHARS)),
            _w("op", "op", f.one_of("insert", "update", "delete")),
            _w("id", "id", f.row_id),
            _w("data", "data", f.any_map),
            _w("delta", "delta", f.any_map),
            _w("offset", "offset", _OFFSET),
            _w("timestamp", "timestamp", _TIMESTAMP_TEXT),
        ),
        Notification: (
            _w("id", "id", f.row_id),
            _w("message", "message", f.text(allow_empty=True)),
            _w("kind", "type", _NAME),
            _w("action", "action", f.nullable(f.any_map)),
            _w("offset", "offset", _OFFSET, optional=True),
            _w("timestamp", "timestamp", _TIMESTAMP_TEXT),
            _w("sound", "sound", f.boolean, optional=True),
        ),
        Metrics: (
            _w("performance", "performance", f.any_map),
            _w("status", "status", f.any_map),
        ),
        DashboardSnapshot: (
            _w("offset", "offset", _OFFSET),
            _w("today", "today", _DATE_TEXT),
            _w("window", "window", f.text(max_chars=16)),
            _w("aggregates", "aggregates", f.any_map),
        ),
        DashboardUpdate: (
            _w("offset", "offset", _OFFSET),
            _w("today", "today", _DATE_TEXT),
            _w("aggregates", "aggregates", f.any_map),
        ),
        Broadcast: (
            _w("id", "id", _NAME),
            _w("message", "message", f.text(max_chars=BROADCAST_MAX_CHARS)),
            _w("level", "level", f.one_of(*BROADCAST_LEVELS)),
            _w("timestamp", "timestamp", _TIMESTAMP_TEXT),
        ),
        Error: (
            _w("code", "code", _NAME),
            _w("message", "message", f.text(allow_empty=True)),
            _REF,
        ),
        Resync: (
            _w("topic", "topic", f.text(max_chars=f.MAX_TOPIC_CHARS)),
            _w("offset", "offset", _OFFSET),
            _w("reason", "reason", _NAME),
        ),
    }
)
"""Message class -> its fields in wire order."""

_KEYS: Mapping[type[Message], frozenset[str]] = MappingProxyType(
    {cls: frozenset(w.key for w in specs) for cls, specs in WIRE_FIELDS.items()}
)
_ENCODE_PLAN: Mapping[type[Message], tuple[str, tuple[tuple[str, str, bool], ...]]] = (
    MappingProxyType(
        {
            cls: (TAGS[cls], tuple((w.attr, w.key, w.optional) for w in specs))
            for cls, specs in WIRE_FIELDS.items()
        }
    )
)


def to_wire(message: Message) -> dict[str, Any]:
    """The wire map of ``message`` (no checks: the server's hot path)."""
    tag, plan = _ENCODE_PLAN[type(message)]
    wire: dict[str, Any] = {"event": tag}
    for attr, key, optional in plan:
        value = getattr(message, attr)
        if optional and (value is None or (type(value) is dict and not value)):
            continue
        wire[key] = value
    return wire


def _check_subscribe(values: dict[str, Any]) -> None:
    unknown = [topic for topic in values.get("since", {}) if topic not in values["events"]]
    if unknown:
        names = ", ".join(repr(topic) for topic in unknown[:5])
        raise f.FieldError(f"since names topics that are not in events: {names}")


_CROSS_CHECKS: Mapping[type[Message], Callable[[dict[str, Any]], None]] = MappingProxyType(
    {Subscribe: _check_subscribe}
)


def wire_ref(wire: Any) -> Ref | None:
    """The map's ``ref`` if it is a valid one, else None (so errors can echo it)."""
    if type(wire) is not dict:
        return None
    value = wire.get("ref")
    if value is None:
        return None
    try:
        return f.ref(value)
    except f.FieldError:
        return None


def from_wire(wire: Any, types: Mapping[str, type[Message]] = CLIENT_MESSAGE_TYPES) -> Message:
    """Check a decoded wire map strictly against ``types`` and build its message.

    ``wire`` must already have passed the codec's tree check (only protocol values,
    string keys, within limits). Raises ``ProtocolError``.
    """
    if type(wire) is not dict:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a frame must hold a map")
    ref = wire_ref(wire)
    tag = wire.get("event")
    if tag is None:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "the map has no 'event' key", ref)
    if type(tag) is not str:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "'event' must be a string", ref)
    cls = types.get(tag)
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_EVENT, f"unknown event {tag[:64]!r}", ref)
    specs = WIRE_FIELDS[cls]
    extra = wire.keys() - _KEYS[cls] - {"event"}
    if extra:
        names = ", ".join(sorted(repr(key[:64]) for key in extra)[:5])
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"{tag}: unexpected field(s) {names}", ref)
    values: dict[str, Any] = {}
    for spec in specs:
        if spec.key not in wire:
            if spec.optional:
                continue
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"{tag}: missing {spec.key!r}", ref)
        raw = wire[spec.key]
        if raw is None and spec.optional:
            continue
        try:
            values[spec.attr] = spec.check(raw)
        except f.FieldError as error:
            raise ProtocolError(error.code, f"{tag}.{spec.key} {error.message}", ref) from None
    cross_check = _CROSS_CHECKS.get(cls)
    if cross_check is not None:
        try:
            cross_check(values)
        except f.FieldError as error:
            raise ProtocolError(error.code, f"{tag}: {error.message}", ref) from None
    return cls(**values)
