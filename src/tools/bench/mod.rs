//! `threadchat bench`: a load generator for any server that broadcasts chat text.
//!
//! It simulates many clients with non-blocking sockets on a few threads (mio/epoll), so the
//! generator is not the bottleneck. Each sent message carries `tcb:<sender>:<nanos>` in its
//! text; any frame that contains that marker is a delivery, and its latency is measured from
//! the nanosecond timestamp (same process, same clock). That works for threadchat (which
//! wraps the text in JSON) and for a tutorial-style server that rebroadcasts raw frames.
//!
//! Given the server's pid, it also reads the server's CPU time and RSS from `/proc`.

mod client;
mod frames;
pub mod procfs;
mod report;
pub mod storm;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use report::{Report, print_table};

use crate::config::BenchArgs;
use client::{parse_url, run_thread};
use procfs::{bench_thread_cpu_secs, busiest_thread_secs, read_cpu_secs, read_kernel_kib, read_rss_kib};
use report::refusal_hints;

/// Shared between the bench threads: start/stop of the measurement window.
struct Clock {
    origin: Instant,
    measuring: AtomicBool,
    stop: AtomicBool,
    connected: AtomicU64,
    deliveries: AtomicU64,
    /// How many URLs: a sender's instance is its index mod this.
    instances: usize,
}

impl Clock {
    fn nanos(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

#[derive(Default)]
struct ThreadStats {
    deliveries: u64,
    sent: u64,
    latencies_us: Vec<u32>,
    /// With several URLs: the latencies of deliveries from a sender on another instance.
    cross_us: Vec<u32>,
    connect_us: Vec<u32>,
    errors: u64,
    closed_by_server: u64,
    handshakes: u64,
    /// Upgrades refused, by HTTP status (0: closed before any answer).
    refused: std::collections::BTreeMap<u16, u64>,
}

pub fn run(args: &BenchArgs) -> Result<Report, String> {
    let targets = args.urls.iter().map(|u| parse_url(u)).collect::<Result<Vec<_>, _>>()?;
    let pids = &args.server_pid;
    // Summed over the server processes; None without any, or if one cannot be read.
    let rss = || pids.iter().map(|&p| read_rss_kib(p)).sum::<Option<u64>>().filter(|_| !pids.is_empty());
    let cpu_now = || pids.iter().map(|&p| read_cpu_secs(p)).sum::<Option<f64>>().filter(|_| !pids.is_empty());
    let threads = args.threads.clamp(1, 64);
    let clock = Arc::new(Clock {
        origin: Instant::now(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        connected: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        instances: targets.len(),
    });
    let rss_before = rss();
    let kernel_before = read_kernel_kib();

    let mut handles = vec![];
    for t in 0..threads {
        let indices: Vec<usize> = (0..args.clients).filter(|i| i % threads == t).collect();
        let args = args.clone();
        let clock = Arc::clone(&clock);
        let targets = targets.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn(move || run_thread(&args, &targets, indices, &clock))
                .map_err(|e| e.to_string())?,
        );
    }

    // Connect phase: wait until everyone is connected (or the connect timeout).
    let connect_deadline = Instant::now() + Duration::from_secs(args.connect_timeout_secs);
    let expected = if args.handshakes { 0 } else { args.clients as u64 };
    let mut last_progress = Instant::now();
    while clock.connected.load(Ordering::Relaxed) < expected && Instant::now() < connect_deadline {
        std::thread::sleep(Duration::from_millis(20));
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!("bench: connecting… {}/{}", clock.connected.load(Ordering::Relaxed), expected);
        }
    }
    let connected = clock.connected.load(Ordering::Relaxed);
    if connected < expected {
        eprintln!("bench: only {connected} of {expected} clients connected; measuring anyway");
    }
    std::thread::sleep(Duration::from_secs_f64(args.warmup_secs));

    let rss_connected = rss();
    let kernel_connected = read_kernel_kib();
    let cpu_start = cpu_now();
    let generator_start = read_cpu_secs(std::process::id());
    let threads_start = bench_thread_cpu_secs();
    let redis_start = args.redis_pid.and_then(read_cpu_secs);
    clock.measuring.store(true, Ordering::Release);
    let start = Instant::now();
    let duration = Duration::from_secs_f64(args.duration_secs);
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(100).min(duration.saturating_sub(start.elapsed())));
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            let d = clock.deliveries.load(Ordering::Relaxed);
            eprintln!("bench: {secs:.0}s, {d} deliveries ({:.0}/s)", d as f64 / secs);
        }
    }
    clock.measuring.store(false, Ordering::Release);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_end = cpu_now();
    let generator_end = read_cpu_secs(std::process::id());
    let busiest = busiest_thread_secs(&threads_start, &bench_thread_cpu_secs());
    let redis_end = args.redis_pid.and_then(read_cpu_secs);
    let rss_end = rss();
    clock.stop.store(true, Ordering::Release);

    let mut total = ThreadStats::default();
    for h in handles {
        let s = h.join().map_err(|_| "a bench thread panicked".to_string())??;
        total.deliveries += s.deliveries;
        total.sent += s.sent;
        total.latencies_us.extend(s.latencies_us);
        total.cross_us.extend(s.cross_us);
        total.connect_us.extend(s.connect_us);
        total.errors += s.errors;
        total.closed_by_server += s.closed_by_server;
        total.handshakes += s.handshakes;
        for (status, n) in s.refused {
            *total.refused.entry(status).or_default() += n;
        }
    }
    let answered: u64 = total.refused.values().sum();
    let mut refused: std::collections::BTreeMap<String, u64> =
        total.refused.iter().map(|(status, n)| (status.to_string(), *n)).collect();
    if total.errors > answered {
        refused.insert("closed".into(), total.errors - answered);
    }
    let hints = refusal_hints(&refused);
    total.latencies_us.sort_unstable();
    total.cross_us.sort_unstable();
    let clustered = targets.len() > 1;
    // Local deliveries, from the difference of the sorted lists (the cross ones are a
    // subset of all).
    let local_us = clustered.then(|| sorted_difference(&total.latencies_us, &total.cross_us));
    total.connect_us.sort_unstable();
    let cpu = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(Report {
        url: args.urls.join(" "),
        clients: args.clients,
        connected,
        senders: args.senders,
        rate: args.rate,
        duration_secs: elapsed,
        sent: total.sent,
        deliveries: total.deliveries,
        deliveries_per_sec: total.deliveries as f64 / elapsed,
        latency_p50_ms: percentile_ms(&total.latencies_us, 0.50),
        latency_p99_ms: percentile_ms(&total.latencies_us, 0.99),
        latency_max_ms: total.latencies_us.last().map_or(0.0, |&us| us as f64 / 1000.0),
        sent_per_sec: total.sent as f64 / elapsed,
        delivered_fraction: if total.sent > 0 && connected > 0 {
            total.deliveries as f64 / (total.sent as f64 * connected as f64)
        } else {
            0.0
        },
        cross_latency_p50_ms: clustered.then(|| percentile_ms(&total.cross_us, 0.50)),
        cross_latency_p99_ms: clustered.then(|| percentile_ms(&total.cross_us, 0.99)),
        local_latency_p99_ms: local_us.as_deref().map(|l| percentile_ms(l, 0.99)),
        connect_p50_ms: percentile_ms(&total.connect_us, 0.50),
        connect_p99_ms: percentile_ms(&total.connect_us, 0.99),
        connect_max_ms: total.connect_us.last().map_or(0.0, |&us| us as f64 / 1000.0),
        handshakes_per_sec: total.handshakes as f64 / elapsed,
        errors: total.errors,
        closed_by_server: total.closed_by_server,
        refused,
        hints,
        redis_cpu_percent: match (redis_start, redis_end) {
            (Some(a), Some(b)) => Some((b - a) * 100.0 / elapsed),
            _ => None,
        },
        server_cpu_secs: cpu,
        server_cpu_ms_per_1k_deliveries: cpu
            .filter(|_| total.deliveries > 0)
            .map(|c| c * 1000.0 / (total.deliveries as f64 / 1000.0)),
        server_cpu_percent: cpu.map(|c| c * 100.0 / elapsed),
        generator_cpu_ms_per_1k_deliveries: match (generator_start, generator_end) {
            (Some(a), Some(b)) if total.deliveries > 0 => Some((b - a) * 1000.0 / (total.deliveries as f64 / 1000.0)),
            _ => None,
        },
        generator_busiest_thread_percent: busiest.map(|c| c * 100.0 / elapsed),
        server_rss_before_kib: rss_before,
        server_rss_kib: rss_end,
        server_rss_per_client_kib: match (rss_before, rss_connected) {
            (Some(a), Some(b)) if connected > 0 => Some((b.saturating_sub(a)) as f64 / connected as f64),
            _ => None,
        },
        server_rss_growth_kib: match (rss_connected, rss_end) {
            (Some(a), Some(b)) => Some(b as i64 - a as i64),
            _ => None,
        },
        kernel_stack_per_client_kib: per_client(kernel_before.map(|k| k.0), kernel_connected.map(|k| k.0), connected),
        kernel_slab_per_client_kib: per_client(kernel_before.map(|k| k.1), kernel_connected.map(|k| k.1), connected),
    })
}

fn per_client(before: Option<u64>, after: Option<u64>, clients: u64) -> Option<f64> {
    match (before, after) {
        (Some(a), Some(b)) if clients > 0 => Some((b as f64 - a as f64) / clients as f64),
        _ => None,
    }
}

/// The elements of sorted `all` minus those of sorted `some` (a sub-multiset of it).
fn sorted_difference(all: &[u32], some: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(all.len().saturating_sub(some.len()));
    let mut j = 0;
    for &x in all {
        if j < some.len() && some[j] == x {
            j += 1;
        } else {
            out.push(x);
        }
    }
    out
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[idx] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), 51.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
