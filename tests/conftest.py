"""Test servers and per-test databases.

PostgreSQL: DATABASE_URL when given (its server; each test database is created beside it),
otherwise an embedded server started for the session. A template database with every
migration applied is made once; each test that asks for `db_url` gets a fresh copy and it
is dropped afterwards. Redis: REDIS_URL when given, otherwise a throw-away redis-server;
`redis_prefix` gives each test its own key space, deleted afterwards. The servers this
file starts remove their folders when they stop (tests/servers.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from sinal.node.migrate import apply_migrations
from tests.servers import throwaway_postgres, throwaway_redis


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
    with throwaway_postgres() as server:
        yield server.admin_url


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
    with throwaway_redis() as server:
        yield server.url


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
