"""Checkers for the fields of wire messages.

A checker takes a decoded value (already known to be made only of None, bool, int,
float, str, list and str-keyed dict, within the frame limits: see ``codec``) and
returns the value the message class holds (lists become tuples), or raises
``FieldError``. bool is never accepted where an int is expected, nor int for bool.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from sinal.protocol.errors import ErrorCode

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_FILTER_VALUES",
    "MAX_REF_CHARS",
    "MAX_TOPIC_CHARS",
    "MAX_TOPICS_PER_MESSAGE",
    "Checker",
    "FieldError",
    "any_map",
    "boolean",
    "filters",
    "integer",
    "nullable",
    "number",
    "one_of",
    "ref",
    "row_id",
    "since",
    "string_map_of_offsets",
    "text",
    "topics",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_REF_CHARS = 64
MAX_TOPIC_CHARS = 128
MAX_TOPICS_PER_MESSAGE = 64
MAX_FILTER_VALUES = 256
MAX_FILTER_FIELDS = 32
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

Checker = Callable[[Any], Any]


class FieldError(Exception):
    """A field failed its check; the decoder turns it into a ``ProtocolError``."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INVALID_MESSAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def text(*, max_chars: int | None = None, allow_empty: bool = False) -> Checker:
    """A string, non-empty unless ``allow_empty``, at most ``max_chars`` characters."""

    def check(value: Any) -> str:
        if type(value) is not str:
            raise FieldError(f"must be a string, not {_type_name(value)}")
        if not value and not allow_empty:
            raise FieldError("must not be empty")
        if max_chars is not None and len(value) > max_chars:
            raise FieldError(f"must be at most {max_chars} characters")
        return value

    return check


def integer(*, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> Checker:
    """An int (not a bool) within [minimum, maximum]."""

    def check(value: Any) -> int:
        if type(value) is not int:
            raise FieldError(f"must be an integer, not {_type_name(value)}")
        if not minimum <= value <= maximum:
            raise FieldError(f"must be between {minimum} and {maximum}")
        return value

    return check


def number(*, minimum: float = 0) -> Checker:
    """An int (not a bool) in the 64-bit range or a finite float, at least ``minimum``."""

    def check(value: Any) -> int | float:
        kind = type(value)
        if kind is int:
            if not minimum <= value <= INT64_MAX:
                raise FieldError(f"must be between {minimum} and {INT64_MAX}")
            return int(value)
        if kind is float:
            if not math.isfinite(value) or value < minimum:
                raise FieldError(f"must be a finite number of at least {minimum}")
            return float(value)
        raise FieldError(f"must be a number, not {_type_name(value)}")

    return check


def boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise FieldError(f"must be true or false, not {_type_name(value)}")
    return bool(value)


def one_of(*choices: str) -> Checker:
    def check(value: Any) -> str:
        if type(value) is not str or value not in choices:
            raise FieldError(f"must be one of {', '.join(choices)}")
        return value

    return check


def nullable(inner: Checker) -> Checker:
    """``inner`` or null."""

    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


def ref(value: Any) -> str | int:
    """A client-chosen correlation value: a string of 1..64 characters or a 64-bit int."""
    kind = type(value)
    if kind is str:
        if not 1 <= len(value) <= MAX_REF_CHARS:
            raise FieldError(f"must be 1 to {MAX_REF_CHARS} characters")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise FieldError("must be valid Unicode") from None
        return str(value)
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise FieldError("must fit in 64 bits")
        return int(value)
    raise FieldError(f"must be a string or an integer, not {_type_name(value)}")


def row_id(value: Any) -> str | int:
    """A row's primary key: a non-empty string or an int."""
    kind = type(value)
    if kind is str and value:
        return str(value)
    if kind is int:
        return int(value)
    raise FieldError(f"must be a non-empty string or an integer, not {_type_name(value)}")


def any_map(value: Any) -> dict[str, Any]:
    """A map with string keys; values are any protocol value (checked by the codec)."""
    if type(value) is not dict:
        raise FieldError(f"must be a map, not {_type_name(value)}")
    return value


_topic = text(max_chars=MAX_TOPIC_CHARS)


def topics(*, allow_empty: bool = False) -> Checker:
    """A list of distinct topic names (1..64 of them unless ``allow_empty``)."""

    def check(value: Any) -> tuple[str, ...]:
        if type(value) is not list:
            raise FieldError(f"must be a list of topic names, not {_type_name(value)}")
        if not value and not allow_empty:
            raise FieldError("must name at least one topic")
        if len(value) > MAX_TOPICS_PER_MESSAGE:
            raise FieldError(f"must name at most {MAX_TOPICS_PER_MESSAGE} topics")
        for item in value:
            try:
                _topic(item)
            except FieldError as error:
                raise FieldError(f"topic names {error.message}") from None
        if len(set(value)) != len(value):
            raise FieldError("must not repeat a topic")
        return tuple(value)

    return check


def string_map_of_offsets(value: Any) -> dict[str, int]:
    """A map of topic name -> offset (int >= 0)."""
    if type(value) is not dict:
        raise FieldError(f"must be a map of topic to offset, not {_type_name(value)}")
    for key, offset in value.items():
        if not key or len(key) > MAX_TOPIC_CHARS:
            raise FieldError(f"keys must be topic names of 1 to {MAX_TOPIC_CHARS} characters")
        if type(offset) is not int or not 0 <= offset <= INT64_MAX:
            raise FieldError(f"offset of {key!r} must be an integer >= 0")
    return value


def since(value: Any) -> dict[str, int]:
    """``subscribe.since``: topic -> last offset the client has processed."""
    checked = string_map_of_offsets(value)
    if len(checked) > MAX_TOPICS_PER_MESSAGE:
        raise FieldError(f"must name at most {MAX_TOPICS_PER_MESSAGE} topics")
    return checked


def _filter_scalar(value: Any, column: str) -> Any:
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is int:
        return value
    if kind is float and math.isfinite(value):
        return value
    raise FieldError(
        f"filter on {column!r} must be a scalar or a list of scalars",
        ErrorCode.INVALID_FILTER,
    )


def filters(value: Any) -> dict[str, Any]:
    """``subscribe.filters``: column -> scalar (equality) or [scalars] (membership).

    Every problem here is ``invalid_filter``. Lists become tuples.
    """
    if type(value) is not dict:
        raise FieldError(
            f"filters must be a map of column to value, not {_type_name(value)}",
            ErrorCode.INVALID_FILTER,
        )
    if len(value) > MAX_FILTER_FIELDS:
        raise FieldError(
            f"filters may name at most {MAX_FILTER_FIELDS} columns", ErrorCode.INVALID_FILTER
        )
    checked: dict[str, Any] = {}
    for column, wanted in value.items():
        if not _COLUMN_NAME.fullmatch(column):
            raise FieldError(
                f"filter column {column[:70]!r} is not a column name", ErrorCode.INVALID_FILTER
            )
        if type(wanted) is list:
            if not 1 <= len(wanted) <= MAX_FILTER_VALUES:
                raise FieldError(
                    f"filter on {column!r} must list 1 to {MAX_FILTER_VALUES} values",
                    ErrorCode.INVALID_FILTER,
                )
            checked[column] = tuple(_filter_scalar(item, column) for item in wanted)
        else:
            checked[column] = _filter_scalar(wanted, column)
    return checked
