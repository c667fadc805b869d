"""Results: the JSON document, its markdown tables, the targets verdicts and the plots.

`targets(results)` turns the measurements into rows (target, measured, verdict, note) for
issue #6's targets and the seed's PerformanceTargets (section 9.2); `markdown(results)`
writes every table; `plots(results, stem)` draws latency percentiles by N, throughput by
N and RSS by connections (matplotlib, Agg backend).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.cells import NA, cell, fmt, table
from bench.report_storms import storm_markdown, storm_targets
from bench.report_workers import section as workers_section

STACK_COLORS = {"sinal": "tab:blue", "peer": "tab:orange"}


# --------------------------------------------------------------------------- lookups


def _phase(results: dict[str, Any], stack: str, n: int, phase: str) -> dict[str, Any] | None:
    for run in results.get("fanout", {}).get("runs", []):
        if run.get("stack") == stack and run.get("clients") == n:
            for p in run.get("phases", []):
                if p["phase"] == phase:
                    return dict(p)
    return None


def _connections_run(results: dict[str, Any], stack: str) -> dict[str, Any] | None:
    for run in results.get("connections", {}).get("runs", []):
        if run.get("stack") == stack and "held" in run:
            return dict(run)
    return None




def _verdict(ok: bool | None) -> str:
    return NA if ok is None else ("met" if ok else "**missed**")


# --------------------------------------------------------------------------- targets


def targets(results: dict[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []

    def add(target: str, measured: str, ok: bool | None, note: str = "") -> None:
        rows.append({"target": target, "measured": measured, "verdict": _verdict(ok),
                     "note": note})

    # issue #6
    sinal_burst, peer_burst = _phase(results, "sinal", 1000, "burst"), _phase(
        results, "peer", 1000, "burst")
    if sinal_burst and peer_burst and peer_burst["framesPerSecond"]:
        ratio = sinal_burst["framesPerSecond"] / peer_burst["framesPerSecond"]
        add("fan-out N=1,000: >= 1.5x the peer's delivered frames/s (burst)",
            f"{ratio:.2f}x ({sinal_burst['framesPerSecond']:,} vs "
            f"{peer_burst['framesPerSecond']:,} frames/s)", ratio >= 1.5,
            "" if ratio >= 1.5 else f"short by {1.5 / ratio:.2f}x")
    else:
        add("fan-out N=1,000: >= 1.5x the peer's delivered frames/s (burst)", NA, None,
            "fan-out at N=1,000 not run for both stacks")
    sinal_paced, peer_paced = _phase(results, "sinal", 1000, "paced"), _phase(
        results, "peer", 1000, "paced")
    if sinal_paced and peer_paced and peer_paced["framesPerSecond"]:
        ratio = sinal_paced["framesPerSecond"] / peer_paced["framesPerSecond"]
        add("fan-out N=1,000 at 200 commits/s: frames/s vs the peer (paced; informative)",
            f"{ratio:.2f}x", None, "")
    if sinal_paced:
        p99 = sinal_paced["latencyMs"]["p99"]
        ok = p99 is not None and p99 < 20 and (sinal_paced["delivered"] or 0) >= 0.999
        add("p99 commit-to-client < 20 ms at N=1,000 and 200 commits/s",
            f"{fmt(p99, 2)} ms (p50 {fmt(sinal_paced['latencyMs']['p50'], 2)} ms, "
            f"{100 * (sinal_paced['delivered'] or 0):.1f}% delivered)", ok,
            "" if ok or p99 is None else f"{p99 / 20:.1f}x over")
    conn = _connections_run(results, "sinal")
    if conn:
        held = conn.get("heldAtHoldStart", conn["held"])  # older results: no such field
        measured = (f"{held:,} held, {conn['lostDuringHold']} lost, {conn['rssMb']} MB "
                    f"({conn['rssPerConnectionKb']} KB/connection)")
        workers = conn.get("workers", 1)
        if workers == 1:
            ok = conn["rssMb"] < 512 and held >= 10_000 and conn["lostDuringHold"] == 0
            add("10,000 idle connections on one node under 512 MB RSS", measured, ok)
        else:  # issue #12: 100,000 across two workers, RSS summed over the processes
            ok = conn["rssMb"] < 1536 and held >= 100_000 and conn["lostDuringHold"] == 0
            add(f"100,000 idle connections under 1.5 GB RSS ({workers} workers)", measured,
                ok, conn.get("fdLimit", ""))
    rest = results.get("rest")
    if rest is not None:
        if not rest.get("available"):
            for name in ("REST 304 >= 3,000 req/s per process",
                         "REST full list and delta >= 1,500 req/s",
                         "polling traffic >= 90 % below full-list polling"):
                add(name, rest.get("note", NA), None)
        else:
            wrk = rest.get("wrk", {})
            nm = wrk.get("notModified", {}).get("requestsPerSecond")
            add("REST 304 >= 3,000 req/s per process", f"{fmt(nm)} req/s",
                None if nm is None else nm >= 3000,
                "" if nm is None or nm >= 3000 else f"short by {3000 / max(nm, 1):.1f}x")
            full = wrk.get("full", {}).get("requestsPerSecond")
            delta = wrk.get("delta", {}).get("requestsPerSecond")
            worst = min(v for v in (full, delta) if v is not None) if (full or delta) else None
            add("REST full list and delta >= 1,500 req/s",
                f"full {fmt(full)}, delta {fmt(delta)} req/s",
                None if worst is None else worst >= 1500,
                "" if worst is None or worst >= 1500 else
                f"short by {1500 / max(worst, 1):.1f}x")
            reduction = rest.get("polling", {}).get("reductionPercent")
            add("polling traffic >= 90 % below full-list polling",
                f"{fmt(reduction)} % less", None if reduction is None else reduction >= 90)
    # seed 9.2 PerformanceTargets
    scenario = results.get("scenario")
    if scenario and "errorRate" in scenario:
        worst_p95 = max(v for v in (scenario["dataUpdateLatencyMs"]["p95"],
                                    scenario.get("restP95Ms"), scenario["wsSubscribeP95Ms"])
                        if v is not None)
        add("seed maxLatency 500 ms (p95, scenario)",
            f"{worst_p95:.1f} ms (data_update {fmt(scenario['dataUpdateLatencyMs']['p95'])}, "
            f"REST {fmt(scenario.get('restP95Ms'))}, subscribe "
            f"{fmt(scenario['wsSubscribeP95Ms'])})", worst_p95 <= 500)
        add("seed maxErrorRate 1 % (scenario)", f"{100 * scenario['errorRate']:.3f} %",
            scenario["errorRate"] <= 0.01)
        hit = scenario.get("cacheHitRate")
        add("seed minCacheHitRate 80 % (scenario, conditional REST requests)",
            NA if hit is None else f"{100 * hit:.1f} %", None if hit is None else hit >= 0.8,
            "" if hit is not None else scenario.get("rest", ""))
        add("seed maxMemoryUsage 512 MB (scenario peak RSS)",
            f"{scenario['serverPeakRssMb']} MB", scenario["serverPeakRssMb"] <= 512)
        add("seed maxCpuUsage 70 % (scenario, busiest phase, % of one core)",
            f"{scenario['serverCpuPercentMax']} %", scenario["serverCpuPercentMax"] <= 70,
            "one process uses at most one of the cores")
        add("seed maxWebSocketConnections 1,000 (scenario peak / connections bench)",
            f"{scenario['peakConnections']:,} concurrent in the scenario"
            + (f"; {conn['held']:,} held idle" if conn else ""),
            bool(conn and conn["held"] >= 1000 and conn["lostDuringHold"] == 0)
            if conn else None)
    if rest is not None:
        nm = rest.get("wrk", {}).get("notModified", {}).get("requestsPerSecond") \
            if rest.get("available") else None
        add("seed minThroughput 1,000 req/s (REST 304, wrk)",
            fmt(nm) + " req/s" if nm is not None else rest.get("note", NA),
            None if nm is None else nm >= 1000)
    for target, measured, ok, note in storm_targets(results):
        add(target, measured, ok, note)
    return rows


# --------------------------------------------------------------------------- markdown



def markdown(results: dict[str, Any], plot_names: list[str]) -> str:
    m = results["machine"]
    lines = [f"# Sinal bench, {results['startedAt']}", ""]
    lines += [
        f"Machine: {m['cpus']} CPUs ({m['cpuModel']}), {m['memoryMb']:,} MB; load average "
        f"{m['loadAverage']} at the start; Python {m['python']}, Node {m['node']}, "
        f"{m['postgres']}, wrk: {m['wrk'] or 'missing'}. CPU plan: {results['cpuPlan']}. "
        f"Background CPU of other processes, sampled before each part: "
        + ", ".join(f"{k} {v}%" for k, v in results.get("backgroundCpuPercent", {}).items())
        + f". Total time {results.get('seconds', 0):.0f} s.", ""]
    rows = targets(results)
    if rows:
        lines += ["## Targets", ""]
        lines += table(["target", "measured", "verdict", "note"],
                        [[r["target"], r["measured"], r["verdict"], r["note"]] for r in rows])
    fan = results.get("fanout")
    if fan:
        lines += ["## Fan-out", "",
                  f"One topic, N subscribers, writer INSERTs into suppliers. paced = "
                  f"{fan['options']['rate']:.0f} commits/s; burst = as fast as the writer can, "
                  f"{fan['options']['burst_deliveries']:,} deliveries in all. Latency: the "
                  "writer's time.time() in the row, before the INSERT, to the client's "
                  "receive. CPU: % of one core. Peer: "
                  f"{fan.get('peerVersions', fan.get('peerError', NA))}, source "
                  f"{fan['options']['peer_source']}. {_client_sentence(fan['runs'])}", ""]
        fan_rows: list[list[str]] = []
        for run in fan["runs"]:
            if run.get("error") and not run.get("phases"):
                fan_rows.append([run["stack"], fmt(run["clients"]), "error", cell(run["error"])]
                             + [""] * 11)
            for p in run.get("phases", []):
                lat = p["latencyMs"]
                fan_rows.append([p["stack"], fmt(p["clients"]), p["phase"],
                              fmt(p["commitRate"]), fmt(p["framesPerSecond"]),
                              f"{100 * (p['delivered'] or 0):.1f}%",
                              fmt(lat["p50"], 2), fmt(lat["p95"], 2), fmt(lat["p99"], 2),
                              fmt(lat["max"], 1), fmt(p["serverCpuPercent"]),
                              fmt(p["serverRssMb"]), fmt(p["clientCpuPercent"]),
                              fmt(p.get("clientUsPerFrame"), 2),
                              fmt(p["postgresCpuPercent"])])
        lines += table(["stack", "N", "phase", "commits/s", "frames/s", "delivered",
                         "p50 ms", "p95 ms", "p99 ms", "max ms", "server CPU %",
                         "server RSS MB", "client CPU %", "client us/frame",
                         "postgres CPU %"], fan_rows)
        if fan.get("ratios"):
            lines += ["Sinal / peer (frames/s: higher is better for Sinal; p99, CPU, RSS: "
                      "lower is better):", ""]
            lines += table(["N", "phase", "frames/s", "p99", "server CPU", "server RSS"], [
                [fmt(r["clients"]), r["phase"], fmt(r.get("framesPerSecondRatio"), 2),
                 fmt(r.get("p99Ratio"), 2), fmt(r.get("serverCpuRatio"), 2),
                 fmt(r.get("serverRssRatio"), 2)] for r in fan["ratios"]])
        connects = [[r["stack"], fmt(r["clients"]), fmt(r["connect"]["seconds"], 2),
                     fmt(r["connect"]["connectMs"]["p50"], 1),
                     fmt(r["connect"]["connectMs"]["p95"], 1),
                     fmt(r["connect"]["connectMs"]["p99"], 1),
                     fmt(r["connect"]["serverCpuPercent"]),
                     fmt(r["connect"].get("clientCpuSeconds"), 3),
                     fmt(r["connect"]["serverRssMb"])]
                    for r in fan["runs"] if r.get("connect")]
        if connects:
            lines += ["Connecting the N clients (pipelined, 128 handshakes in flight per "
                      "process); connect->subscribed times:", ""]
            lines += table(["stack", "N", "seconds", "p50 ms", "p95 ms", "p99 ms",
                             "server CPU %", "client CPU s", "server RSS MB after"], connects)
        for run in fan["runs"]:
            lines += _profile_table(f"Where Sinal's time goes at N={run['clients']:,}, paced",
                                    run.get("profile"))
    conns = results.get("connections")
    if conns:
        lines += ["## Idle connections", "",
                  f"Heartbeats every {conns['options']['heartbeat_ms']} ms both ways (Sinal's "
                  "WEBSOCKET_HEARTBEAT_INTERVAL; socket.io clients emit `heartbeat` and answer "
                  "Engine.IO pings), held "
                  f"{conns['options']['hold_seconds']:.0f} s after the last step.", ""]
        by_stack = {r["stack"]: {s["connections"]: s["rssMb"] for s in r.get("steps", [])}
                    for r in conns["runs"]}
        counts = sorted({c for steps in by_stack.values() for c in steps})
        stacks = list(by_stack)
        lines += table(["connections"] + [f"{s} RSS MB" for s in stacks],
                        [[fmt(c)] + [fmt(by_stack[s].get(c)) for s in stacks]
                         for c in counts])
        lines += table(["stack", "processes", "held", "lost before hold", "lost in hold",
                         "RSS MB", "KB / connection",
                         "idle CPU %", "client heartbeats", "connect s", "client CPU s "
                         "connecting", "client CPU % hold"], [
            [r["stack"], fmt(r.get("workers", 1)),
             fmt(r.get("heldAtHoldStart", r.get("held"))),
             fmt(r.get("lostBeforeHold")), fmt(r.get("lostDuringHold")),
             fmt(r.get("rssMb")), fmt(r.get("rssPerConnectionKb"), 2),
             fmt(r.get("serverCpuPercentIdle")), fmt(r.get("clientHeartbeatsSent")),
             fmt(r.get("connectSeconds")), fmt(r.get("clientCpuSecondsConnect"), 2),
             fmt(r.get("clientCpuPercentHold"), 2)] for r in conns["runs"]])
        for run in conns["runs"]:
            lines += _by_worker(run)
        for run in conns["runs"]:
            lines += _profile_table(f"Where Sinal's time goes holding {run.get('held', 0):,} "
                                    "idle connections", run.get("profile"))
    rest = results.get("rest")
    if rest is not None:
        lines += ["## REST", ""]
        if not rest.get("available"):
            lines += [f"{rest.get('note', NA)}.", ""]
        else:
            wrk = rest["wrk"]
            lines += [f"wrk, {rest['options']['wrk_connections']} connections, "
                      f"{rest['options']['wrk_seconds']:.0f} s each, Bearer JWT, gzip accepted; "
                      f"{rest['options']['seed_requests']} purchase requests "
                      f"({rest['fullListPages']} page(s), {rest['fullListBytes']:,} B identity, "
                      f"{rest['fullListGzipBytes']:,} B gzip).", ""]
            lines += table(["request", "req/s", "p50 ms", "p99 ms", "bytes/response",
                             "errors"], [
                [name, fmt(w.get("requestsPerSecond")), fmt(w.get("latencyMs", {}).get("p50")),
                 fmt(w.get("latencyMs", {}).get("p99")), fmt(w.get("bytesPerRequest")),
                 cell(w.get("errors", w.get("error")))]
                for name, w in (("full list", wrk["full"]), ("304", wrk["notModified"]),
                                (f"delta ({rest['options']['delta_changes']} changes)",
                                 wrk["delta"]))])
            p = rest["polling"]
            lines += [f"Polling every {rest['options']['poll_seconds']:.0f} s for an hour "
                      f"({p['pollsPerHour']} polls, {p['pollsThatSeeAChange']} of them see a "
                      "change), bytes on the wire both ways:", ""]
            lines += table(["", "bytes / hour", "per poll"], [
                ["full list every time (identity)", fmt(p["fullPollingBytesPerHour"]),
                 fmt(p["fullResponseBytes"])],
                ["ETag + delta + gzip", fmt(p["smartPollingBytesPerHour"]),
                 f"304: {p['notModifiedBytes']:,}; delta: {p['deltaBytes']:,}"],
                ["reduction", f"{p['reductionPercent']} %", "seed claims 60 %"]])
            if rest.get("warning"):
                lines += [f"Warning: {rest['warning']}", ""]
            for name, title in (("notModified", "304"), ("full", "full list")):
                lines += _profile_table(f"Where Sinal's time goes serving the {title} under "
                                        "wrk", wrk.get(name, {}).get("profile"))
    scen = results.get("scenario")
    if scen and "phases" in scen:
        lines += ["## Scenario (seed 9.1, scaled)", "",
                  f"Durations and think times x {scen['options']['time_scale']:.3f}; arrival "
                  f"rates as in the seed; {100 * scen['options']['ws_share']:.0f} % WebSocket "
                  f"users, the rest REST users ({scen.get('rest', NA)}); quotations written at "
                  f"{scen['options']['write_rate']}/s.", ""]
        lines += table(["phase", "s", "arrivals/s", "WS users", "subscribe p95 ms",
                         "REST requests", "REST p95 ms", "server CPU %", "peak RSS MB"], [
            [p["phase"], fmt(p["seconds"]), fmt(p["arrivalRate"], 0), fmt(p["wsUsers"]),
             fmt(p.get("wsConnectMs", {}).get("p95")),
             fmt(sum(p.get("rest", {}).get("statuses", {}).values()) if p.get("rest") else None),
             fmt(p.get("rest", {}).get("latencyMs", {}).get("p95")),
             fmt(p["serverCpuPercent"]), fmt(p["serverPeakRssMb"])]
            for p in scen["phases"]])
        lat = scen.get("dataUpdateLatencyMs", {})
        lines += [f"data_update frames: {scen.get('dataUpdates', 0):,}, latency p50 "
                  f"{fmt(lat.get('p50'), 2)} / p95 {fmt(lat.get('p95'), 2)} / p99 "
                  f"{fmt(lat.get('p99'), 2)} / max {fmt(lat.get('max'), 1)} ms; peak "
                  f"{scen.get('peakConnections', 0):,} concurrent connections; error rate "
                  f"{fmt(scen.get('errorRate'), 5)}; cache hit rate "
                  f"{fmt(scen.get('cacheHitRate'), 3)}.", ""]
    agg = results.get("aggregates")
    if agg and "aggregatesUsPerChange" in agg:
        lines += ["## Aggregates (the dashboard)", "",
                  f"In one process, no socket, no database: {agg['changes']:,} changes of a "
                  f"workflow mix ({agg['requestChanges']:,} of purchase requests) in batches "
                  f"of {agg['options']['batch']}; the aggregates actor applies every change and, "
                  f"with subscribers, flushes after every batch (the node flushes at most every "
                  f"250 ms) to {agg['options']['subscribers']:,} dashboard subscribers in "
                  f"{agg['scopes']} scopes. Baseline: the topic fan-out of the purchase-request "
                  f"changes to {agg['options']['subscribers']:,} subscribers, in the same run.",
                  ""]
        lines += table(["work", "us per change", "/ fan-out baseline"], [
            ["fan-out baseline", fmt(agg["fanoutBaselineUsPerChange"], 2), "1.00"],
            ["aggregates, 0 subscribers", fmt(agg["aggregatesUsPerChange"], 2),
             fmt(agg["ratioAloneToFanout"], 2)],
            [f"aggregates, {agg['options']['subscribers']:,} subscribers, a flush per batch",
             fmt(agg["aggregatesWithSubscribersUsPerChange"], 2),
             fmt(agg["ratioWithSubscribersToFanout"], 2)],
            [f"aggregates, {agg['options']['subscribers']:,} subscribers, a flush per "
             f"{agg['options']['paced_flush']} changes",
             fmt(agg.get("aggregatesPacedUsPerChange"), 2),
             fmt(agg.get("ratioPacedToFanout"), 2)]])
        lines += [f"(Microseconds per change of the log; the baseline is "
                  f"{fmt(agg.get('fanoutUsPerTopicChange'), 2)} us per purchase-request "
                  "change it fanned out.)", ""]
    lines += storm_markdown(results)
    workers = results.get("workers")
    if workers and "error" not in workers:
        lines += ["## Workers and nodes (issue #11)", "", *workers_section(workers)]
    notes = results.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if plot_names:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plot_names] + [""]
    return "\n".join(lines)


def _by_worker(run: dict[str, Any]) -> list[str]:
    """What each process of a Sinal server held (GET /api/supervisor and psutil)."""
    found = run.get("byWorker")
    lines = [f"{run['stack']}: {run['fdLimit']}.", ""] if run.get("fdLimit") else []
    if not found or run.get("workers", 1) < 2:
        return lines
    nodes = ", ".join(f"{node} {fmt(info.get('connections'))}"
                      for node, info in found.get("nodes", {}).items())
    procs = ", ".join(f"pid {p['pid']}{' (parent)' if not p['worker'] else ''} "
                      f"{fmt(p['rssMb'])} MB, {fmt(p['openFiles'])} descriptors"
                      for p in found.get("processes", []))
    return lines + [f"{run['stack']}, connections by worker (its own count): {nodes}; "
                    f"processes: {procs}.", ""]


def _client_sentence(runs: list[dict[str, Any]]) -> str:
    kinds = {p.get("client", "python") for r in runs for p in r.get("phases", [])}
    if kinds == {"compiled"}:
        return ("Load client: the compiled one (bench/loadgen); client CPU is its own "
                "(getrusage, user + system); us/frame = its CPU / data frames received.")
    if kinds == {"python"}:
        return "Load client: the Python one (bench/loadclient.py, --py-client)."
    return ""


def _profile_table(title: str, profile: dict[str, Any] | None, rows: int = 10) -> list[str]:
    if not profile or not profile.get("self"):
        return []
    lines = [f"{title} (py-spy, {profile['samples']} samples; share of samples; a C call "
             "counts for the Python function that made it):", ""]
    return lines + table(["self", "%", "inclusive", "%"], [
        [s["function"], fmt(s["percent"]), i["function"], fmt(i["percent"])]
        for s, i in zip(profile["self"][:rows], profile["inclusive"][:rows], strict=False)])


# --------------------------------------------------------------------------- plots


def plots(results: dict[str, Any], stem: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names: list[str] = []
    fan = results.get("fanout")
    if fan and fan.get("runs"):
        stacks = sorted({r["stack"] for r in fan["runs"]}, reverse=True)  # sinal first
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, phase in zip(axes, ("paced", "burst"), strict=True):
            for stack in stacks:
                for q, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
                    points = [(r["clients"], p["latencyMs"][q]) for r in fan["runs"]
                              if r["stack"] == stack for p in r.get("phases", [])
                              if p["phase"] == phase and p["latencyMs"][q]]
                    if points:
                        xs, ys = zip(*sorted(points), strict=True)
                        ax.plot(xs, ys, style, marker="o", color=STACK_COLORS.get(stack),
                                label=f"{stack} {q}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("subscribers N")
            ax.set_ylabel("commit-to-client latency, ms")
            ax.set_title(f"latency percentiles by N ({phase})")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"{stem.name}-latency.png"
        fig.savefig(stem.parent / name, dpi=110)
        plt.close(fig)
        names.append(name)

        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for stack in stacks:
            for phase, style in (("paced", "--"), ("burst", "-")):
                points = [(r["clients"], p["framesPerSecond"]) for r in fan["runs"]
                          if r["stack"] == stack for p in r.get("phases", [])
                          if p["phase"] == phase]
                if points:
                    xs, ys = zip(*sorted(points), strict=True)
                    ax.plot(xs, ys, style, marker="o", color=STACK_COLORS.get(stack),
                            label=f"{stack} {phase}")
        ax.set_xscale("log")
        ax.set_xlabel("subscribers N")
        ax.set_ylabel("delivered frames/s")
        ax.set_title("fan-out throughput by N")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"{stem.name}-throughput.png"
        fig.savefig(stem.parent / name, dpi=110)
        plt.close(fig)
        names.append(name)
    conns = results.get("connections")
    if conns and conns.get("runs"):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for run in conns["runs"]:
            points = [(s["connections"], s["rssMb"]) for s in run.get("steps", [])]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", color=STACK_COLORS.get(run["stack"]),
                        label=run["stack"])
        ax.axhline(512, color="grey", linestyle=":", label="512 MB target")
        ax.set_xlabel("idle connections (heartbeats on)")
        ax.set_ylabel("server RSS, MB")
        ax.set_title("RSS by connections")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"{stem.name}-rss.png"
        fig.savefig(stem.parent / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def write(results: dict[str, Any], directory: Path) -> Path:
    """Write <stamp>.json, <stamp>.md and the plots; return the markdown's path."""
    directory.mkdir(parents=True, exist_ok=True)
    stem: Path = directory / str(results["stamp"])
    names = plots(results, stem)
    results["plots"] = names
    results["targets"] = targets(results)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = stem.with_suffix(".md")
    md.write_text(markdown(results, names))
    return md


if __name__ == "__main__":  # re-render a run: python -m bench.report bench/results/<stamp>.json
    import sys

    for name in sys.argv[1:]:
        path = Path(name)
        print(write(json.loads(path.read_text()), path.parent))
