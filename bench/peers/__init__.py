"""The peer: the seed's own stack (Node.js + socket.io 4 + socket.io-msgpack-parser + pg),
installed with npm into bench/peers/node_modules when the bench runs, started on the
bench's database. See socketio_peer.js for what it does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.harness import JWT_SECRET, BenchDatabase, ServerProcess, free_port

PEERS_DIR = Path(__file__).resolve().parent
SOURCES = ("change_log", "notify")

# The seed's section 6.2 trigger, for PEER_SOURCE=notify: the row itself as NOTIFY payload
# on a channel named after the topic (8000-byte payload cap and all).
SEED_NOTIFY_SQL = """
CREATE OR REPLACE FUNCTION bench_seed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], json_build_object(
        'id', COALESCE(NEW.id, OLD.id),
        'operation', TG_OP,
        'data', row_to_json(COALESCE(NEW, OLD)),
        'timestamp', clock_timestamp())::text);
    RETURN COALESCE(NEW, OLD);
END;
$$;
DROP TRIGGER IF EXISTS bench_seed_supplier_notify ON suppliers;
CREATE TRIGGER bench_seed_supplier_notify AFTER INSERT OR UPDATE OR DELETE ON suppliers
    FOR EACH ROW EXECUTE FUNCTION bench_seed_notify('supplier_changed');
"""
DROP_SEED_NOTIFY_SQL = "DROP TRIGGER IF EXISTS bench_seed_supplier_notify ON suppliers"


class PeerUnavailable(RuntimeError):
    pass


def ensure_installed() -> dict[str, str]:
    """`npm install` in bench/peers when node_modules is missing or older than package.json.
    Returns the installed versions of the peer's packages."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PeerUnavailable("node and npm are needed for the peer (Node.js 18 or later)")
    modules = PEERS_DIR / "node_modules"
    manifest = PEERS_DIR / "package.json"
    stamp = modules / ".bench-installed"
    if not stamp.exists() or stamp.stat().st_mtime < manifest.stat().st_mtime:
        lock = PEERS_DIR / "package-lock.json"
        command = [npm, "ci" if lock.exists() else "install", "--no-audit", "--no-fund"]
        done = subprocess.run(command, cwd=PEERS_DIR, capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            raise PeerUnavailable(f"npm failed: {done.stderr[-2000:]}")
        stamp.touch()
    versions = {}
    for package in ("socket.io", "socket.io-msgpack-parser", "pg", "ws"):
        path = modules / package / "package.json"
        if path.exists():
            versions[package] = json.loads(path.read_text())["version"]
    versions["node"] = subprocess.run([node, "--version"], capture_output=True,
                                      text=True).stdout.strip()
    return versions


def available_stacks(stacks: list[str], out: dict[str, Any], log: Any = None) -> list[str]:
    """`stacks` without the peer when its packages cannot be had; what was found (the
    peer's versions) or why not goes into `out` for the report."""
    stacks = list(stacks)
    if "peer" in stacks:
        try:
            out["peerVersions"] = ensure_installed()
        except PeerUnavailable as exc:
            out["peerError"] = str(exc)
            stacks.remove("peer")
            if log is not None:
                log(f"  peer unavailable: {exc}")
    return stacks


def socketio_server(db: BenchDatabase, workdir: Path, *, cpus: frozenset[int] = frozenset(),
                    source: str = "change_log") -> ServerProcess:
    if source not in SOURCES:
        raise ValueError(f"peer source must be one of {SOURCES}")
    node = shutil.which("node")
    if node is None:
        raise PeerUnavailable("node is not on PATH")
    port = free_port()
    env = dict(os.environ)
    env.update({"PORT": str(port), "DATABASE_URL": db.url, "JWT_SECRET": JWT_SECRET,
                "PEER_SOURCE": source, "NODE_ENV": "production"})
    return ServerProcess("socketio-peer", [node, str(PEERS_DIR / "socketio_peer.js")], env,
                         port, port, "/health/ready", workdir, cpus)
