"""The guides cite only what exists: every path and every code name that docs/actors.md,
docs/architecture.md and docs/operations.md put in backticks is checked against the
repository and the `sinal` package, and docs/architecture.md keeps the section titles
other files cite.

The rules, kept simple on purpose:

1. Fenced code blocks (```...```) are dropped; only inline spans `...` are read.
2. A span is a PATH when it is made only of letters, digits, `_`, `-`, `.` and `/`, does not
   start with `/` (that is a URL path such as /health/ready), and either contains a `/` or
   ends in a file extension of `PATH_EXTENSIONS` (`README.md`). It must exist under the
   repository root (`engine/actor.py`, `actors/`, `sql/003_change_capture.sql`).
3. Otherwise a span is a NAME to check when it is one of:
   - a call `name(...)`: `name` is checked, not the arguments (`ChildSpec.of(actor)`);
   - a subscript `Name[...]`: `Name` is checked (`Actor[RunNow]`);
   - a dotted name `a.b.c` (`Registry.lookup`, `engine.spec`, `trio.lowlevel.ParkingLot`);
   - a plain name that starts with a capital letter (`Topic`, `LOG_TOPICS`).
   Every other span is prose in code type and is not checked: lowercase plain names
   (`kind`, `data_update`, `change_log`), and anything with spaces, colons, `<...>` etc.
4. A NAME resolves when one of these holds:
   - `sinal.<a>` imports for a prefix `a` of the name, and the rest are attributes of it
     (`engine.supervisor`, `engine.actor.Actor`, `sinal.engine.status.render_status`);
   - its first part is an attribute of some module under `sinal` (all of them are
     imported with `pkgutil.walk_packages`) or a builtin (`ValueError`), and each further
     part is an attribute of the one before. A submodule counts as an attribute
     (`trio.testing`), and so does, on a class, a field it annotates or an attribute its
     source assigns as `self.<part> =` (`Topic.head`);
   - it is a setting name of `sinal.node.config.SETTINGS` (`JWT_SECRET`);
   - it is a plain call of a function created in sql/*.sql (`sinal_sequence_changes()`);
   - it is in `NOT_PYTHON`, the explicit list of the few spans that look like code and
     are not Python (SQL commands).
5. docs/architecture.md has a heading with each title of `DECISIONS` and `SECTIONS`, and
   every `docs/architecture.md, "<title>"` cited anywhere in the repository is a heading.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
import re
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import sinal
from sinal.node.config import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("docs/actors.md", "docs/architecture.md", "docs/operations.md")
# how many paths and names the extraction must find in each (fewer: it is broken); the
# operations guide names few things in backticks
AT_LEAST = {"docs/actors.md": (5, 20), "docs/architecture.md": (5, 20),
            "docs/operations.md": (1, 4)}
ARCHITECTURE = ROOT / "docs" / "architecture.md"

DECISIONS = (
    "Lossless change log and the sequencer",
    "One offset space",
    "Trio-native LISTEN",
    "Encode once, write many",
    "Bounded everything and slow consumers",
    "Authorise at subscribe time",
    "Two wire encodings",
    "Embedded default",
    "Actors and supervision",
)
SECTIONS = ("The house", "The path of one change", "One REST delta")

PATH_EXTENSIONS = (".py", ".md", ".sql", ".toml", ".yml", ".yaml", ".conf", ".txt", ".sh")
NOT_PYTHON = frozenset({"LISTEN", "NOTIFY"})

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"[\w.-]+(?:/[\w.-]*)*")
IDENT = r"[A-Za-z_]\w*"
DOTTED = re.compile(rf"{IDENT}(?:\.{IDENT})+")
CAPITALISED = re.compile(r"[A-Z]\w*")
CALL = re.compile(rf"(?P<name>{IDENT}(?:\.{IDENT})*)\(.*\)")
SUBSCRIPT = re.compile(rf"(?P<name>{IDENT}(?:\.{IDENT})*)\[.*\]")
SQL_FUNCTION = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(\w+)", re.IGNORECASE)
CITATION = re.compile(r'docs/architecture\.md`?,\s+"([^"]+)"')
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def spans(text: str) -> list[str]:
    """The inline code spans of a Markdown text, outside fenced blocks."""
    return [s.strip() for s in SPAN.findall(FENCE.sub("", text)) if s.strip()]


def classify(span: str) -> tuple[str, str] | None:
    """("path", span), ("name", the name to check), or None: not checked."""
    if PATH.fullmatch(span) and not span.startswith("/") and (
            "/" in span or span.endswith(PATH_EXTENSIONS)):
        return "path", span
    for pattern in (CALL, SUBSCRIPT):
        match = pattern.fullmatch(span)
        if match:
            return "name", match["name"]
    if DOTTED.fullmatch(span) or CAPITALISED.fullmatch(span):
        return "name", span
    return None


def cited(doc: str, kind: str) -> list[str]:
    found = [classify(s) for s in spans((ROOT / doc).read_text())]
    return sorted({value for entry in found if entry and entry[0] == kind
                   for value in [entry[1]]})


# --- resolving names -------------------------------------------------------------------------

@cache
def sinal_modules() -> tuple[ModuleType, ...]:
    """Every module of the `sinal` package, imported (and the builtins)."""
    modules = [builtins, sinal]
    for info in pkgutil.walk_packages(sinal.__path__, "sinal."):
        modules.append(importlib.import_module(info.name))
    return tuple(modules)


@cache
def sql_functions() -> frozenset[str]:
    return frozenset(name for path in (ROOT / "sql").glob("*.sql")
                     for name in SQL_FUNCTION.findall(path.read_text()))


_FIELD = object()  # found as a class's field or `self.` attribute: nothing further to follow


def _member(obj: Any, part: str) -> Any:
    """`obj.part` in the widest sense of rule 4; LookupError when there is no such thing."""
    if obj is not _FIELD:
        if hasattr(obj, part):
            return getattr(obj, part)
        if isinstance(obj, ModuleType):
            try:
                return importlib.import_module(f"{obj.__name__}.{part}")
            except ImportError:
                pass
        if isinstance(obj, type):
            assigned = re.compile(rf"\bself\.{part}\s*(?::[^=\n]+)?=[^=]")
            for klass in obj.__mro__:
                if part in vars(klass).get("__annotations__", {}):
                    return _FIELD
                try:
                    source = inspect.getsource(klass)
                except (OSError, TypeError):
                    continue
                if assigned.search(source):
                    return _FIELD
    raise LookupError(part)


def _follow(obj: Any, parts: list[str]) -> bool:
    try:
        for part in parts:
            obj = _member(obj, part)
    except LookupError:
        return False
    return True


def resolves(name: str) -> bool:
    if name in NOT_PYTHON or name in {s.name for s in SETTINGS} or name in sql_functions():
        return True
    parts = name.split(".")
    inside = parts[1:] if parts[0] == "sinal" else parts
    if not inside:
        return True
    for cut in range(len(inside), 0, -1):
        try:
            module = importlib.import_module("sinal." + ".".join(inside[:cut]))
        except ImportError:
            continue
        if _follow(module, inside[cut:]):
            return True
    return any(_follow(module, parts) for module in sinal_modules()
               if hasattr(module, parts[0]))


# --- the tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("doc", DOCS)
def test_cited_paths_exist(doc: str) -> None:
    paths = cited(doc, "path")
    assert len(paths) >= AT_LEAST[doc][0], f"{doc}: the extraction found almost no paths"
    assert [p for p in paths if not (ROOT / p).exists()] == []


@pytest.mark.parametrize("doc", DOCS)
def test_cited_names_resolve(doc: str) -> None:
    names = cited(doc, "name")
    assert len(names) >= AT_LEAST[doc][1], f"{doc}: the extraction found almost no names"
    assert [n for n in names if not resolves(n)] == []


def test_the_rules_catch_what_does_not_exist() -> None:
    """The checks can fail: a broken name, a broken path, and the spans left alone."""
    assert classify("engine/actor.py") == ("path", "engine/actor.py")
    assert classify("README.md") == ("path", "README.md")
    assert classify("Registry.lookup(name)") == ("name", "Registry.lookup")
    assert classify("Actor[RunNow]") == ("name", "Actor")
    assert classify("/health/ready") is None
    assert classify("data_update") is None
    assert classify("topic:<topic>") is None
    assert spans("a `Topic`\n```\n`NoSuchThing`\n```\nand `x`") == ["Topic", "x"]
    assert resolves("Registry.lookup") and resolves("engine.supervisor.Supervisor")
    assert resolves("Topic.head")  # assigned in __init__
    assert resolves("trio.testing.MockClock")  # a submodule, imported on demand
    assert resolves("JWT_SECRET") and resolves("sinal_sequence_changes")
    assert not resolves("Registry.no_such_method")
    assert not resolves("NoSuchActor")
    assert not resolves("engine.no_such_module")
    assert not (ROOT / "engine" / "no_such_file.py").exists()


def test_architecture_has_the_cited_sections() -> None:
    headings = set(HEADING.findall(ARCHITECTURE.read_text()))
    assert [t for t in (*SECTIONS, *DECISIONS) if t not in headings] == []
    citations: set[str] = set()
    files = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "sinal" / "__init__.py"]
    for folder in ("actors", "api", "client", "domain", "docs", "engine", "node", "protocol",
                   "sql", "websocket"):  # (sinal/ only links to these)
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".sql")]
    for path in files:
        citations.update(CITATION.findall(" ".join(path.read_text().split())))
    assert citations, "no file cites docs/architecture.md by section any more?"
    assert sorted(citations - headings) == []
