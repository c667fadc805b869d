"""The reader rule of sql/003 against 8 concurrent writers, and the naive reader it replaces.

Writers commit (and sometimes roll back) transactions of random length, holding them open
for random times with pg_sleep, so commits land out of identity order. Every change has a
unique token, so the test knows exactly which changes committed. A reader following the
rule must see each committed change once, in position order, with no aborted change; the
naive `id > last` reader, run against the same writers, must be caught missing some.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import pytest

from sinal.domain.changes import read_changes, sequence_changes

WRITERS = 8
TXNS_PER_WRITER = 120


@dataclass
class Truth:
    committed: list[tuple[str, str]] = field(default_factory=list)  # (op, token)
    aborted: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def writer(url: str, number: int, seed: int, truth: Truth) -> None:
    rnd = random.Random(seed)
    mine: list[tuple[str, str]] = []  # (supplier id, current name) of live rows
    with psycopg.connect(url) as conn:
        for t in range(TXNS_PER_WRITER):
            changes: list[tuple[str, str]] = []
            staged = list(mine)
            for s in range(rnd.randint(1, 6)):
                token = f"w{number}-t{t}-s{s}"
                roll = rnd.random()
                if roll < 0.5 or not staged:
                    row = conn.execute(
                        "INSERT INTO suppliers (name) VALUES (%s) RETURNING id", (token,)
                    ).fetchone()
                    assert row is not None
                    staged.append((str(row[0]), token))
                    changes.append(("insert", token))
                elif roll < 0.85:
                    i = rnd.randrange(len(staged))
                    conn.execute("UPDATE suppliers SET name = %s WHERE id = %s",
                                 (token, staged[i][0]))
                    staged[i] = (staged[i][0], token)
                    changes.append(("update", token))
                else:
                    sid, name = staged.pop(rnd.randrange(len(staged)))
                    conn.execute("DELETE FROM suppliers WHERE id = %s", (sid,))
                    changes.append(("delete", name))
                if rnd.random() < 0.3:
                    conn.execute("SELECT pg_sleep(%s)", (rnd.random() * 0.01,))
            if rnd.random() < 0.1:
                conn.rollback()
                with truth.lock:
                    truth.aborted.extend(changes)
            else:
                conn.commit()
                mine = staged
                with truth.lock:
                    truth.committed.extend(changes)


def key_of(op: str, new_row: dict | None, old_row: dict | None) -> tuple[str, str]:
    if op == "delete":
        assert old_row is not None
        return ("delete", old_row["name"])
    assert new_row is not None
    return (op, new_row["name"])


Reader = Callable[[psycopg.Connection, int], tuple[int, list[tuple[int, tuple[str, str]]]]]


Seen = list[tuple[int, tuple[str, str]]]


def rule_reader(conn: psycopg.Connection, last: int) -> tuple[int, Seen]:
    sequence_changes(conn)
    batch = read_changes(conn, after=last, limit=500)
    out = [(c.position, key_of(c.op, c.new_row, c.old_row)) for c in batch]
    return (batch[-1].position if batch else last), out


def naive_reader(conn: psycopg.Connection, last: int) -> tuple[int, Seen]:
    rows = conn.execute(
        "SELECT id, op, new_row, old_row FROM change_log WHERE id > %s ORDER BY id LIMIT 500",
        (last,),
    ).fetchall()
    out = [(r[0], key_of(r[1], r[2], r[3])) for r in rows]
    return (rows[-1][0] if rows else last), out


def follow(url: str, read: Reader, done: threading.Event, seen: list) -> None:
    last = 0
    with psycopg.connect(url, autocommit=True) as conn:
        idle_rounds_after_done = 0
        while idle_rounds_after_done < 2:
            finished = done.is_set()
            last, batch = read(conn, last)
            seen.extend(batch)
            if finished and not batch:
                idle_rounds_after_done += 1


def run_history(url: str, read: Reader, seed: int) -> tuple[Truth, list[list]]:
    truth = Truth()
    done = threading.Event()
    seen_by: list[list] = [[], []]  # two readers: two nodes following the same log
    readers = [threading.Thread(target=follow, args=(url, read, done, s)) for s in seen_by]
    writers = [threading.Thread(target=writer, args=(url, n, seed * 100 + n, truth))
               for n in range(WRITERS)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    done.set()
    for t in readers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in readers + writers), "a thread hung"
    return truth, seen_by


def check_reader(truth: Truth, seen: list[tuple[int, tuple[str, str]]]) -> None:
    positions = [p for p, _ in seen]
    keys = [k for _, k in seen]
    assert positions == sorted(positions), "changes came out of position order"
    assert len(set(keys)) == len(keys), "a change was delivered twice"
    # a delete is keyed by the row's name: an aborted delete of a row deleted later for
    # real shares its key, so only keys that never committed count as aborted
    aborted = set(keys) & (set(truth.aborted) - set(truth.committed))
    assert not aborted, f"reader saw {len(aborted)} changes of rolled-back transactions"
    missed = set(truth.committed) - set(keys)
    assert not missed, f"reader missed {len(missed)} committed changes, e.g. {sorted(missed)[:3]}"
    assert len(keys) == len(truth.committed)


@pytest.mark.slow
def test_rule_reader_sees_every_committed_change_once_in_order(db_url: str) -> None:
    truth, seen_by = run_history(db_url, rule_reader, seed=1)
    assert len(truth.committed) > 1500, "the history should hold thousands of changes"
    assert truth.aborted, "some transactions should roll back"
    for seen in seen_by:
        check_reader(truth, seen)
        # positions are contiguous from 1: offsets a client can trust
        assert [p for p, _ in seen] == list(range(1, len(seen) + 1))
    # both nodes saw the same sequence
    assert seen_by[0] == seen_by[1]
    # and a change's position order keeps each transaction's own statement order
    order = {k: i for i, (_, k) in enumerate(seen_by[0])}
    pairs = zip(truth.committed, truth.committed[1:], strict=False)
    assert all(order[a] < order[b] for a, b in pairs
               if a[1].rsplit("-s", 1)[0] == b[1].rsplit("-s", 1)[0]
               and a[0] != "delete" and b[0] != "delete")


@pytest.mark.slow
def test_naive_reader_is_caught_skipping_changes(db_url: str) -> None:
    truth, seen_by = run_history(db_url, naive_reader, seed=2)
    with pytest.raises(AssertionError, match="missed"):
        for seen in seen_by:
            check_reader(truth, seen)


def test_naive_reader_skips_a_late_commit_and_the_rule_does_not(db_url: str) -> None:
    """The smallest history that breaks `id > last`: an earlier id commits later."""
    with psycopg.connect(db_url) as slow, psycopg.connect(db_url) as fast, \
            psycopg.connect(db_url, autocommit=True) as reader:
        slow.execute("INSERT INTO suppliers (name) VALUES ('slow')")  # takes the smaller id
        fast.execute("INSERT INTO suppliers (name) VALUES ('fast')")
        fast.commit()
        naive_last, naive_seen = naive_reader(reader, 0)
        rule_last, rule_seen = rule_reader(reader, 0)
        slow.commit()
        _, naive_more = naive_reader(reader, naive_last)
        _, rule_more = rule_reader(reader, rule_last)
    naive_names = [k[1] for _, k in naive_seen + naive_more]
    rule_names = [k[1] for _, k in rule_seen + rule_more]
    assert naive_names == ["fast"]  # 'slow' is lost for good
    assert rule_names == ["fast", "slow"]


def test_sequence_and_read_is_the_reader_rule_in_one_round_trip(db_url: str) -> None:
    """Both statements in one message: the read sees the positions just given."""
    from psycopg.rows import dict_row

    from sinal.domain.changes import sequence_and_read

    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        start = sequence_changes(conn)
        for name in ("a", "b", "c"):
            conn.execute("INSERT INTO suppliers (name, email) VALUES (%s, 'x@y')", (name,))
        head, changes = sequence_and_read(conn, start, limit=2)
        assert head == start + 3
        assert [c.position for c in changes] == [start + 1, start + 2]
        assert [c.row["name"] for c in changes] == ["a", "b"]
        head, rest = sequence_and_read(conn, start + 2)
        assert head == start + 3 and [c.row["name"] for c in rest] == ["c"]
