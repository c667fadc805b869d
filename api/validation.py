"""Request bodies: parsing (400 when not JSON) and checking (422 naming the bad field).

Each body is a table of `Field`s; the same table gives the JSON Schema that
/openapi.json publishes, so the document and the checks cannot drift apart. Bodies are
JSON objects; a field the table does not know is refused (a typo should not be silently
ignored), and so is a key given twice (400 malformed_json: which one would win is
the parser's whim). A body is JSON only when it says so: `Content-Type: application/json`
(415 unsupported_media_type otherwise; an empty body where none is required needs no
type). Strings never carry NUL (PostgreSQL text cannot hold it) nor a lone UTF-16
surrogate such as "\\ud800" (valid JSON, but no UTF-8 text can hold it): 422 invalid_body
naming the field.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from sinal.api.problems import Problem, invalid_body

MAX_BODY_BYTES = 1 << 20
MAX_JSON_DEPTH = 16
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str  # string | uuid | amount | integer | boolean | date | items | choices
    required: bool = False
    max_length: int = 0  # strings; array length for items/choices
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    description: str = ""

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any]
        if self.kind == "string":
            out = {"type": "string", "maxLength": self.max_length}
            if self.minimum:
                out["minLength"] = self.minimum
        elif self.kind == "uuid":
            out = {"type": "string", "format": "uuid"}
        elif self.kind == "amount":
            out = {"anyOf": [{"type": "number", "minimum": 0, "maximum": 999999999999.99},
                             {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,2})?$"}]}
        elif self.kind == "integer":
            out = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        elif self.kind == "boolean":
            out = {"type": "boolean"}
        elif self.kind == "date":
            out = {"type": "string", "format": "date"}
        elif self.kind == "items":
            out = {"type": "array", "maxItems": self.max_length,
                   "items": {"type": "object"}}
        elif self.kind == "choices":
            out = {"type": "string", "enum": list(self.choices)}
        elif self.kind == "choice_list":
            out = {"type": "array", "maxItems": self.max_length, "uniqueItems": True,
                   "items": {"type": "string", "enum": list(self.choices)}}
        else:  # pragma: no cover - a table error
            raise AssertionError(self.kind)
        if self.nullable:
            out = {"anyOf": [out, {"type": "null"}]}
        if self.description:
            out["description"] = self.description
        return out


def body_schema(fields: tuple[Field, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: f.schema() for f in fields},
    }
    required = [f.name for f in fields if f.required]
    if required:
        schema["required"] = required
    return schema


JSON_MEDIA_TYPES = ("application/json",)


def parse_json(data: bytes | str, *, optional: bool, content_type: str | None = "application/json"
               ) -> Any:
    """The body as JSON; an empty body is `{}` when the body is optional. A body that is
    there must say it is JSON (415 otherwise)."""
    if not data.strip():
        if optional:
            return {}
        raise Problem(400, "malformed_json", "the body must be a JSON object")
    if not is_json_type(content_type):
        shown = (content_type or "none")[:100]
        raise Problem(415, "unsupported_media_type",
                      f"send the body as Content-Type: application/json (got {shown})")
    try:
        return json.loads(data, parse_constant=_refuse_constant,
                          object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, "malformed_json", f"the body is not valid JSON: {exc}"[:300]) from exc


def is_json_type(content_type: str | None) -> bool:
    """`application/json`, with at most a UTF-8 charset (RFC 8259: JSON is UTF-8)."""
    if not content_type:
        return False
    media, *params = (part.strip().lower() for part in content_type.split(";"))
    if media not in JSON_MEDIA_TYPES:
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {clean_text(key)[:64]!r} appears twice")
        out[key] = value
    return out


def clean_text(text: str) -> str:
    """`text` with lone surrogates replaced, so that it can be sent back as UTF-8."""
    return text.encode("utf-8", "replace").decode("utf-8")


def text_fault(value: str) -> str | None:
    """Why a string cannot be stored as PostgreSQL text, or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain lone surrogates (\\ud800-\\udfff): not valid Unicode text"
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def validate(body: Any, fields: tuple[Field, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid_body("(body)", "must be a JSON object")
    known = {f.name for f in fields}
    unknown = sorted(k for k in body if k not in known)
    if unknown:
        raise invalid_body(clean_text(unknown[0][:64]),
                           "unknown field; fields: " + ", ".join(sorted(known)))
    out: dict[str, Any] = {}
    for spec in fields:
        if spec.name not in body or (body[spec.name] is None and not spec.required):
            if spec.required:
                raise invalid_body(spec.name, "is required")
            continue
        out[spec.name] = _check(spec, body[spec.name])
    return out


def _check(spec: Field, value: Any) -> Any:
    name = spec.name
    if spec.kind in ("string", "uuid", "date", "choices"):
        if not isinstance(value, str):
            raise invalid_body(name, "must be a string")
        fault = text_fault(value)
        if fault is not None:
            raise invalid_body(name, fault)
    if spec.kind == "string":
        assert isinstance(value, str)
        if len(value) > spec.max_length or len(value.strip()) < (spec.minimum or 0):
            raise invalid_body(name, f"must be {spec.minimum or 0}-{spec.max_length} characters")
        return value
    if spec.kind == "uuid":
        if not is_uuid(value):
            raise invalid_body(name, "must be a UUID")
        return value.lower()
    if spec.kind == "date":
        try:
            return date.fromisoformat(value)
        except ValueError:
            return _fail(name, "must be a date like 2024-01-31")
    if spec.kind == "choices":
        if value not in spec.choices:
            raise invalid_body(name, "must be one of " + ", ".join(spec.choices))
        return value
    if spec.kind == "boolean":
        if not isinstance(value, bool):
            raise invalid_body(name, "must be true or false")
        return value
    if spec.kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int) or not (
                (spec.minimum is None or value >= spec.minimum)
                and (spec.maximum is None or value <= spec.maximum)):
            raise invalid_body(name, f"must be an integer from {spec.minimum} to {spec.maximum}")
        return value
    if spec.kind == "amount":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise invalid_body(name, "must be a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid_body(name, "must be a finite number")
        if isinstance(value, str) and (len(value) > 32 or text_fault(value) is not None):
            raise invalid_body(name, "must be a number")
        return value  # range and precision: api.workflow (422 invalid_amount)
    if spec.kind == "items":
        if not isinstance(value, list) or len(value) > spec.max_length:
            raise invalid_body(name, f"must be an array of at most {spec.max_length} objects")
        for item in value:
            if not isinstance(item, dict):
                raise invalid_body(name, "items must be JSON objects")
            _check_clean(name, item, 1)
        return value
    if spec.kind == "choice_list":
        if not isinstance(value, list) or len(value) > spec.max_length:
            raise invalid_body(name, f"must be an array of at most {spec.max_length} strings")
        for item in value:
            if item not in spec.choices:
                raise invalid_body(name, "each must be one of " + ", ".join(spec.choices))
        if len(set(value)) != len(value):
            raise invalid_body(name, "must not repeat a value")
        return list(value)
    raise AssertionError(spec.kind)  # pragma: no cover


def _fail(name: str, expected: str) -> Any:
    raise invalid_body(name, expected)


def is_uuid(text: str) -> bool:
    """A UUID in its canonical 36-character form (what PostgreSQL prints)."""
    return _UUID.fullmatch(text) is not None


def _check_clean(name: str, value: Any, depth: int) -> None:
    """Free-form JSON stored as jsonb: no NUL in strings or keys, bounded depth."""
    if depth > MAX_JSON_DEPTH:
        raise invalid_body(name, f"nested deeper than {MAX_JSON_DEPTH}")
    if isinstance(value, str):
        fault = text_fault(value)
        if fault is not None:
            raise invalid_body(name, fault)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise invalid_body(name, "numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_clean(name, key, depth + 1)
            _check_clean(name, item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_clean(name, item, depth + 1)
