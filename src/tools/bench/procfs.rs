//! What the load generator reads from `/proc`: a process's CPU time and RSS, its own
//! threads' CPU, and the kernel's memory that grows with each connection.

/// The kernel's `KernelStack` and `Slab` from /proc/meminfo, in KiB.
pub fn read_kernel_kib() -> Option<(u64, u64)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.split(':').next() == Some(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("KernelStack")?, field("Slab")?))
}

/// utime + stime of a process, in seconds.
pub fn read_cpu_secs(pid: u32) -> Option<f64> {
    read_cpu_secs_at(&format!("/proc/{pid}/stat"))
}

/// utime + stime from a `stat` file of /proc (a process's or a thread's), in seconds.
fn read_cpu_secs_at(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

/// CPU seconds of each of this process's load-generator threads (`bench-N`), by thread id.
pub(super) fn bench_thread_cpu_secs() -> Vec<(u32, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return vec![] };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
        comm.starts_with("bench-").then_some(())?;
        Some((tid, read_cpu_secs_at(&format!("/proc/self/task/{tid}/stat"))?))
    })
    .collect()
}

/// The most CPU any one thread used between two `bench_thread_cpu_secs` readings.
pub(super) fn busiest_thread_secs(before: &[(u32, f64)], after: &[(u32, f64)]) -> Option<f64> {
    after
        .iter()
        .filter_map(|(tid, end)| before.iter().find(|(t, _)| t == tid).map(|(_, start)| end - start))
        .max_by(f64::total_cmp)
}

/// Resident set size of a process, in KiB.
pub fn read_rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// How many threads a process has.
pub fn read_threads(pid: u32) -> Option<u64> {
    status_field(pid, "Threads:")
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_thread_counts_only_threads_seen_at_both_readings() {
        let before = [(1, 1.0), (2, 5.0)];
        let after = [(1, 4.0), (2, 6.0), (3, 9.0)];
        assert_eq!(busiest_thread_secs(&before, &after), Some(3.0));
        assert_eq!(busiest_thread_secs(&[], &after), None);
        // This test's own thread is not a bench thread; a spawned `bench-` thread is.
        let t = std::thread::Builder::new().name("bench-test".into()).spawn(|| bench_thread_cpu_secs().len()).unwrap();
        assert!(t.join().unwrap() >= 1);
    }
}
