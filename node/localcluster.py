"""`make cluster` (`python -m sinal.node.localcluster --nodes N`): N Sinal nodes behind
the real nginx on this machine, with Redis, as section 7.3 deploys them.

The nginx configuration is the repository's `nginx.conf`, rendered for local ports by
substitution (`render_nginx_conf`): each `server app:PORT ...;` line of an upstream
becomes one line per node (127.0.0.1 and the node's own port), `listen 80` becomes the
given loopback port, and the paths nginx writes (pid, temporary files) move to a run
folder. Nothing else changes, so what runs here is what the compose file runs.

Every node is a `sinal serve` process (SINAL_NODE_ID `local-n<i>`, its own free ports,
TRUSTED_PROXIES=127.0.0.1 so that budgets key on the client nginx names in
X-Forwarded-For). The database is DATABASE_URL, else the embedded server of the data
folder; Redis is REDIS_URL, else a throw-away redis-server. `LocalCluster` is also what
the fault tests drive (tests/cluster/).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from sinal.node.embedded import free_port

NGINX_CONF = Path(__file__).resolve().parent.parent / "nginx.conf"
_SERVER_LINE = re.compile(r"^(\s*)server app:(\d+)(.*);\s*$", re.M)


def render_nginx_conf(text: str, *, http_ports: Sequence[int], ws_ports: Sequence[int],
                      listen_port: int, run_dir: Path) -> str:
    """The repository's nginx.conf for nodes on 127.0.0.1 (module docstring)."""

    def servers(match: re.Match[str]) -> str:
        indent, port, options = match.group(1), int(match.group(2)), match.group(3)
        ports = http_ports if port == 3000 else ws_ports if port == 3001 else None
        if ports is None:
            raise ValueError(f"nginx.conf: an upstream on port {port} (expected 3000 or 3001)")
        return "\n".join(f"{indent}server 127.0.0.1:{p}{options};" for p in ports)

    rendered, count = _SERVER_LINE.subn(servers, text)
    if count != 2:
        raise ValueError(f"nginx.conf: expected two `server app:...` lines, found {count}")
    rendered, listens = re.subn(r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{listen_port};",
                                rendered, flags=re.M)
    if listens != 1:
        raise ValueError("nginx.conf: expected one `listen 80;`")
    temp = {name: run_dir / name for name in ("client_body", "proxy", "fastcgi", "uwsgi",
                                               "scgi")}
    paths = "\n".join(f"    {name}_temp_path {path};" for name, path in temp.items())
    rendered = rendered.replace("http {\n", f"http {{\n{paths}\n", 1)
    return f"pid {run_dir / 'nginx.pid'};\n{rendered}"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if found is None:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install -y nginx)")
    return found


@dataclass
class NodeProcess:
    index: int
    http_port: int
    ws_port: int
    process: trio.Process | None = None

    @property
    def node_id(self) -> str:
        return f"local-n{self.index}"


@dataclass
class LocalCluster:
    """N `sinal serve` processes and nginx in front. Use `async with cluster.running():`."""

    env: dict[str, str]
    nodes: int = 2
    listen_port: int = 0
    serve_args: Sequence[str] = ()
    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sinal-nginx-")))
    members: list[NodeProcess] = field(default_factory=list)
    nginx: trio.Process | None = None

    def __post_init__(self) -> None:
        self.listen_port = self.listen_port or free_port()
        self.members = [NodeProcess(i, free_port(), free_port()) for i in range(self.nodes)]

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.listen_port}/ws"

    async def start_node(self, member: NodeProcess) -> None:
        env = {**self.env, "SINAL_NODE_ID": member.node_id, "HTTP_PORT": str(member.http_port),
               "WEBSOCKET_PORT": str(member.ws_port)}
        env.setdefault("TRUSTED_PROXIES", "127.0.0.1")
        member.process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "sinal.node.cli", "serve", *self.serve_args], env=env)

    async def stop_node(self, member: NodeProcess, signum: int = signal.SIGTERM) -> int:
        process = member.process
        assert process is not None
        if process.returncode is None:
            process.send_signal(signum)
        with trio.move_on_after(30):
            return await process.wait()
        process.kill()
        return await process.wait()

    async def start_nginx(self) -> None:
        conf = self.run_dir / "nginx.conf"
        conf.write_text(render_nginx_conf(
            NGINX_CONF.read_text(), http_ports=[m.http_port for m in self.members],
            ws_ports=[m.ws_port for m in self.members], listen_port=self.listen_port,
            run_dir=self.run_dir))
        self.nginx = await trio.lowlevel.open_process(
            [nginx_binary(), "-p", str(self.run_dir), "-c", str(conf), "-e", "stderr",
             "-g", "daemon off;"], stdout=subprocess.DEVNULL)

    async def wait_node_ready(self, member: NodeProcess, patience: float = 60.0) -> None:
        """Until the node itself (not through nginx) answers /health/ready with 200."""
        url = f"http://127.0.0.1:{member.http_port}/health/ready"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        with trio.fail_after(patience):
            while not await trio.to_thread.run_sync(ready):
                assert member.process is not None
                if member.process.returncode is not None:
                    raise RuntimeError(f"node {member.node_id} exited with code "
                                       f"{member.process.returncode}")
                await trio.sleep(0.05)

    async def start(self) -> None:
        """Every node, ready; then nginx (which would otherwise mark a node that is still
        starting as failed for fail_timeout)."""
        for member in self.members:
            await self.start_node(member)
        for member in self.members:
            await self.wait_node_ready(member)
        await self.start_nginx()
        with trio.fail_after(30):
            while True:  # nginx listens, or says why not (stderr) and exits
                assert self.nginx is not None
                if self.nginx.returncode is not None:
                    raise RuntimeError(f"nginx exited with code {self.nginx.returncode} "
                                       f"(port {self.listen_port})")
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.listen_port)
                except OSError:
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                return

    async def stop(self) -> None:
        with trio.CancelScope(shield=True):
            for member in self.members:
                if member.process is not None and member.process.returncode is None:
                    member.process.send_signal(signal.SIGTERM)
            for member in self.members:
                if member.process is not None:
                    await self.stop_node(member)
            if self.nginx is not None and self.nginx.returncode is None:
                self.nginx.send_signal(signal.SIGQUIT)  # graceful
                with trio.move_on_after(10):
                    await self.nginx.wait()
                if self.nginx.returncode is None:
                    self.nginx.kill()
                    await self.nginx.wait()
            shutil.rmtree(self.run_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - `make cluster`
    from sinal.node.config import find_env_file, load_config
    from sinal.node.embedded import EmbeddedRedis
    from sinal.node.wiring import prepare_database, resolve_jwt_secret

    parser = argparse.ArgumentParser(prog="python -m sinal.node.localcluster",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2, help="number of nodes (default 2)")
    parser.add_argument("--port", type=int, default=8080, help="nginx port (default 8080)")
    args = parser.parse_args(argv)
    config = load_config(env_file=find_env_file())
    prepared = prepare_database(config)
    redis_server = None
    try:
        config = resolve_jwt_secret(config)
        redis_url = config.effective_redis_url
        if not redis_url:
            redis_dir = Path(tempfile.mkdtemp(prefix="sinal-cluster-redis-"))
            redis_server = EmbeddedRedis(free_port(), redis_dir)
            redis_url = redis_server.start()
        env = {**os.environ, "DATABASE_URL": prepared.url, "JWT_SECRET": config.jwt_secret,
               "REDIS_URL": redis_url}
        cluster = LocalCluster(env, nodes=args.nodes, listen_port=args.port)

        async def run() -> None:
            try:
                await cluster.start()
                print(f"Sinal: {args.nodes} nodes behind nginx\n"
                      f"  http       {cluster.http_url}\n  websocket  {cluster.ws_url}\n"
                      f"  redis      {redis_url}\n  (Ctrl-C stops everything)", flush=True)
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        return
            finally:
                await cluster.stop()

        trio.run(run)
    finally:
        if redis_server is not None:
            redis_server.stop()
        prepared.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
