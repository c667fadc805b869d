"""The quick start on a machine with no services: embedded PostgreSQL and Redis, and a
`sinal serve` whose health endpoint answers. These always start their own servers,
whatever DATABASE_URL says, so CI exercises the no-services path too."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sinal.node.config import SETTINGS
from sinal.node.embedded import EmbeddedPostgres, EmbeddedRedis, free_port


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A folder the unprivileged PostgreSQL user can reach (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="sinal-embedded-"))
    os.chmod(folder, 0o755)
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


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


def test_serve_without_database_url_answers_health(world_dir: Path) -> None:
    http_port, ws_port, pg_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SETTINGS}}
    env.update(HTTP_PORT=str(http_port), WEBSOCKET_PORT=str(ws_port),
               SINAL_EMBEDDED_PG_PORT=str(pg_port), SINAL_DATA_DIR=str(world_dir / "data"))
    proc = subprocess.Popen([sys.executable, "-m", "sinal.node.cli", "serve"], env=env,
                            cwd=world_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0)
    try:
        # the node prints its banner once it is ready: wait for that line, at most 30 s
        assert proc.stdout is not None
        banner = ""
        deadline = time.monotonic() + 30
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while "is up" not in banner and time.monotonic() < deadline:
                if sel.select(timeout=deadline - time.monotonic()):
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    banner += chunk.decode()
        assert "is up" in banner, "the node did not come up within 30 s"
        with urllib.request.urlopen(
                f"http://127.0.0.1:{http_port}/health/realtime", timeout=5) as resp:
            health = json.load(resp)
        assert health["healthy"] is True and "websocketConnections" in health
        assert (world_dir / "data" / "postgres" / "pgdata" / "PG_VERSION").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    out = banner + out.decode()
    assert f"http://127.0.0.1:{http_port}" in out
    assert "token" in out and "eyJ" in out  # a development token is printed
    # the embedded server stopped with the node
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/sinal", connect_timeout=2)
