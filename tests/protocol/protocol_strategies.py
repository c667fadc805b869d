"""Hypothesis strategies for every protocol message (shared by tests/protocol)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from sinal.protocol import (
    BROADCAST_LEVELS,
    Broadcast,
    Connect,
    DashboardSnapshot,
    DashboardUpdate,
    DataUpdate,
    Error,
    Heartbeat,
    Metrics,
    Notification,
    Resync,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
OFFSETS = st.integers(min_value=0, max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def texts(min_size: int = 0, max_size: int = 24) -> st.SearchStrategy[str]:
    """Valid Unicode (no lone surrogates: they are refused on the wire)."""
    return st.text(st.characters(codec="utf-8"), min_size=min_size, max_size=max_size)


TOPICS = texts(1, 40)
REFS = st.one_of(st.none(), texts(1, 64), INT64)
SCALARS = st.one_of(st.none(), st.booleans(), INT64, FLOATS, texts())
COLUMNS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(texts(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
JSON_MAPS = st.dictionaries(texts(max_size=12), JSON_VALUES, max_size=6)
FILTER_VALUES = SCALARS | st.lists(SCALARS, min_size=1, max_size=5).map(tuple)
TIMESTAMPS = texts(1, 40)
ROW_IDS = texts(1, 36) | INT64
NAMES = texts(1, 40)


@st.composite
def subscribes(draw: st.DrawFn) -> Subscribe:
    events = draw(st.lists(TOPICS, min_size=1, max_size=8, unique=True))
    resumed = draw(st.lists(st.sampled_from(events), unique=True))
    return Subscribe(
        events=tuple(events),
        filters=draw(st.dictionaries(COLUMNS, FILTER_VALUES, max_size=5)),
        since={topic: draw(OFFSETS) for topic in resumed},
        ref=draw(REFS),
    )


TOPIC_LISTS = st.lists(TOPICS, min_size=1, max_size=8, unique=True).map(tuple)
HEARTBEATS = st.builds(Heartbeat, timestamp=OFFSETS | FLOATS.map(abs), ref=REFS)

CLIENT_MESSAGES: dict[type, st.SearchStrategy[Any]] = {
    Connect: st.builds(Connect, token=texts(1, 200), user_id=st.none() | NAMES, ref=REFS),
    Subscribe: subscribes(),
    Unsubscribe: st.builds(Unsubscribe, events=TOPIC_LISTS, ref=REFS),
    Heartbeat: HEARTBEATS,
}

SERVER_MESSAGES: dict[type, st.SearchStrategy[Any]] = {
    Welcome: st.builds(
        Welcome,
        session_id=NAMES,
        server_time=OFFSETS,
        heartbeat_interval=st.integers(1, 2**31),
        connection_timeout=st.integers(1, 2**31),
        user_id=NAMES,
        role=NAMES,
        protocol_version=st.integers(1, 9),
        ref=REFS,
    ),
    Subscribed: TOPIC_LISTS.flatmap(
        lambda events: st.builds(
            Subscribed,
            events=st.just(events),
            offsets=st.fixed_dictionaries({topic: OFFSETS for topic in events}),
            ref=REFS,
        )
    ),
    Unsubscribed: st.builds(Unsubscribed, events=TOPIC_LISTS, ref=REFS),
    DataUpdate: st.builds(
        DataUpdate,
        topic=TOPICS,
        op=st.sampled_from(["insert", "update", "delete"]),
        id=ROW_IDS,
        data=JSON_MAPS,
        delta=JSON_MAPS,
        offset=OFFSETS,
        timestamp=TIMESTAMPS,
    ),
    Notification: st.builds(
        Notification,
        id=ROW_IDS,
        message=texts(),
        kind=NAMES,
        action=st.none() | JSON_MAPS,
        timestamp=TIMESTAMPS,
        offset=st.none() | OFFSETS,
        sound=st.none() | st.booleans(),
    ),
    Metrics: st.builds(Metrics, performance=JSON_MAPS, status=JSON_MAPS),
    DashboardSnapshot: st.builds(DashboardSnapshot, offset=OFFSETS, today=texts(1, 10),
                                 window=texts(1, 16), aggregates=JSON_MAPS),
    DashboardUpdate: st.builds(DashboardUpdate, offset=OFFSETS, today=texts(1, 10),
                               aggregates=JSON_MAPS),
    Heartbeat: HEARTBEATS,
    Broadcast: st.builds(Broadcast, id=NAMES, message=texts(1, 60),
                         level=st.sampled_from(BROADCAST_LEVELS), timestamp=TIMESTAMPS),
    Error: st.builds(Error, code=NAMES, message=texts(), ref=REFS),
    Resync: st.builds(Resync, topic=TOPICS, offset=OFFSETS, reason=NAMES),
}

client_messages = st.one_of(*CLIENT_MESSAGES.values())
server_messages = st.one_of(*SERVER_MESSAGES.values())
