"""What every bench part shares: a throw-away database, a Sinal node in a subprocess,
process measurements, ports, CPU pinning, tokens.

Everything talks to 127.0.0.1 only, and everything started here is stopped by the code
that started it (context managers), by pid, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_TOPIC = "supplier_changed"
JWT_SECRET = "bench-" + secrets.token_hex(24)  # one per bench run, never written to disk


# --------------------------------------------------------------------------- machine


def raise_fd_limit(want: int = 65536) -> int:
    """Raise this process's open-files limit (children inherit it); return the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, want), hard) if hard != resource.RLIM_INFINITY else max(soft, want)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """Which CPUs the server and the load (clients, writer) run on. Empty: anywhere."""

    server: frozenset[int]
    load: frozenset[int]

    @staticmethod
    def for_machine(pin: bool) -> CpuPlan:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if not pin or len(cpus) < 2:
            return CpuPlan(frozenset(), frozenset())
        return CpuPlan(frozenset(cpus[:1]), frozenset(cpus[1:]))

    def describe(self) -> str:
        if not self.server:
            return "not pinned"
        return f"server on CPU {sorted(self.server)}, load on CPU {sorted(self.load)}"


def pin_self(cpus: frozenset[int]) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def pin_process(pid: int, cpus: frozenset[int]) -> None:
    """Pin a process and all its threads (Node's libuv pool, Sinal's worker threads)."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), cpus)


def machine_info() -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "cpuModel": _cpu_model(),
        "memoryMb": round(psutil.virtual_memory().total / 2**20),
        "loadAverage": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "python": sys.version.split()[0],
        "node": _version(["node", "--version"]),
        "postgres": _version(["psql", "--version"]),
        "wrk": _version(["wrk", "--version"]),
        "kernel": os.uname().release,
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


class OthersMeter:
    """CPU used over a window by the processes that are not this bench's: every process
    but this one and its descendants (servers and their workers, nginx, wrk, load clients,
    the writer), PostgreSQL's processes excluded (they serve the bench). Another user's
    load on a shared machine shows here. A process that starts and ends inside the
    window is missed; one that starts inside it counts from its start. (The machine-wide
    busy time of /proc/stat is not used: it is sampled at timer ticks and misses much
    of a paced load such as the writer's.)"""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.cpu0: dict[tuple[int, float], float] = {}

    @staticmethod
    def _sample() -> dict[tuple[int, float], float]:
        me = psutil.Process()
        mine = {me.pid, *(c.pid for c in me.children(recursive=True))}
        out: dict[tuple[int, float], float] = {}
        for proc in psutil.process_iter(["name", "create_time", "cpu_times"]):
            info = proc.info
            if proc.pid in mine or info["name"] == "postgres" or info["cpu_times"] is None:
                continue
            times = info["cpu_times"]
            out[(proc.pid, info["create_time"])] = times.user + times.system
        return out

    def mark(self) -> None:
        self.t0 = time.perf_counter()
        self.cpu0 = self._sample()

    def percent(self) -> float:
        wall = max(1e-9, time.perf_counter() - self.t0)
        now = self._sample()
        used = sum(cpu - self.cpu0.get(key, 0.0) for key, cpu in now.items()
                   if key in self.cpu0 or key[1] >= time.time() - wall)
        return round(100 * used / wall, 1)


def other_load() -> float:
    """CPU% used by processes that are not this bench's (the shared box's background)."""
    mine = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    procs = [p for p in psutil.process_iter() if p.pid not in mine]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(1.0)
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.cpu_percent(None)
    return round(total, 1)


# --------------------------------------------------------------------------- measurement


@dataclass
class ProcessMeter:
    """CPU seconds and RSS of one process (with its threads), sampled in a thread.

    `mark()` starts a window; `window()` returns CPU% (100 = one core) and the peak RSS
    seen since the mark. Live child processes are included (the workers of
    `sinal serve --workers N`), and so are reaped ones (a worker that was restarted):
    CPU and RSS are the sums over the process and its descendants.
    """

    pid: int
    interval: float = 0.25
    peak_rss: int = 0
    _proc: psutil.Process | None = None
    _t0: float = 0.0
    _cpu0: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._proc = psutil.Process(self.pid)
        self.mark()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _tree(self) -> list[psutil.Process]:
        assert self._proc is not None
        try:
            return [self._proc, *self._proc.children(recursive=True)]
        except psutil.Error:
            return [self._proc]

    def cpu_seconds(self) -> float:
        total, alive = 0.0, False
        for i, proc in enumerate(self._tree()):
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            alive = alive or i == 0
            total += times.user + times.system
            if i == 0:  # reaped children (a restarted worker) count once, at the root
                total += times.children_user + times.children_system
        return float(total) if alive else self._cpu0

    def rss(self) -> int:
        total = 0
        for proc in self._tree():
            try:
                total += int(proc.memory_info().rss)
            except psutil.Error:
                continue
        return total

    def mark(self) -> None:
        self._t0 = time.perf_counter()
        self._cpu0 = self.cpu_seconds()
        self.peak_rss = self.rss()

    def window(self) -> dict[str, float]:
        wall = max(1e-9, time.perf_counter() - self._t0)
        cpu = self.cpu_seconds() - self._cpu0
        return {"cpuSeconds": round(cpu, 3), "cpuPercent": round(100 * cpu / wall, 1),
                "rssMb": round(self.rss() / 2**20, 1), "peakRssMb": round(self.peak_rss / 2**20, 1),
                "wallSeconds": round(wall, 3)}

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, self.rss())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)


def percentiles_ms(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max of latencies in seconds, as ms."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1] * 1000, 2)}


# --------------------------------------------------------------------------- database


@dataclass
class BenchDatabase:
    """A fresh database `sinal_bench_<utc>_<pid>` with Sinal's schema, one admin user and
    one department; dropped by `drop()` (and by the context manager)."""

    admin_url: str = DEFAULT_ADMIN_URL
    name: str = ""
    url: str = ""
    admin_id: str = ""
    department_id: str = ""

    def create(self) -> BenchDatabase:
        from sinal.node.migrate import apply_migrations

        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        self.name = f"sinal_bench_{stamp}_{os.getpid()}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        base = self.admin_url.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"
        apply_migrations(self.url)
        with psycopg.connect(self.url, autocommit=True) as conn:
            dept = conn.execute(
                "INSERT INTO departments (name) VALUES ('Bench') RETURNING id::text").fetchone()
            assert dept is not None
            self.department_id = dept[0]
            user = conn.execute(
                "INSERT INTO users (email, name, role, department_id) "
                "VALUES ('admin@bench.sinal', 'Bench Admin', 'admin', %s) RETURNING id::text",
                (self.department_id,)).fetchone()
            assert user is not None
            self.admin_id = user[0]
        return self

    def token(self, ttl_seconds: int = 4 * 3600) -> str:
        from sinal.domain.tokens import mint_token

        return mint_token(JWT_SECRET, self.admin_id, "admin", ttl_seconds=ttl_seconds)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def drop(self) -> None:
        if not self.name:
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", (self.name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
        self.name = ""

    def __enter__(self) -> BenchDatabase:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.drop()


def postgres_backend_pids(db: BenchDatabase) -> list[int]:
    rows = db.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                      "AND pid <> pg_backend_pid()")
    return [int(r[0]) for r in rows]


# --------------------------------------------------------------------------- servers


class ServerFailed(RuntimeError):
    pass


@dataclass
class ServerProcess:
    """A server in a subprocess (Sinal or a peer), its ports, meter and log."""

    name: str
    argv: list[str]
    env: dict[str, str]
    http_port: int
    ws_port: int
    ready_path: str
    cwd: Path
    cpus: frozenset[int] = frozenset()
    proc: subprocess.Popen[bytes] | None = None
    meter: ProcessMeter | None = None
    log_path: Path | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.log_path = self.cwd / f"{self.name}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}{self.ready_path}"
        while True:
            if self.proc.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)
        pin_process(self.proc.pid, self.cpus)
        self.meter = ProcessMeter(self.proc.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def repin(self) -> None:
        """Threads started after `start` (worker threads) inherit nothing: pin them too."""
        if self.proc is not None:
            pin_process(self.proc.pid, self.cpus)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def get_json(self, path: str, token: str | None = None) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.meter is not None:
            self.meter.close()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sinal_server(db: BenchDatabase, workdir: Path, *, cpus: frozenset[int] = frozenset(),
                 settings: Mapping[str, str] | None = None) -> ServerProcess:
    """A Sinal node (`sinal serve`) on free ports, production mode, quiet logs."""
    http_port, ws_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "WEBSOCKET_"))}
    env.update({
        "DATABASE_URL": db.url,
        "JWT_SECRET": JWT_SECRET,
        "SINAL_ENV": "production",
        "HTTP_PORT": str(http_port),
        "WEBSOCKET_PORT": str(ws_port),
        "SINAL_HOST": "127.0.0.1",
        "SINAL_DATA_DIR": str(workdir / "sinal-data"),
        "LOG_LEVEL": "warning",
        "LOG_WEBSOCKET_EVENTS": "false",
        "LOG_PERFORMANCE_METRICS": "false",
        "MAX_CONCURRENT_CONNECTIONS": "20000",
        # the bench measures throughput, not the per-user limiter (all clients are one user)
        "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000",
        # nor the per-address pre-login quota (every client comes from 127.0.0.x, with up
        # to 128 handshakes in flight per client process)
        "WEBSOCKET_PRELOGIN_PER_ADDRESS": "1000000",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(settings or {})
    sinal = Path(sys.executable).parent / "sinal"
    argv = [str(sinal), "serve"] if sinal.exists() else [sys.executable, "-m", "sinal.node.cli",
                                                           "serve"]
    return ServerProcess("sinal", argv, env, http_port, ws_port, "/health/ready", workdir,
                         cpus)


@contextlib.contextmanager
def workdir(prefix: str = "sinal-bench-") -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield Path(path)


def write_report(directory: Path, name: str, results: dict[str, Any], text: str,
                 log: Any) -> Path:
    """`<name>.json` (every number) and `<name>.md` (`text`) in `directory`; says so with
    `log` and prints the markdown."""
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(results, indent=2))
    md = directory / f"{name}.md"
    md.write_text(text)
    log(f"wrote {md} and {md.with_suffix('.json').name}")
    print()
    print(text)
    return md


def start_report(prog: str, argv: list[str] | None) -> tuple[Any, dict[str, Any]]:
    """A bench entry point's log (seconds since now, flushed) and the head of its results:
    stamp, start time, the command line, the machine and other processes' CPU."""
    t0 = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {message}", flush=True)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results: dict[str, Any] = {
        "stamp": stamp, "startedAt": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": f"python -m {prog} " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(), "backgroundCpuPercent": other_load()}
    return log, results
