"""Route a change to the filters it can match, by the keys those filters pin.

A topic's subscriptions form one group per distinct `RowFilter` (domain/access.py). Most
filters pin a field to a few values: a user's notifications pin `user_id`, a requester's
purchase requests pin `requester_id` or `department_id`, an approver's pin `status`, an
approval stream pins `level`. Evaluating every group for every change would make the cost
of one change grow with the number of connected users, although it reaches a handful. The
`FilterIndex` keeps each filter under its keys, so a change is evaluated only against the
filters that hold one of the keys the change carries, plus the few filters that pin nothing
(an admin's, a buyer's): work per change is O(matching filters + 1).

KEYS. A key is (field, canonical value) (`canonical`, the form in which filters compare).
A filter's keys (`routing_keys`) are a *cover*: every row the filter matches holds at
least one of them. A filter is an AND over groups, a group an OR over clauses, a clause an
AND over fields; so any one group gives a cover, made of one pinned field per clause with
all its values. A clause without fields matches every row, and then that group gives no
cover; a filter none of whose groups gives one (`EVERYTHING` among them) is unkeyed and
evaluated for every change. Among the covers the most selective is kept: by the worst field
it uses (ids first, then `department_id`, then any other field), then by its size.

OLD ROW OR NEW ROW. A filter matches a change when it matches the row after the change or
the row before it (for an update, the new row with the changed fields' old values). So a
change is looked up under the keys of both rows; the index never skips a filter that
`RowFilter.matches` would accept, and every candidate is still evaluated in full. The
property test in tests/realtime/test_routing.py checks the index against evaluating every
filter, on random filters and changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sinal.domain.access import Clause, RowFilter, canonical
from sinal.domain.access import Key as ValueKey

Key = tuple[str, ValueKey]  # (field, canonical value)

# Fields whose values name one entity (a user, a request): the most selective keys.
_ID_FIELDS = frozenset({"id", "user_id", "requester_id", "approver_id", "buyer_id"})


def _rank(field: str) -> int:
    if field in _ID_FIELDS:
        return 0
    if field == "department_id":
        return 2
    return 1 if field.endswith("_id") else 3


def _pinned(clause: Clause) -> tuple[str, frozenset[ValueKey]] | None:
    """The clause's most selective field and its values (None: the clause has no field)."""
    best: tuple[str, frozenset[ValueKey]] | None = None
    for name, values in clause:
        if best is None or (_rank(name), len(values)) < (_rank(best[0]), len(best[1])):
            best = (name, values)
    return best


def routing_keys(row_filter: RowFilter) -> frozenset[Key] | None:
    """Keys of which every row `row_filter` matches holds one; None when there is no such
    set (the filter must be evaluated for every change)."""
    best: frozenset[Key] | None = None
    best_score: tuple[int, int] | None = None
    for group in row_filter.groups:
        keys: set[Key] = set()
        worst = 0
        for clause in group:
            pinned = _pinned(clause)
            if pinned is None:
                break  # a clause without fields: the group matches every row
            name, values = pinned
            worst = max(worst, _rank(name))
            keys.update((name, value) for value in values)
        else:
            score = (worst, len(keys))
            if best_score is None or score < best_score:
                best, best_score = frozenset(keys), score
    return best


class FilterIndex:
    """The distinct filters of one topic, kept under their routing keys.

    `add` and `remove` are called when a group appears or disappears; `matching` returns
    the filters a change matches, evaluating only the candidates. `evaluations` counts the
    filters evaluated (what fan-out costs per change, apart from the writes).
    """

    __slots__ = ("_by_field", "_keys", "_unkeyed", "evaluations")

    def __init__(self) -> None:
        self._by_field: dict[str, dict[ValueKey, dict[RowFilter, None]]] = {}
        self._keys: dict[RowFilter, frozenset[Key] | None] = {}
        self._unkeyed: dict[RowFilter, None] = {}  # insertion-ordered set
        self.evaluations = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, row_filter: object) -> bool:
        return row_filter in self._keys

    def __iter__(self) -> Iterator[RowFilter]:
        return iter(self._keys)

    @property
    def unkeyed(self) -> int:
        """Filters evaluated for every change."""
        return len(self._unkeyed)

    def add(self, row_filter: RowFilter) -> None:
        if row_filter in self._keys:
            return
        keys = routing_keys(row_filter)
        self._keys[row_filter] = keys
        if keys is None:
            self._unkeyed[row_filter] = None
            return
        for name, value in keys:
            self._by_field.setdefault(name, {}).setdefault(value, {})[row_filter] = None

    def remove(self, row_filter: RowFilter) -> None:
        if row_filter not in self._keys:
            return
        keys = self._keys.pop(row_filter)
        if keys is None:
            del self._unkeyed[row_filter]
            return
        for name, value in keys:
            by_value = self._by_field[name]
            holders = by_value[value]
            del holders[row_filter]
            if not holders:
                del by_value[value]
                if not by_value:
                    del self._by_field[name]

    def clear(self) -> None:
        self._by_field.clear()
        self._keys.clear()
        self._unkeyed.clear()

    def candidates(self, new_row: Mapping[str, Any] | None, old_row: Mapping[str, Any] | None,
                   op: str) -> list[RowFilter]:
        """Every filter that may match the change (a superset of those that do), once each."""
        found: dict[RowFilter, None] = dict(self._unkeyed)
        if not self._by_field:
            return list(found)
        if op == "update" and new_row is not None and old_row is not None:
            # the old row is the new one with the changed fields' old values
            for name, by_value in self._by_field.items():
                value = canonical(new_row.get(name))
                holders = by_value.get(value)
                if holders:
                    found.update(holders)
                if name in old_row:
                    before = canonical(old_row[name])
                    if before != value and (holders := by_value.get(before)):
                        found.update(holders)
            return list(found)
        for name, by_value in self._by_field.items():
            for row in (new_row, old_row):
                if row is not None and (holders := by_value.get(canonical(row.get(name)))):
                    found.update(holders)
        return list(found)

    def matching(self, new_row: Mapping[str, Any] | None, old_row: Mapping[str, Any] | None,
                 op: str) -> list[RowFilter]:
        """The filters the change matches (new row or old row), in no promised order."""
        out = []
        candidates = self.candidates(new_row, old_row, op)
        self.evaluations += len(candidates)
        for row_filter in candidates:
            if row_filter.matches(new_row, old_row, op):
                out.append(row_filter)
        return out
