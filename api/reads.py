"""REST reads: consistent snapshots with their offset, deltas from the change log, ETags.

FULL LIST. `sinal_sequence_changes()` runs in its own statement first (so the head covers
everything committed so far), then ONE `REPEATABLE READ, READ ONLY` transaction reads the
head position H and the page of rows. Every change at a position <= H committed before
the sequencer transaction that numbered it, and that transaction is visible to the
snapshot (it moved the head to H), so the rows reflect every change <= H. The snapshot
may also reflect a few changes committed after the sequencer call: they have no position
yet (and will get one above H), so `?since=H` delivers them again -- harmless, a delta
carries each row's full last state and `_operation`, and applying it twice gives the same
state. The same snapshot says whether it holds such a change of the topic (`Page.exact`
is then false): only an exact page reflects the log up to H and nothing else.

PAGES. Keyset pagination on `id` (rows in id order, `cursor` = the last id seen): a row
that exists from the first page to the last is returned exactly once, whatever concurrent
writers do; rows created, changed or deleted meanwhile are covered by the delta from the
FIRST page's offset, which the cursor carries so that every page reports it. Poll
`?since=<offset of the last page>` afterwards and nothing is missed. Each later page is
read like the first (sequencer, then one snapshot at its own head, `Page.snapshot`).

DELTA. `?since=P`: the sequencer first (so a caller reads its own writes), then in one
REPEATABLE READ transaction the head H, the retention floor, and the topic's changes in
(P, H] -- at most DELTA_MAX_CHANGES; when there are more, `hasMore` is true and `offset` is
the last position read. Changes fold per row, last state wins; a row appears
when any of its changes matched the caller's permission filter (new or old row, exactly
like a subscription): with its full last state when it still matches (`insert` when the
caller cannot have had it before, else `update`), or as `{id, _operation: "delete"}` when
it was deleted or left the caller's view.

ETAG. Compared from memory only (a 304 makes no query): the topic's version -- the
position of its last published change, or the floor of its replay ring when it has
published none -- the caller's permission scope, the projection, and for lists the page.
A fresh body's ETag names the version AS OF THE BODY's log position (the snapshot head,
or the delta's offset), learnt once the listener has published up to it
(api/freshness.py `version_as_of`): the same representation always carries the same ETag,
and a 304 says nothing was published since what the client holds. When that version
cannot be known (the listener is late, the topic already published a later change, or
the page is not exact), the answer has no ETag and is not cached. A delta's ETag does not
depend on `since`: a poller moves its `since` forward on every answer, and an ETag per
`since` would never match (seed 4.1 polls with `?etag=<last etag>&since=<last
timestamp>`). Equal ETags on two nodes mean the same version; different ones only cost a
refetch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from sinal.api.problems import Problem, bad_parameter
from sinal.api.resources import Resource
from sinal.api.validation import is_uuid
from sinal.domain.access import RowFilter, filter_sql
from sinal.domain.changes import Change, read_changes

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DELTA_MAX_CHANGES = 5000
MAX_OFFSET = 2**63 - 1


# --- parameters --------------------------------------------------------------------------

def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise bad_parameter("limit", f"an integer from 1 to {MAX_LIMIT}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class Since:
    """`?since=`: an offset (exact) or an ISO-8601 timestamp (best effort)."""

    offset: int | None = None
    timestamp: datetime | None = None

    def key(self) -> str:
        return str(self.offset) if self.offset is not None else f"t{self.timestamp}"


def parse_since(raw: str | None) -> Since | None:
    if raw is None:
        return None
    value = raw.strip()
    if value.isdigit() and len(value) <= 19:
        offset = int(value)
        if offset <= MAX_OFFSET:
            return Since(offset=offset)
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        stamp = None
    if stamp is None or stamp.tzinfo is None:
        raise bad_parameter("since", "an offset (integer >= 0) or an ISO-8601 timestamp "
                                     "with a UTC offset, like 2024-01-15T10:30:00Z")
    return Since(timestamp=stamp)


@dataclass(frozen=True, slots=True)
class Cursor:
    offset: int  # the first page's snapshot offset
    after: str  # the last id of the previous page


def encode_cursor(cursor: Cursor) -> str:
    raw = f"{cursor.offset}:{cursor.after}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def bad_cursor() -> Problem:
    return Problem(400, "invalid_cursor", "cursor: pass back the nextCursor of a previous page",
                   extra={"parameter": "cursor"})


def cursor_parts(raw: str, max_length: int) -> tuple[str, str]:
    """The two parts of a cursor (base64url of "<a>:<b>", padding left off), or the 400
    invalid_cursor problem for anything else."""
    if len(raw) > max_length:
        raise bad_cursor()
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise bad_cursor() from exc
    first, colon, second = text.partition(":")
    if not colon:
        raise bad_cursor()
    return first, second


def parse_cursor(raw: str | None) -> Cursor | None:
    if raw is None:
        return None
    offset_text, after = cursor_parts(raw, 200)
    try:
        offset = int(offset_text)
    except ValueError as exc:
        raise bad_cursor() from exc
    if not 0 <= offset <= MAX_OFFSET or not is_uuid(after):
        raise bad_cursor()
    return Cursor(offset, after)


# --- ETags ---------------------------------------------------------------------------------

def make_etag(*parts: object) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\x1f")
    return digest.hexdigest()


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match with the weak comparison of RFC 9110 (W/ is ignored), or `*`."""
    if not header:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag[:2] in ("W/", "w/"):
            tag = tag[2:]
        if tag.strip('"') == etag:
            return True
    return False


# --- snapshots -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict[str, Any]]
    offset: int  # to resume from: the first page's snapshot head
    next_cursor: Cursor | None
    timestamp: str
    snapshot: int  # the log head this page's rows reflect
    exact: bool  # they reflect no change of the topic without a position yet


def _begin_snapshot(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def _value(row: Any, key: str) -> Any:
    return row[key] if isinstance(row, dict) else row[0]


def read_page(conn: psycopg.Connection[Any], resource: Resource, row_filter: RowFilter,
              limit: int, cursor: Cursor | None) -> Page:
    """One page of the caller's rows, in id order, with the offset to resume from."""
    conn.execute("SELECT sinal_sequence_changes()")
    where, params = filter_sql(row_filter)
    query = sql.SQL(
        "SELECT to_jsonb(t) AS row FROM {table} AS t WHERE {where} {after} "
        "ORDER BY t.id LIMIT %s"
    ).format(table=sql.Identifier(resource.table), where=where,
             after=sql.SQL("AND t.id > %s::uuid") if cursor else sql.SQL(""))
    if cursor is not None:
        params.append(cursor.after)
    params.append(limit + 1)
    with conn.transaction():
        _begin_snapshot(conn)
        head = conn.execute(
            "SELECT position, to_jsonb(clock_timestamp()) #>> '{}' AS ts, EXISTS (SELECT 1 "
            "FROM change_log WHERE position IS NULL AND topic = %s) AS pending "
            "FROM change_log_head", (resource.topic,)
        ).fetchone()
        assert head is not None
        rows = [_value(r, "row") for r in conn.execute(query, params).fetchall()]
    snapshot = int(head["position"])
    offset = cursor.offset if cursor else snapshot
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = Cursor(offset, str(rows[-1]["id"]))
    return Page(rows, offset, next_cursor, str(head["ts"]), snapshot, not head["pending"])


# --- deltas --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeltaRead:
    changes: list[Change]
    offset: int  # the position this delta brings the caller to
    has_more: bool
    timestamp: str


def resync(reason: str, detail: str, offset: int) -> Problem:
    return Problem(410, "resync", detail, extra={"reason": reason, "offset": offset})


def read_delta(conn: psycopg.Connection[Any], resource: Resource, since: Since,
               max_changes: int | None = None) -> DeltaRead:
    max_changes = max_changes or DELTA_MAX_CHANGES
    conn.execute("SELECT sinal_sequence_changes()")
    with conn.transaction():
        _begin_snapshot(conn)
        row = conn.execute(
            "SELECT position, sinal_retained_since() AS floor, "
            "to_jsonb(clock_timestamp()) #>> '{}' AS ts FROM change_log_head"
        ).fetchone()
        assert row is not None
        head, floor, stamp = int(row["position"]), int(row["floor"]), str(row["ts"])
        if since.offset is not None:
            after = since.offset
        else:
            after = _offset_for_timestamp(conn, resource.topic, since, head, floor)
        if after > head:
            raise resync("offset_ahead", f"since={after} is ahead of the log (at {head}): "
                         "the database was restored or reset; refetch the list", head)
        if after < floor:
            raise resync("retention", f"changes after {after} are no longer kept (the log "
                         f"starts after {floor}); refetch the list", head)
        changes = read_changes(conn, after, max_changes + 1, [resource.topic])
    has_more = len(changes) > max_changes
    if has_more:
        changes = changes[:max_changes]
        return DeltaRead(changes, changes[-1].position, True, stamp)
    return DeltaRead(changes, head, False, stamp)


def _offset_for_timestamp(conn: psycopg.Connection[Any], topic: str, since: Since,
                          head: int, floor: int) -> int:
    """Best effort: the position just before the topic's first change made after the
    timestamp (changes are stamped when made, not when committed)."""
    row = conn.execute(
        "SELECT min(position) AS first, "
        "(SELECT min(changed_at) FROM change_log WHERE position = %s + 1) AS floor_at "
        "FROM change_log WHERE topic = %s AND position IS NOT NULL AND changed_at > %s",
        (floor, topic, since.timestamp),
    ).fetchone()
    assert row is not None
    if floor > 0 and (row["floor_at"] is None or row["floor_at"] > since.timestamp):
        # history before the timestamp is gone: we cannot tell what changed after it
        raise resync("retention", "changes at that time are no longer kept; refetch the list",
                     head)
    return head if row["first"] is None else int(row["first"]) - 1


@dataclass(slots=True)
class _Folded:
    first_op: str
    before_visible: bool
    seen: bool
    last: Change


def fold_changes(changes: list[Change], row_filter: RowFilter) -> list[dict[str, Any]]:
    """Per row, its last state with `_operation`, in the order of each row's last change."""
    rows: dict[str, _Folded] = {}
    for change in changes:
        folded = rows.pop(change.row_id, None)
        if folded is None:
            before: dict[str, Any] | None = None
            if change.op == "update" and change.new_row is not None:
                before = {**change.new_row, **(change.old_row or {})}
            elif change.op == "delete":
                before = change.old_row
            folded = _Folded(first_op=change.op, seen=False, last=change,
                             before_visible=before is not None
                             and row_filter.matches_row(before))
        folded.last = change
        folded.seen = folded.seen or row_filter.matches(change.new_row, change.old_row,
                                                       change.op)
        rows[change.row_id] = folded
    out: list[dict[str, Any]] = []
    for row_id, folded in rows.items():
        if not folded.seen:
            continue
        final = folded.last.new_row
        if final is not None and row_filter.matches_row(final):
            fresh = folded.first_op == "insert" or not folded.before_visible
            out.append({**final, "_operation": "insert" if fresh else "update"})
        else:
            out.append({"id": _row_id(folded.last, row_id), "_operation": "delete"})
    return out


def _row_id(change: Change, row_id: str) -> Any:
    row = change.old_row or change.new_row or {}
    return row.get("id", row_id)
