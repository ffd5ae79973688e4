//! A run's result: the report (printed as a table, or as JSON for `scripts/bench_table.py`).

use serde::Serialize;

/// The result of one run, printed as a table or JSON.
#[derive(Serialize, Debug)]
pub struct Report {
    pub url: String,
    pub clients: usize,
    pub connected: u64,
    pub senders: usize,
    pub rate: f64,
    pub duration_secs: f64,
    pub sent: u64,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Messages sent per second over all senders.
    pub sent_per_sec: f64,
    /// Deliveries over what full delivery would be (sent × connected clients); below ~0.99
    /// the servers did not keep up.
    pub delivered_fraction: f64,
    /// With several URLs: deliveries that crossed instances (sender on one, reader on
    /// another) and those that did not.
    pub cross_latency_p50_ms: Option<f64>,
    pub cross_latency_p99_ms: Option<f64>,
    pub local_latency_p99_ms: Option<f64>,
    pub connect_p50_ms: f64,
    pub connect_p99_ms: f64,
    pub connect_max_ms: f64,
    pub handshakes_per_sec: f64,
    pub errors: u64,
    pub closed_by_server: u64,
    /// Refused upgrades by HTTP status ("closed": closed before any answer).
    pub refused: std::collections::BTreeMap<String, u64>,
    /// Which server flags lift those refusals.
    pub hints: Vec<String>,
    /// `--redis-pid`'s CPU over the measurement, in % of one core.
    pub redis_cpu_percent: Option<f64>,
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_ms_per_1k_deliveries: Option<f64>,
    pub server_cpu_percent: Option<f64>,
    /// The load generator's own CPU (this process) per 1k deliveries: on one machine its
    /// reads cost as much kernel time as the server's writes.
    pub generator_cpu_ms_per_1k_deliveries: Option<f64>,
    /// The busiest load-generator thread, in % of a core. Near saturation its own queue
    /// shows up in the latencies, whatever the server does: then add `--threads`.
    pub generator_busiest_thread_percent: Option<f64>,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_kib: Option<u64>,
    pub server_rss_per_client_kib: Option<f64>,
    /// RSS change over the measurement window (a stalled client's backlog shows up here).
    pub server_rss_growth_kib: Option<i64>,
    /// Growth of the kernel's `KernelStack` (/proc/meminfo) per connected client, from
    /// before connecting to connected: what the server's threads cost the kernel (16 KiB of
    /// stack each on x86-64). Machine-wide: run nothing else meanwhile.
    pub kernel_stack_per_client_kib: Option<f64>,
    /// Growth of the kernel's `Slab` per connected client over the same window: socket,
    /// task and file structures. Machine-wide, so it includes the load generator's end of
    /// each loopback connection — the same for every server measured.
    pub kernel_slab_per_client_kib: Option<f64>,
}

/// The human-readable table.
pub fn print_table(r: &Report) {
    let opt = |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |v| format!("{v:.3} {unit}"));
    println!("target                 {}", r.url);
    println!(
        "clients                {} ({} connected), {} senders, rate {}",
        r.clients,
        r.connected,
        r.senders,
        if r.rate > 0.0 { format!("{} msg/s", r.rate) } else { "max".into() }
    );
    println!("measured               {:.1} s", r.duration_secs);
    println!("sent / deliveries      {} / {} ({:.0} deliveries/s)", r.sent, r.deliveries, r.deliveries_per_sec);
    println!("latency p50/p99/max    {:.3} / {:.3} / {:.3} ms", r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms);
    println!(
        "sent/s, delivered      {:.0} msg/s, {:.1} % of sent × connected",
        r.sent_per_sec,
        r.delivered_fraction * 100.0
    );
    if let (Some(p50), Some(p99), Some(local)) =
        (r.cross_latency_p50_ms, r.cross_latency_p99_ms, r.local_latency_p99_ms)
    {
        println!("across instances       p50 {p50:.3} ms, p99 {p99:.3} ms (within one: p99 {local:.3} ms)");
    }
    if r.redis_cpu_percent.is_some() {
        println!("redis CPU              {}", opt(r.redis_cpu_percent, "% of a core"));
    }
    println!("connect p50/p99/max    {:.3} / {:.3} / {:.3} ms", r.connect_p50_ms, r.connect_p99_ms, r.connect_max_ms);
    if r.handshakes_per_sec > 0.0 {
        println!("handshakes/s           {:.0}", r.handshakes_per_sec);
    }
    println!("errors / closed        {} / {}", r.errors, r.closed_by_server);
    if !r.refused.is_empty() {
        let list: Vec<String> = r.refused.iter().map(|(status, n)| format!("{status} ×{n}")).collect();
        println!("refused                {}", list.join(", "));
    }
    for hint in &r.hints {
        println!("hint                   {hint}");
    }
    println!(
        "server CPU             {} ({} per 1k deliveries, {})",
        opt(r.server_cpu_secs, "s"),
        opt(r.server_cpu_ms_per_1k_deliveries, "ms"),
        opt(r.server_cpu_percent, "% of a core")
    );
    println!(
        "load generator CPU     {} per 1k deliveries, busiest thread {}",
        opt(r.generator_cpu_ms_per_1k_deliveries, "ms"),
        opt(r.generator_busiest_thread_percent, "% of a core")
    );
    if r.generator_busiest_thread_percent.is_some_and(|p| p > 50.0) {
        println!(
            "hint                   a load-generator thread is over half busy: its own queue is in these latencies; add --threads"
        );
    }
    println!(
        "server RSS             {} KiB (before {} KiB, {} per client)",
        r.server_rss_kib.map_or("n/a".into(), |v| v.to_string()),
        r.server_rss_before_kib.map_or("n/a".into(), |v| v.to_string()),
        opt(r.server_rss_per_client_kib, "KiB")
    );
    println!(
        "kernel, per client     {} KernelStack + {} Slab (machine-wide, both ends of each connection)",
        opt(r.kernel_stack_per_client_kib, "KiB"),
        opt(r.kernel_slab_per_client_kib, "KiB")
    );
}

/// What a refusal status means for a benchmark, and which threadchat flag lifts it (a load
/// generator's clients all come from 127.0.0.x, which per-address limits are made to stop).
pub(super) fn refusal_hints(refused: &std::collections::BTreeMap<String, u64>) -> Vec<String> {
    refused
        .keys()
        .filter_map(|status| {
            Some(match status.as_str() {
                "429" => "429: over the per-address upgrade rate; start the server with --upgrade-rate 1000000",
                "503" => "503: over a connection cap; raise --max-clients and --max-clients-per-ip (and --max-connections-per-user with JWTs)",
                "401" => "401: the server wants a credential (--token / --jwt-secret)",
                "403" => "403: the Origin is not allowed (--allow-origin)",
                "closed" => "closed without an answer: over --max-handshakes-per-ip (connections still in their handshake from one address), or out of file descriptors",
                _ => return None,
            })
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_come_with_the_flag_that_lifts_them() {
        let refused = [("429".to_string(), 30), ("closed".to_string(), 2)].into_iter().collect();
        let hints = refusal_hints(&refused);
        assert!(hints[0].contains("--upgrade-rate") && hints[1].contains("--max-handshakes-per-ip"), "{hints:?}");
    }
}
