//! The agent process's own resources, from `/proc/self`: what every
//! Prometheus client library exports as `process_*`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// The soft RLIMIT_NOFILE.
    pub max_fds: Option<u64>,
    pub threads: u64,
}

/// Clock ticks per second, as `/proc/PID/stat` counts CPU time.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as f64 } else { 100.0 }
}

/// The fields of `/proc/PID/stat` after the command (which may hold spaces
/// and parentheses): field 3 (`state`) is index 0.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// Parses `/proc/self/stat` and `/proc/self/status`.
fn parse(stat: &str, status: &str) -> ProcessStats {
    let f = stat_fields(stat);
    let field = |n: usize| -> u64 { f.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let kib = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    ProcessStats {
        // utime (14) + stime (15), in clock ticks.
        cpu_seconds: (field(14) + field(15)) as f64 / ticks_per_second(),
        resident_bytes: kib("VmRSS:") * 1024,
        virtual_bytes: kib("VmSize:") * 1024,
        threads: field(20),
        open_fds: 0,
        max_fds: None,
    }
}

/// Reads the agent's own resources now; `None` where `/proc` is missing.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mut stats = parse(&stat, &status);
    stats.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY
    {
        stats.max_fds = Some(limit.rlim_cur);
    }
    Some(stats)
}

/// When this process started, from its start time in clock ticks after
/// boot (`/proc/self/stat` field 22) and the boot time (`/proc/stat`).
pub fn start_time() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks: f64 = stat_fields(&stat).get(22 - 3)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(
        UNIX_EPOCH
            + Duration::from_secs(boot)
            + Duration::from_secs_f64(ticks / ticks_per_second()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_command_holding_spaces_and_parens() {
        let stat = "4242 (coral (agent) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 1000000 2000 18446744073709551615";
        let status = "Name:\tcoral-agent\nVmSize:\t  20480 kB\nVmRSS:\t    1024 kB\n";
        let s = parse(stat, status);
        assert_eq!(s.cpu_seconds, 300.0 / ticks_per_second());
        assert_eq!(s.threads, 7);
        assert_eq!(s.resident_bytes, 1024 * 1024);
        assert_eq!(s.virtual_bytes, 20480 * 1024);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let s = read().unwrap();
        assert!(
            s.resident_bytes > 0 && s.open_fds > 0 && s.threads > 0,
            "{s:?}"
        );
        let started = start_time().unwrap();
        assert!(started <= SystemTime::now());
        assert!(SystemTime::now().duration_since(started).unwrap() < Duration::from_secs(3600));
    }
}
