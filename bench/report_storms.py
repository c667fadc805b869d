"""The storms' and the memory part's tables and targets (issue #12), for bench/report.py."""

from __future__ import annotations

from typing import Any

from bench.cells import NA, fmt, table


def _run(results: dict[str, Any], part: str, stack: str, **match: Any) -> dict[str, Any] | None:
    for run in results.get(part, {}).get("runs", []):
        if run.get("stack") == stack and all(run.get(k) == v for k, v in match.items()) \
                and "error" not in run:
            return dict(run)
    return None


def storm_targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None, str]]:
    """(target, measured, ok, note) rows for the targets of issue #12."""
    rows: list[tuple[str, str, bool | None, str]] = []
    sinal = _run(results, "notify", "sinal")
    if sinal:
        p99 = sinal["latencyMs"]["p99"]
        ok = p99 is not None and p99 < 20 and sinal["delivered"] >= 0.999
        rows.append((f"notification storm: p99 < 20 ms ({sinal['users']:,} users, "
                     f"{sinal['commitRate']}/s to distinct users)",
                     f"{fmt(p99, 2)} ms (p50 {fmt(sinal['latencyMs']['p50'], 2)} ms, "
                     f"{100 * sinal['delivered']:.1f}% delivered, server CPU "
                     f"{sinal['serverCpuPercent']}%)", ok,
                     "" if ok or p99 is None else f"{p99 / 20:.1f}x over"))
    for run in results.get("connect", {}).get("runs", []):
        if run.get("stack") != "sinal" or "error" in run:
            continue
        n = run["connections"]
        peer = _run(results, "connect", "peer", connections=n)
        if peer and peer.get("seconds"):
            ratio = run["seconds"] / peer["seconds"]
            rows.append((f"connect storm {n:,}: at least as fast as the peer",
                         f"{run['seconds']:.1f} s vs {peer['seconds']:.1f} s ({ratio:.2f}x); "
                         f"p99 {fmt(run['connectMs']['p99'])} vs "
                         f"{fmt(peer['connectMs']['p99'])} ms", ratio <= 1.0,
                         "" if ratio <= 1.0 else f"{ratio:.2f}x the peer's time"))
    return rows


def _client_notes(runs: list[dict[str, Any]]) -> list[str]:
    """Which load client; a run whose target did not fit the open-files limits; failures."""
    kinds = {r["client"] for r in runs if r.get("client")}
    lines = [f"Load client: {' and '.join(sorted(kinds))} (client CPU: its processes' own, "
             "user + system)."] if kinds else []
    for r in runs:
        size = r.get("connections", r.get("users"))
        if r.get("fdLimit"):
            lines.append(f"{r['stack']} at {fmt(size)}: {r['fdLimit']}.")
        if r.get("failed"):
            lines.append(f"{r['stack']} at {fmt(size)}: failed {r['failed']}.")
    return [" ".join(lines), ""] if lines else []


def storm_markdown(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    notify = results.get("notify")
    if notify:
        lines += ["## Notification storm", "",
                  "Every user has one connection subscribed to purchase_request_changed "
                  "(one subscription group each); the writer inserts notifications, each for "
                  "the next user in turn. Latency: commit to the client's receive of the "
                  "notification frame.", ""]
        lines += table(["stack", "processes", "users", "notifications/s", "delivered",
                         "p50 ms", "p95 ms", "p99 ms", "max ms", "server CPU %",
                         "client CPU %", "server RSS MB", "connect s"], [
            [r["stack"], fmt(r.get("workers", 1)), fmt(r.get("users")),
             fmt(r.get("commitRate")),
             f"{100 * r['delivered']:.1f}%" if "delivered" in r else NA,
             *(fmt(r.get("latencyMs", {}).get(k), 2) for k in ("p50", "p95", "p99", "max")),
             fmt(r.get("serverCpuPercent")), fmt(r.get("clientCpuPercent")),
             fmt(r.get("serverRssMb")), fmt(r.get("connectSeconds"))] if "error" not in r
            else [r["stack"], r["error"][:80]] + [NA] * 11
            for r in notify.get("runs", [])])
        lines += _client_notes(notify.get("runs", []))
    connect = results.get("connect")
    if connect:
        lines += ["## Connect storm", "",
                  "N clients open, `connect` and `subscribe` as fast as their handshake "
                  "windows allow (handshakes in flight over all client processes).", ""]
        lines += table(["stack", "processes", "N", "subscribed", "seconds", "p50 ms",
                         "p99 ms", "server CPU s", "client CPU s", "server RSS MB",
                         "client processes", "in flight"], [
            [r["stack"], fmt(r.get("workers", 1)), fmt(r["connections"]),
             fmt(r.get("ready")), fmt(r.get("seconds")),
             fmt(r.get("connectMs", {}).get("p50")), fmt(r.get("connectMs", {}).get("p99")),
             fmt(r.get("serverCpuSeconds")), fmt(r.get("clientCpuSeconds"), 2),
             fmt(r.get("serverRssMb")), fmt(r.get("clientProcesses")),
             fmt(r.get("handshakesInFlight"))] if "error" not in r
            else [r["stack"], NA, fmt(r["connections"]), r["error"][:80]] + [NA] * 8
            for r in connect.get("runs", [])])
        lines += _client_notes(connect.get("runs", []))
    memory = results.get("memory")
    if memory and "bySite" in memory:
        lines += ["## Where an idle connection's bytes go", "",
                  f"{memory['held']:,} idle connections "
                  f"({memory.get('liveActors', 0):,} connection actors) traced (tracemalloc): "
                  f"{fmt(memory['tracedBytesPerConnection'])} bytes each; after they all "
                  f"closed {fmt(memory['tracedBytesLeftPerClosedConnection'])} bytes per "
                  "connection were still traced.", ""]
        lines += table(["file", "bytes / connection", "blocks / connection"], [
            [r["where"], fmt(r["bytesPerConnection"]), fmt(r["blocksPerConnection"], 2)]
            for r in memory["byFile"][:15]])
        lines += table(["type (live, GC-tracked)", "objects / connection",
                         "bytes / connection"], [
            [r["type"], fmt(r["countPerConnection"], 2), fmt(r["bytesPerConnection"])]
            for r in memory["byType"][:15]])
    return lines
