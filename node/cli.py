"""The `sinal` command: serve, migrate, simulate, token, status.

Exit codes: 0 success, 1 run-time failure, 2 bad settings or arguments. A run-time
failure prints one line, `sinal <command>: <what failed>; <what to check>`
(node/failures.py); `--verbose` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sinal.node.config import EXIT_BAD_CONFIG, Config, ConfigError, find_env_file, load_config
from sinal.node.failures import (
    EXIT_FAILURE,
    explain,
    mask_url,
    redis_unavailable_warning,
)
from sinal.node.log import setup_logging

log = logging.getLogger("sinal.cli")


def _config(args: argparse.Namespace) -> Config:
    if args.env_file:
        env_file = Path(args.env_file)
        if not env_file.is_file():
            raise ConfigError("--env-file", args.env_file, "an existing settings file")
        return load_config(env_file=env_file)
    return load_config(env_file=find_env_file())


def _check_redis(config: Config) -> str:
    """'' when Redis answers (or none is configured), else the warning line (the node
    serves anyway: node/wiring.py, start_degraded)."""
    url = config.effective_redis_url
    if not url:
        return ""
    import redis

    setting = "REDIS_URL" if config.redis_url else "REDIS_HOST/REDIS_PORT/REDIS_PASSWORD/REDIS_DB"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        return redis_unavailable_warning(url, setting, exc)
    return ""


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    import trio

    from sinal.domain.tokens import mint_token
    from sinal.node.wiring import Node, prepare_database, resolve_jwt_secret
    from sinal.node.workers import worker_count

    workers = worker_count(args.workers if args.workers is not None else config.sinal_workers)
    prepared = prepare_database(config)
    try:
        config = resolve_jwt_secret(config)
        redis_warning = _check_redis(config)
        if redis_warning:
            print(f"sinal serve: {redis_warning}", file=sys.stderr, flush=True)
        if workers > 1:
            return _serve_workers(args, config, prepared.url, workers)

        async def main() -> None:
            node = Node(config, prepared.url, gc_freeze=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, node, nursery.cancel_scope)
                await nursery.start(node.run)
                token_line = ""
                if config.development:
                    import psycopg

                    from sinal.node.demo import find_user

                    with psycopg.connect(prepared.url) as conn:
                        admin = find_user(conn, "admin")
                    if admin:
                        token = mint_token(config.jwt_secret, admin["id"], admin["role"],
                                           ttl_seconds=12 * 3600)
                        token_line = f"  token      {token}\n             ({admin['email']}, " \
                                     "admin, 12 h; `sinal token --user <email|role>` for others)\n"
                embedded = (f"  (embedded, data in {config.data_dir})"
                            if prepared.embedded else "")
                redis_url = config.effective_redis_url
                redis_line = (f"  redis      {mask_url(redis_url)}"
                              f"{'  (not answering: serving alone)' if redis_warning else ''}\n"
                              if redis_url else "")
                print(
                    f"Sinal node {node.node_id} is up\n"
                    f"  http       {node.http_url}  (health: {node.http_url}/health/realtime)\n"
                    f"  websocket  {node.websocket_url}\n"
                    f"  database   {mask_url(prepared.url)}{embedded}\n"
                    f"{redis_line}{token_line}",
                    flush=True,
                )

        try:
            trio.run(main)
        except KeyboardInterrupt:
            log.info("interrupted: shutting down")
    finally:
        prepared.stop()
    return 0


def _serve_workers(args: argparse.Namespace, config: Config, database_url: str,
                   count: int) -> int:
    """The parent of `--workers N` (node/workers.py): reserve both ports, run the workers."""
    import os
    import socket

    from sinal.node.workers import WorkersFailed, reserve_port, run_workers, worker_command

    held = [reserve_port(config.sinal_host, config.http_port),
            reserve_port(config.sinal_host, config.websocket_port)]
    try:
        http_port, ws_port = (s.getsockname()[1] for s in held)
        env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": config.jwt_secret,
               "HTTP_PORT": str(http_port), "WEBSOCKET_PORT": str(ws_port),
               "SINAL_REUSE_PORT": "true", "SINAL_WORKERS": "1"}
        base = config.sinal_node_id or f"{socket.gethostname()}-{os.getpid()}"
        print(f"Sinal: {count} workers ({base}-w0..w{count - 1})\n"
              f"  http       http://{config.sinal_host}:{http_port}\n"
              f"  websocket  ws://{config.sinal_host}:{ws_port}/ws\n"
              f"  database   {mask_url(database_url)}", flush=True)

        def say(line: str) -> None:
            print(f"sinal serve: {line}", file=sys.stderr, flush=True)

        try:
            run_workers(count, base_node_id=base, env=env,
                        command=worker_command(args.env_file, bool(args.verbose)),
                        drain_seconds=config.sinal_drain_timeout / 1000, on_event=say)
        except WorkersFailed as exc:
            say(str(exc))
            return EXIT_FAILURE
        except KeyboardInterrupt:
            pass
    finally:
        for sock in held:
            sock.close()
    return 0


async def _stop_on_signal(node: Any, scope: object) -> None:
    """SIGTERM (Procfile, Docker) and SIGINT stop the node gracefully: it drains first
    (readiness false, then server_shutdown to every socket: Node.drain)."""
    import signal

    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %s: draining, then shutting down", signal.Signals(signum).name)
            assert isinstance(scope, trio.CancelScope)
            await node.drain(scope)
            return


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    from sinal.node.wiring import prepare_database

    prepared = prepare_database(config, seed_demo_data=False)
    prepared.stop()
    print("migrations applied")
    return 0


def cmd_simulate(args: argparse.Namespace, config: Config) -> int:
    from sinal.node.simulate import Progress, simulate
    from sinal.node.wiring import prepare_database

    if args.rate <= 0:
        print("sinal simulate: --rate must be a positive number of actions per second",
              file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.progress < 0:
        print("sinal simulate: --progress must be a number of seconds (0: no progress lines)",
              file=sys.stderr)
        return EXIT_BAD_CONFIG

    def report(progress: Progress) -> None:
        print(f"sinal simulate: {progress.actions} actions in {progress.seconds:.1f} s "
              f"({progress.rate:.1f}/s), {progress.errors} refused", file=sys.stderr,
              flush=True)

    prepared = prepare_database(config, seed_demo_data=True)
    try:
        result = simulate(prepared.url, args.rate, args.duration, seed=args.seed,
                          progress=report if args.progress else None,
                          progress_every=args.progress or 5.0)
    finally:
        prepared.stop()
    total = sum(result.actions.values())
    print(json.dumps({"actions": dict(result.actions), "total": total, "refused": result.errors,
                      "seconds": round(result.seconds, 2),
                      "rate": round(total / result.seconds, 2) if result.seconds else 0}))
    return 0


def cmd_token(args: argparse.Namespace, config: Config) -> int:
    import psycopg

    from sinal.domain.tokens import mint_token
    from sinal.node.demo import find_user
    from sinal.node.wiring import prepare_database, resolve_jwt_secret

    # the database first: a data folder whose PostgreSQL cannot start gets no new secret
    prepared = prepare_database(config)
    try:
        config = resolve_jwt_secret(config)
        with psycopg.connect(prepared.url) as conn:
            user = find_user(conn, args.user)
    finally:
        prepared.stop()
    if user is None:
        print(f"sinal token: no user {args.user!r} (give an id, an e-mail or a role)",
              file=sys.stderr)
        return EXIT_BAD_CONFIG
    print(mint_token(config.jwt_secret, user["id"], user["role"], ttl_seconds=args.ttl))
    return 0


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    from sinal.domain.tokens import mint_token
    from sinal.node.wiring import resolve_jwt_secret

    config = resolve_jwt_secret(config)
    url = args.url or f"http://127.0.0.1:{config.http_port}"
    token = mint_token(config.jwt_secret, "operator", "admin", ttl_seconds=60, scope="operator")
    request = urllib.request.Request(
        url.rstrip("/") + "/api/supervisor", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            tree = json.load(response)
    except urllib.error.HTTPError as exc:
        print(f"sinal status: {url} answered {exc.code}: {exc.read()[:500]!r}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sinal status: no node answers at {url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(tree, indent=2))
    else:
        from sinal.engine.status import render_status

        print(f"node {tree.get('node')}")
        if tree.get("tree"):
            print(render_status(tree["tree"]))
        listener = tree.get("listener") or {}
        if listener:
            print(f"listener: position {listener.get('position')}, head {listener.get('head')},"
                  f" lag {listener.get('lag')}")
        cluster = tree.get("cluster") or {}
        if cluster:
            print(f"cluster: {cluster.get('connections')} connections on "
                  f"{len(cluster.get('nodes') or {})} node(s) (Redis registry)")
            for name, fields in sorted((cluster.get("nodes") or {}).items()):
                print(f"  node {name}: {fields.get('connections', '?')} connections, "
                      f"pid {fields.get('pid', '?')}, position {fields.get('position', '?')}, "
                      f"http {fields.get('http', '?')}")
        realtime = tree.get("realtime") or {}
        if realtime:
            print(f"connections: {realtime.get('connections')} "
                  f"({realtime.get('users')} users, {realtime.get('refused')} refused)")
            for name, topic in (realtime.get("topics") or {}).items():
                print(f"  topic {name}: {topic['subscribers']} subscribers, head "
                      f"{topic['head']}, ring {topic['ring']}, frames out {topic['framesOut']}")
    return 0


class _VersionAction(argparse.Action):
    """`sinal --version`: the installed package's version (its metadata), then exit."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        import sinal

        print(f"sinal {sinal.__version__}")
        parser.exit()


def _workers_argument(text: str) -> int:
    from sinal.node.config import SETTINGS

    parse = next(s.parse for s in SETTINGS if s.name == "SINAL_WORKERS")
    try:
        value: int = parse("--workers", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"{exc.value!r}: expected {exc.expected} "
                                         "or auto") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sinal",
        description="Sinal: PostgreSQL changes to WebSocket and REST deltas, in realtime.",
        epilog="Exit codes: 0 success, 1 run-time failure (one line says what failed and "
        "what to check), 2 bad setting or argument.",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.add_argument("--env-file", help="settings file (default: ./.env when present, "
                        "else the .env of the checkout sinal runs from)")
    verbose_help = "on a failure, print the traceback too"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    # --verbose after the command works too (`sinal serve --verbose`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help=verbose_help)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", parents=[common],
        help="run a node: migrations, HTTP (HTTP_PORT) and WebSocket (WEBSOCKET_PORT)",
        description="Apply migrations and run a node. Without DATABASE_URL, starts the "
        "embedded PostgreSQL (data in SINAL_DATA_DIR/postgres), or shares the one that "
        "already runs there.",
    )
    serve.add_argument("--workers", type=_workers_argument, default=None, metavar="N",
                       help="worker processes sharing both ports (SO_REUSEPORT), each a "
                       "full node; `auto`: one per core (default: SINAL_WORKERS, 1)")
    sub.add_parser("migrate", parents=[common], help="apply the SQL migrations and exit")
    sim = sub.add_parser("simulate", parents=[common],
                         help="write realistic procurement traffic into the database")
    sim.add_argument("--rate", type=float, default=5.0, help="actions per second (default 5)")
    sim.add_argument("--duration", type=float, default=60.0,
                     help="seconds to run; 0 runs until interrupted (default 60)")
    sim.add_argument("--seed", type=int, default=None, help="random seed for a repeatable run")
    sim.add_argument("--progress", type=float, default=5.0, metavar="SECONDS",
                     help="a progress line on stderr every SECONDS (default 5; 0: none)")
    tok = sub.add_parser("token", parents=[common], help="mint a development JWT for a user")
    tok.add_argument("--user", default="admin", help="user id, e-mail or role (default admin)")
    tok.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    stat = sub.add_parser("status", parents=[common],
                          help="print the supervisor tree of a running node")
    stat.add_argument("--url", help="the node's HTTP URL (default http://127.0.0.1:HTTP_PORT)")
    stat.add_argument("--json", action="store_true", help="print the raw JSON")
    return parser


COMMANDS = {
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "simulate": cmd_simulate,
    "token": cmd_token,
    "status": cmd_status,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"sinal: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    setup_logging(config)
    try:
        return COMMANDS[args.command](args, config)
    except ConfigError as exc:
        print(f"sinal {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except KeyboardInterrupt:
        print(f"sinal {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the edge: one line, never a bare traceback (node/failures.py)
        explanation = explain(exc, config)
        if args.verbose:
            traceback.print_exception(exc, file=sys.stderr)
            if explanation.detail:
                print(explanation.detail, file=sys.stderr)
        hint = "" if explanation.known or args.verbose else " (run with --verbose for the " \
            "traceback)"
        print(f"sinal {args.command}: {explanation.message}{hint}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
