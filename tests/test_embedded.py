"""The quick start on a machine with no services: embedded PostgreSQL and Redis, and a
`sinal serve` whose health endpoint answers. These always start their own servers,
whatever DATABASE_URL says, so CI exercises the no-services path too."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sinal.node.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from tests.cli_support import clean_env, run_sinal, serving
from tests.servers import scratch_folder, throwaway_postgres, throwaway_redis


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A folder the unprivileged PostgreSQL user can reach (pytest's tmp_path is 0700)."""
    with scratch_folder("sinal-embedded-") as folder:
        yield folder


def test_embedded_postgres_keeps_its_data_across_restarts(world_dir: Path) -> None:
    server = EmbeddedPostgres(world_dir / "pg", free_port())
    url = server.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        server.restart()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == (42,)
    finally:
        server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)


def test_embedded_redis_answers_and_stops(world_dir: Path) -> None:
    import redis

    server = EmbeddedRedis(free_port(), world_dir / "redis")
    client = redis.Redis.from_url(server.start())
    try:
        client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        client.close()
        server.stop()


def test_throwaway_servers_of_the_tests_remove_their_folders() -> None:
    """What tests/conftest.py starts when no DATABASE_URL / REDIS_URL is given leaves
    nothing in the system temp folder once stopped (issue #10: 62 MB a run)."""
    with throwaway_postgres() as pg:
        pg_folder = pg.data_dir.parent
        assert (pg.data_dir / "pgdata" / "PG_VERSION").is_file()
        with psycopg.connect(pg.admin_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    with throwaway_redis() as redis_server:
        redis_folder = redis_server.workdir
        assert redis_folder.is_dir()
    assert not pg_folder.exists() and not redis_folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.admin_url, connect_timeout=2)


def test_serve_without_database_url_answers_health(world_dir: Path) -> None:
    http_port, ws_port, pg_port = free_port(), free_port(), free_port()
    env = clean_env(HTTP_PORT=str(http_port), WEBSOCKET_PORT=str(ws_port),
                    SINAL_EMBEDDED_PG_PORT=str(pg_port), SINAL_DATA_DIR=str(world_dir / "data"))
    with serving(env, world_dir) as node:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{http_port}/health/realtime", timeout=5) as resp:
            health = json.load(resp)
        assert health["healthy"] is True and "websocketConnections" in health
        assert (world_dir / "data" / "postgres" / "pgdata" / "PG_VERSION").is_file()
    assert node.proc.returncode == 0, node.stderr[-2000:]
    assert f"http://127.0.0.1:{http_port}" in node.stdout
    assert "token" in node.stdout and "eyJ" in node.stdout  # a development token is printed
    # the embedded server stopped with the node
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/sinal", connect_timeout=2)


def test_token_from_another_folder_uses_the_running_nodes_database(world_dir: Path) -> None:
    """Issue #10, 8: `sinal token` run elsewhere while a node runs made a second cluster in
    ./.sinal with a new secret. The data folder now resolves from the project (here: the
    folder of the .env), and the running cluster is shared, on the port it records, even
    though this .env names another port."""
    project, elsewhere = world_dir / "project", world_dir / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / ".env").write_text(
        f"SINAL_DATA_DIR=data\nSINAL_EMBEDDED_PG_PORT={free_port()}\nHTTP_PORT=0\n"
        "WEBSOCKET_PORT=0\nLOG_LEVEL=warning\n")
    node_pg_port = free_port()
    with serving(clean_env(SINAL_EMBEDDED_PG_PORT=str(node_pg_port)), project) as node:
        assert f"data in {project / 'data'}" in node.banner
        result = run_sinal("--env-file", str(project / ".env"), "token", "--user",
                           "ana@sinal.dev", env=clean_env(), cwd=elsewhere)
        assert result.returncode == 0, result.stderr
        token = result.stdout.strip()
        request = urllib.request.Request(
            node.line("http") + "/api/purchase-requests?limit=1",
            headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        # nothing was created where the command ran; the node's database is still up
        assert list(elsewhere.iterdir()) == []
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{node_pg_port}/sinal",
                             connect_timeout=5) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() != (0,)
    assert node.proc.returncode == 0, node.stderr[-2000:]
    assert sorted(p.name for p in (project / "data").iterdir()) == ["jwt_secret", "postgres"]
    with pytest.raises(psycopg.OperationalError):  # the last user stopped it
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{node_pg_port}/sinal",
                        connect_timeout=2)
