"""Throw-away PostgreSQL and Redis servers for the tests, in folders of the system temp
folder that are removed, with everything in them, when the server stops: `make test`
leaves nothing behind (tests/test_embedded.py checks it)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sinal.node.embedded import EmbeddedPostgres, EmbeddedRedis, free_port


@contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A new folder that the unprivileged PostgreSQL user can reach (pytest's tmp_path is
    0700 and its parents are kept for three runs), removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@contextmanager
def throwaway_postgres(prefix: str = "sinal-test-pg-") -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL, started; stopped and its folder removed at the end."""
    with scratch_folder(prefix) as folder:
        server = EmbeddedPostgres(folder / "data", free_port())
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def throwaway_redis(prefix: str = "sinal-test-redis-") -> Iterator[EmbeddedRedis]:
    """A redis-server that keeps nothing on disk, started; stopped and its folder removed."""
    with scratch_folder(prefix) as folder:
        server = EmbeddedRedis(free_port(), folder)
        server.start()
        try:
            yield server
        finally:
            server.stop()
