"""The change log: its rows as `Change`, and the reader rule in Python (see
sql/003_change_capture.sql for the proof).

`sequence_changes` numbers committed rows; `read_changes` returns sequenced rows after a
position, in position order. A reader that calls them in a loop with `after` = the last
position it processed sees every committed change exactly once, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

CHANGES_CHANNEL = "sinal_changes"  # NOTIFY from the capture trigger: payload = topic
POSITIONS_CHANNEL = "sinal_positions"  # NOTIFY from the sequencer: payload = new head

@dataclass(frozen=True, slots=True)
class Change:
    position: int
    topic: str
    table: str
    op: str  # insert | update | delete
    row_id: str
    new_row: dict[str, Any] | None
    old_row: dict[str, Any] | None
    changed: dict[str, Any] | None
    changed_at: datetime

    @property
    def row(self) -> dict[str, Any]:
        """The row as it is after the change (the old row for a delete)."""
        return self.new_row if self.new_row is not None else (self.old_row or {})


_COLUMNS = "position, topic, table_name, op, row_id, new_row, old_row, changed, changed_at"


def _to_change(row: Any) -> Change:
    if isinstance(row, dict):
        row = tuple(row[c.strip()] for c in _COLUMNS.split(","))
    return Change(
        position=row[0], topic=row[1], table=row[2], op=row[3], row_id=row[4],
        new_row=row[5], old_row=row[6], changed=row[7], changed_at=row[8],
    )


def sequence_changes(conn: psycopg.Connection[Any], max_rows: int = 10000) -> int:
    """Give committed, unnumbered changes their positions; return the head position."""
    row = conn.execute("SELECT sinal_sequence_changes(%s)", (max_rows,)).fetchone()
    assert row is not None
    value = row["sinal_sequence_changes"] if isinstance(row, dict) else row[0]
    return int(value)


def read_changes(
    conn: psycopg.Connection[Any], after: int, limit: int = 1000,
    topics: list[str] | None = None,
) -> list[Change]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM sinal_changes_after(%s, %s, %s)", (after, limit, topics)
    ).fetchall()
    return [_to_change(r) for r in rows]


def sequence_and_read(conn: psycopg.Connection[Any], after: int, limit: int = 1000,
                      max_rows: int = 10000) -> tuple[int, list[Change]]:
    """`sequence_changes` then `read_changes`, in one round trip: both statements go in one
    simple-protocol message (a client-side cursor), which PostgreSQL runs as one implicit
    transaction: the read sees the positions just given, and the call returns only once
    that transaction has committed. Returns (head, changes after `after`)."""
    with psycopg.ClientCursor(conn) as cursor:
        cursor.execute(f"SELECT sinal_sequence_changes(%s); "
                       f"SELECT {_COLUMNS} FROM sinal_changes_after(%s, %s, NULL)",
                       (max_rows, after, limit))
        row = cursor.fetchone()
        assert row is not None
        head = int(row["sinal_sequence_changes"] if isinstance(row, dict) else row[0])
        if not cursor.nextset():
            raise psycopg.InterfaceError("the change log read returned no result")
        return head, [_to_change(r) for r in cursor.fetchall()]


def sequence_and_read_sql(after: int, limit: int = 1000, max_rows: int = 10000) -> bytes:
    """The text of `sequence_and_read`'s two statements, for a caller that sends it itself
    (the listener, on its own connection, without a thread)."""
    return (f"SELECT sinal_sequence_changes({int(max_rows)}); SELECT {_COLUMNS} "
            f"FROM sinal_changes_after({int(after)}, {int(limit)}, NULL)").encode()


def changes_of(rows: list[tuple[Any, ...]]) -> list[Change]:
    """Rows of the change log's columns, in their order, as `Change`s."""
    return [_to_change(r) for r in rows]


def head_position(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT position FROM change_log_head").fetchone()
    assert row is not None
    return int(row["position"] if isinstance(row, dict) else row[0])


def retained_since(conn: psycopg.Connection[Any]) -> int:
    """Positions after this one are still in the table; a resume from before it must resync."""
    row = conn.execute("SELECT sinal_retained_since()").fetchone()
    assert row is not None
    return int(row["sinal_retained_since"] if isinstance(row, dict) else row[0])
