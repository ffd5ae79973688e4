#!/usr/bin/env python3
"""Turns the JSON reports of scripts/bench.sh into a Markdown table of ratios.

Usage: bench_table.py DIR   (files named SCENARIO-SERVER-ROUND.json)
Medians are taken over rounds. Each ratio is threadchat / that reference. A target names
the reference it is measured against; "best" is whichever peer did best. "floor" is
scripts/reference/floor: the least server the kernel allows for the same chat (in scenario 3,
the thread floor: a thread per connection parked in read() with a 16 KiB stack).
"""
import json
import statistics

REFERENCES = ("node", "gorilla", "axum", "floor")
# The floor is not a peer: "best" means the best peer.
PEERS = ("node", "gorilla", "axum")
import sys
from pathlib import Path


def load(directory):
    runs = {}
    for f in sorted(Path(directory).glob("*.json")):
        scenario, server, _round = f.stem.rsplit("-", 2)
        runs.setdefault((scenario, server), []).append(json.loads(f.read_text()))
    return runs


def median(runs, scenario, server, key):
    values = [r[key] for r in runs.get((scenario, server), []) if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=3):
    if v is None:
        return "n/a"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}" if isinstance(v, float) else f"{v:,}"


def cluster(directory):
    """scripts/bench.sh cluster: the latency table and the rate sweep."""
    lat = {}
    for f in sorted(Path(directory).glob("cluster-latency-*.json")):
        instances = f.stem.split("-")[2]
        lat.setdefault(instances, []).append(json.loads(f.read_text()))
    med = lambda reports, key: statistics.median([r[key] for r in reports if r.get(key) is not None] or [None]) \
        if any(r.get(key) is not None for r in reports) else None
    print("1,000 clients x 100 msg/s (median over rounds)\n")
    print("| | p50 ms | p99 ms | cross-instance p99 ms | same-instance p99 ms | servers' CPU % | Redis CPU % |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for instances, label in (("1", "one instance, no Redis"), ("3", "three instances on Redis")):
        r = lat.get(instances, [])
        print(f"| {label} | " + " | ".join(fmt(med(r, k)) for k in (
            "latency_p50_ms", "latency_p99_ms", "cross_latency_p99_ms", "local_latency_p99_ms",
            "server_cpu_percent", "redis_cpu_percent")) + " |")
    rates = []
    for f in Path(directory).glob("cluster-rate-*.json"):
        rates.append((int(f.stem.rsplit("-", 1)[1]), json.loads(f.read_text())))
    rates.sort(key=lambda x: x[0])
    print("\nThe log's rate: 9 clients (3 per instance), all sending\n")
    print("| asked msg/s | sent msg/s | delivered | p99 ms | cross p99 ms | servers' CPU % | Redis CPU % | sustained |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    best = None
    for rate, r in rates:
        ok = r["latency_p99_ms"] < 50 and r["delivered_fraction"] >= 0.99 and r["sent_per_sec"] >= 0.95 * rate
        if ok:
            best = r["sent_per_sec"]
        print(f"| {rate:,} | {fmt(r['sent_per_sec'])} | {r['delivered_fraction'] * 100:.1f} % | {fmt(r['latency_p99_ms'])} "
              f"| {fmt(r.get('cross_latency_p99_ms'))} | {fmt(r.get('server_cpu_percent'))} "
              f"| {fmt(r.get('redis_cpu_percent'))} | {'yes' if ok else 'no'} |")
    print(f"\nhighest rate sustained (p99 < 50 ms, ≥ 99 % delivered): {fmt(best) if best else 'none'} msg/s")


def main():
    if sys.argv[1] == "--cluster":
        return cluster(sys.argv[2])
    runs = load(sys.argv[1])
    rows = []

    present = [r for r in REFERENCES if any(s == r for (_, s) in runs)]

    def row(label, scenario, key, target=None, lower_is_better=True, scenario_node=None, against="node"):
        """target: the ratio to meet against `against` (a reference, or "best")."""
        tc = median(runs, scenario, "threadchat", key)
        refs = {r: median(runs, scenario_node or scenario, r, key) for r in present}
        ratios = {r: tc / v if tc is not None and v not in (None, 0) else None for r, v in refs.items()}
        verdict = ""
        if against == "best":
            known = {r: v for r, v in refs.items() if v is not None and r in PEERS}
            best = (min if lower_is_better else max)(known, key=known.get) if known else None
            ratio, name = (ratios[best], f"best: {best}") if best else (None, "best")
        else:
            ratio, name = ratios.get(against), against
        if target is not None and ratio is not None:
            ok = ratio <= target if lower_is_better else ratio >= target
            verdict = ("met" if ok else "MISSED") + f" ({'≤' if lower_is_better else '≥'} {target}× {name}: {ratio:.2f}×)"
        cells = [fmt(tc)] + [fmt(refs[r]) for r in present]
        cells += [fmt(ratios[r], 2) + "×" if ratios[r] is not None else "n/a" for r in present]
        rows.append((label, *cells, verdict))

    if ("1-fanout", "threadchat") in runs:
        row("1 fan-out: server CPU ms per 1k deliveries", "1-fanout", "server_cpu_ms_per_1k_deliveries", 0.75,
            against="gorilla")
        row("1 fan-out: deliveries/s", "1-fanout", "deliveries_per_sec", None, False)
    if ("2-latency", "threadchat") in runs:
        row("2 latency: p50 ms", "2-latency", "latency_p50_ms")
        row("2 latency: p99 ms", "2-latency", "latency_p99_ms", 0.5, against="best")
        row("2 latency: server CPU % of a core", "2-latency", "server_cpu_percent")
        row("2 latency: load generator's busiest thread, % of a core", "2-latency", "generator_busiest_thread_percent")
    if ("2-latency_2gen", "threadchat") in runs:
        row("2 latency, 2 load-generator threads: p50 ms", "2-latency_2gen", "latency_p50_ms")
        row("2 latency, 2 load-generator threads: p99 ms", "2-latency_2gen", "latency_p99_ms", 0.5, against="best")
        row("2 latency, 2 load-generator threads: p99 ms, against the floor", "2-latency_2gen", "latency_p99_ms",
            1.3, against="floor")
        row("2 latency, 2 load-generator threads: server CPU ms per 1k deliveries", "2-latency_2gen",
            "server_cpu_ms_per_1k_deliveries")
        row("2 latency, 2 load-generator threads: generator CPU ms per 1k deliveries", "2-latency_2gen",
            "generator_cpu_ms_per_1k_deliveries")
    if ("3-idle", "threadchat") in runs:
        row("3 idle: clients connected", "3-idle", "connected", 1.0, False)
        row("3 idle: RSS per client KiB", "3-idle", "server_rss_per_client_kib", 2.0)
        row("3 idle: RSS per client KiB, threadchat --join-notice-limit 0", "3-idle_nonotice",
            "server_rss_per_client_kib", 2.0, scenario_node="3-idle")
        # The full bill of an idle client: the process's RSS, plus what the kernel holds for
        # it (machine-wide deltas: a thread's stack; sockets and task structures in Slab).
        row("3 quiet: RSS per client KiB", "3-quiet", "server_rss_per_client_kib")
        row("3 quiet: kernel stack per client KiB", "3-quiet", "kernel_stack_per_client_kib")
        row("3 quiet: kernel slab per client KiB (both ends)", "3-quiet", "kernel_slab_per_client_kib")
        for r in [r for s in ("threadchat", *REFERENCES) for r in runs.get(("3-quiet", s), [])]:
            parts = [r.get(k) for k in ("server_rss_per_client_kib", "kernel_stack_per_client_kib",
                                         "kernel_slab_per_client_kib")]
            r["total_per_client_kib"] = sum(parts) if None not in parts else None
        row("3 quiet: total per client KiB (RSS + kernel)", "3-quiet", "total_per_client_kib", 1.15, against="floor")
        row("3 idle: server CPU % at 1 msg/s (10k deliveries/s)", "3-idle", "server_cpu_percent")
        row("3 idle: server CPU % with no messages", "3-quiet", "server_cpu_percent")
    if ("4-base", "threadchat") in runs:
        row("4 3.8KB msgs, no stall: p99 ms", "4-base", "latency_p99_ms")
        row("4 3.8KB msgs, one stalled client: p99 ms", "4-stalled", "latency_p99_ms")
        row("4 stalled: server RSS growth KiB", "4-stalled", "server_rss_growth_kib")
        row("4 stalled: clients closed by the server", "4-stalled", "closed_by_server")
    if ("5-handshakes", "threadchat") in runs:
        row("5 handshakes/s (threadchat /echo: bare upgrade)", "5-handshakes", "handshakes_per_sec", 1.0, False,
            against="axum")
        row("5 handshake p99 ms (threadchat /echo)", "5-handshakes", "connect_p99_ms")
        row("5 handshakes/s (threadchat /ws: + join/leave to 63 others)", "5-handshakes_ws", "handshakes_per_sec",
            None, False, scenario_node="5-handshakes")
        ws, bare = (median(runs, s, "threadchat", "handshakes_per_sec") for s in ("5-handshakes_ws", "5-handshakes"))
        if ws and bare:
            verdict = ("met" if ws / bare >= 0.8 else "MISSED") + f" (≥ 0.8× threadchat /echo: {ws / bare:.2f}×)"
            rows.append(("5 handshakes/s, /ws over /echo", f"{ws / bare:.2f}×", *[""] * (2 * len(present)), verdict))

    if ("storm", "threadchat") in runs:
        row("storm: seconds until all 10,000 are back", "storm", "reconnect_secs")
        row("storm: seconds until all have every missed message (threadchat: ?resume=)", "storm",
            "caught_up_secs")
        row("storm: messages missed after the resume", "storm", "missed")
        row("storm: messages duplicated after the resume", "storm", "duplicates")
        row("storm: server's peak threads", "storm", "server_threads_peak")
        row("storm: server's peak RSS KiB", "storm", "server_rss_peak_kib")

    print("| metric | threadchat | " + " | ".join(present) + " | " + " | ".join(f"÷ {r}" for r in present) + " | target |")
    print("|---|" + "---:|" * (1 + 2 * len(present)) + "---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    for server in ("threadchat", *present):
        for (scenario, s), reports in sorted(runs.items()):
            if s == server and any(r.get("errors") for r in reports):
                print(f"\nnote: {server} {scenario}: {reports[0]['errors']} client errors")
            if s == server and any(r.get("closed_by_server") for r in reports) and scenario != "4-stalled":
                print(f"\nnote: {server} {scenario}: {reports[0]['closed_by_server']} clients closed by the server")

if __name__ == "__main__":
    main()
