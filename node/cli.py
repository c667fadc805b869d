"""The `sinal` command: serve, migrate, simulate, token, status.

Exit codes: 0 success, 1 runtime failure, 2 bad settings or arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from sinal.node.config import EXIT_BAD_CONFIG, Config, ConfigError, load_config
from sinal.node.log import setup_logging

log = logging.getLogger("sinal.cli")


def _config(args: argparse.Namespace) -> Config:
    env_file = Path(args.env_file) if args.env_file else Path(".env")
    return load_config(env_file=env_file)


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    import trio

    from sinal.domain.tokens import mint_token
    from sinal.node.wiring import Node, prepare_database, resolve_jwt_secret

    config = resolve_jwt_secret(config)
    prepared = prepare_database(config)
    try:
        async def main() -> None:
            node = Node(config, prepared.url)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
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
                print(
                    f"Sinal node {node.node_id} is up\n"
                    f"  http       {node.http_url}  (health: {node.http_url}/health/realtime)\n"
                    f"  websocket  {node.websocket_url}\n"
                    f"  database   {_redact(prepared.url)}{embedded}\n"
                    f"{token_line}",
                    flush=True,
                )

        try:
            trio.run(main)
        except KeyboardInterrupt:
            log.info("interrupted: shutting down")
    finally:
        prepared.stop()
    return 0


async def _stop_on_signal(scope: object) -> None:
    """SIGTERM (Procfile, Docker) and SIGINT stop the node gracefully."""
    import signal

    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %s: shutting down", signal.Signals(signum).name)
            assert isinstance(scope, trio.CancelScope)
            scope.cancel()
            return


def _redact(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    from sinal.node.wiring import prepare_database

    prepared = prepare_database(config, seed_demo_data=False)
    prepared.stop()
    print("migrations applied")
    return 0


def cmd_simulate(args: argparse.Namespace, config: Config) -> int:
    from sinal.node.simulate import simulate
    from sinal.node.wiring import prepare_database

    if args.rate <= 0:
        print("sinal simulate: --rate must be a positive number of actions per second",
              file=sys.stderr)
        return EXIT_BAD_CONFIG
    prepared = prepare_database(config, seed_demo_data=True)
    try:
        result = simulate(prepared.url, args.rate, args.duration, seed=args.seed)
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

    config = resolve_jwt_secret(config)
    prepared = prepare_database(config)
    try:
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
        realtime = tree.get("realtime") or {}
        if realtime:
            print(f"connections: {realtime.get('connections')} "
                  f"({realtime.get('users')} users, {realtime.get('refused')} refused)")
            for name, topic in (realtime.get("topics") or {}).items():
                print(f"  topic {name}: {topic['subscribers']} subscribers, head "
                      f"{topic['head']}, ring {topic['ring']}, frames out {topic['framesOut']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sinal",
        description="Sinal: PostgreSQL changes to WebSocket and REST deltas, in realtime.",
    )
    parser.add_argument("--env-file", help="settings file (default: ./.env when present)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "serve",
        help="run a node: migrations, HTTP (HTTP_PORT) and WebSocket (WEBSOCKET_PORT)",
        description="Apply migrations and run a node. Without DATABASE_URL, starts the "
        "embedded PostgreSQL (data in SINAL_DATA_DIR/postgres).",
    )
    sub.add_parser("migrate", help="apply the SQL migrations and exit")
    sim = sub.add_parser("simulate", help="write realistic procurement traffic into the database")
    sim.add_argument("--rate", type=float, default=5.0, help="actions per second (default 5)")
    sim.add_argument("--duration", type=float, default=60.0,
                     help="seconds to run; 0 runs until interrupted (default 60)")
    sim.add_argument("--seed", type=int, default=None, help="random seed for a repeatable run")
    tok = sub.add_parser("token", help="mint a development JWT for a user")
    tok.add_argument("--user", default="admin", help="user id, e-mail or role (default admin)")
    tok.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    stat = sub.add_parser("status", help="print the supervisor tree of a running node")
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
    return COMMANDS[args.command](args, config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
