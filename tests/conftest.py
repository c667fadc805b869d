"""Test servers and per-test databases.

PostgreSQL: DATABASE_URL when given (its server; each test database is created beside it),
otherwise an embedded server started for the session. A template database with every
migration applied is made once; each test that asks for `db_url` gets a fresh copy and it
is dropped afterwards. Redis: REDIS_URL when given, otherwise a throw-away redis-server;
`redis_prefix` gives each test its own key space, deleted afterwards.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from sinal.node.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from sinal.node.migrate import apply_migrations


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a database on the server the tests use (for admin statements)."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="sinal-test-pg-"))
    os.chmod(folder, 0o755)
    server = EmbeddedPostgres(folder / "data", free_port())
    server.start()
    try:
        yield server.admin_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server_url: str) -> Iterator[str]:
    name = f"sinal_tpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        apply_migrations(with_database(pg_server_url, name))
        yield name
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_database(pg_server_url: str, template: str | None) -> str:
    name = f"sinal_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(pg_server_url: str, name: str) -> None:
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(pg_server_url: str, pg_template: str) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    name = make_database(pg_server_url, pg_template)
    try:
        yield with_database(pg_server_url, name)
    finally:
        drop_database(pg_server_url, name)


@pytest.fixture
def empty_db_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database with no migrations applied."""
    name = make_database(pg_server_url, None)
    try:
        yield with_database(pg_server_url, name)
    finally:
        drop_database(pg_server_url, name)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    server = EmbeddedRedis(free_port(), Path(tempfile.mkdtemp(prefix="sinal-test-redis-")))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    import redis

    prefix = f"sinal-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
