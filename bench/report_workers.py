"""The markdown of bench/workers.py (and of the `workers` part of `python -m bench`)."""

from __future__ import annotations

from typing import Any

from bench.cells import fmt, table

LABELS = {
    "workers1": "`--workers 1` (one node direct)",
    "workers2": "`--workers 2` (SO_REUSEPORT)",
    "nginx2": "2 nodes behind nginx",
}



def _ratio(ratios: dict[str, Any], config: str, key: str) -> str:
    if config == "workers1":
        return "1.00"
    value = ratios.get(config, {}).get(key)
    return "n/a" if value is None else f"{value:.2f}x"



def section(workers: dict[str, Any]) -> list[str]:
    """The tables (REST 304, fan-out) and how the cores were shared."""
    lines = [f"Placement: {workers.get('placement', 'n/a')}. Ratios are against "
             "`--workers 1` of the same run (for nginx: two nodes through nginx against "
             "one node direct).", ""]
    options = workers.get("options", {})
    rest = workers.get("rest304")
    if rest:
        lines += [f"### REST 304 (wrk, {options.get('wrk_connections')} connections, "
                  f"{options.get('wrk_threads')} threads, {options.get('wrk_seconds')} s "
                  "per configuration)", ""]
        rows = []
        for config, run in rest["runs"].items():
            if "error" in run:
                rows.append([LABELS.get(config, config), run["error"][:90], *[""] * 8])
                continue
            lat = run.get("latencyMs", {})
            rows.append([LABELS.get(config, config), fmt(run.get("requestsPerSecond")),
                         _ratio(rest["ratios"], config, "requestsPerSecond"),
                         fmt(lat.get("p50"), 2), fmt(lat.get("p99"), 2),
                         fmt(run.get("serverCpuPercent")),
                         fmt(run.get("nginxCpuPercent")), fmt(run.get("wrkCpuPercent")),
                         fmt(run.get("otherCpuPercent")),
                         fmt(run.get("serverUsPerRequest"))])
        lines += table(["configuration", "req/s", "ratio", "p50 ms", "p99 ms",
                         "server CPU %", "nginx CPU %", "wrk CPU %", "others' CPU %",
                         "server us/request"],
                        rows)
        lines += ["server us/request = the nodes' CPU over the run / requests; wrk's CPU "
                  "is its own (getrusage of the child); others' CPU: processes outside this "
                  "bench (PostgreSQL's excluded) over the run: another user's load.", ""]
    fan = workers.get("fanout")
    if fan:
        lines += [f"### Fan-out (N = {options.get('clients'):,} subscribers; a paced phase "
                  f"per commit rate, {options.get('paced_seconds'):g} s of writes or "
                  f"{options.get('max_deliveries', 0):,} frames at most)", ""]
        rows = []
        for rate in options.get("rates", ()):
            key = f"{rate:g}"
            for config, run in fan["runs"].items():
                phase = run.get("phases", {}).get(key)
                label = f"{LABELS.get(config, config)} at {key}/s"
                if phase is None:
                    rows.append([label, run.get("error", "not run")[:90], *[""] * 14])
                    continue
                lat = phase["latencyMs"]
                ratio = fan["ratios"].get(key, {})
                rows.append([
                    label, f"{phase['offeredFramesPerSecond']:,}", fmt(phase["commitRate"]),
                    fmt(phase["framesPerSecond"]), _ratio(ratio, config, "framesPerSecond"),
                    f"{100 * (phase['delivered'] or 0):.1f}%", fmt(lat["p50"], 1),
                    fmt(lat["p99"], 1), _ratio(ratio, config, "p99"),
                    fmt(phase["serverCpuPercent"]), fmt(phase.get("serverUsPerFrame"), 2),
                    _ratio(ratio, config, "serverUsPerFrame"),
                    fmt(phase.get("nginxCpuPercent")), fmt(phase["clientCpuPercent"]),
                    fmt(phase.get("postgresCpuPercent")),
                    fmt(phase.get("otherCpuPercent"))])
        lines += table(["configuration", "offered frames/s", "commits/s", "frames/s",
                         "ratio", "delivered", "p50 ms", "p99 ms", "p99 ratio",
                         "server CPU %", "server us/frame", "us/frame ratio", "nginx CPU %",
                         "client CPU %", "postgres CPU %", "others' CPU %"], rows)
        for key, phase in fan["runs"].get("nginx2", {}).get("phases", {}).items():
            both = phase.get("serverAndNginxUsPerFrame")
            if both is not None:
                lines.append(f"At {key} commits/s, with nginx's CPU added, two nodes behind "
                             f"nginx spend {both:.2f} us of CPU per delivered frame.")
        lines += ["", "CPU % is of one core (200 = both cores); server CPU is summed over "
                  "the node processes (a worker's counts for its parent); server us/frame = "
                  "that CPU over the phase / frames delivered; client CPU is the compiled "
                  "load client's (bench.loadgen), postgres CPU the bench database's "
                  "backends'. Others' CPU: processes outside this bench (PostgreSQL's "
                  "excluded) over the window: another user's load. "
                  "frames/s = frames / (last frame received - first commit). "
                  "Latency is commit to the client's receive; when the offered load "
                  "exceeds what the server sends, it is the backlog.", ""]
    return lines


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"# Sinal workers bench, {results['startedAt']}", "",
             f"Machine: {m['cpus']} CPUs ({m['cpuModel']}), {m['memoryMb']:,} MB; load "
             f"average {m['loadAverage']} at the start; other processes used "
             f"{results.get('backgroundCpuPercent')}% CPU (100 = one core) just before; "
             f"{m['postgres']}; {m['wrk']}. Command: `{results['command']}`. Total "
             f"{results.get('seconds', 0):.0f} s.", ""]
    lines += section(results)
    return "\n".join(lines)
