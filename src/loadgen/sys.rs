//! What the kernel says about a run: this process's CPU time (getrusage),
//! the machine's busy time (/proc/stat), another process's CPU time and
//! memory (/proc/PID/stat, /proc/PID/status) and TCP socket memory
//! (/proc/net/sockstat). Linux only; reads files, changes nothing.

use std::io;
use std::time::Duration;

/// CPU time (user plus system) this process has used so far.
pub fn own_cpu() -> io::Result<Duration> {
    // SAFETY: getrusage only writes the struct it is given, which is plain
    // old data and valid when zeroed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: see above; the pointer is to a live, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// The machine's CPU counters, in clock ticks summed over all CPUs.
#[derive(Clone, Copy, Debug)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    pub fn read() -> io::Result<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .ok_or_else(|| bad("/proc/stat has no cpu line"))?;
        // user nice system idle iowait irq softirq steal ...; guest time is
        // already counted in user, so the first eight are the total.
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let total: u64 = fields.iter().sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Ok(MachineCpu {
            busy: total - idle,
            total,
        })
    }

    /// Percent of all CPUs' time that was busy between `self` and `later`:
    /// 100 means every core was busy the whole time.
    pub fn busy_percent_until(&self, later: &MachineCpu) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * later.busy.saturating_sub(self.busy) as f64 / total as f64
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// User plus system CPU time of process `pid` so far (10 ms resolution).
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces; count fields
    // from after its closing one. utime and stime are fields 14 and 15.
    let rest = stat
        .rfind(')')
        .and_then(|at| stat.get(at + 2..))
        .ok_or_else(|| bad("unexpected /proc/PID/stat format"))?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut tick = || -> io::Result<u64> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad("unexpected /proc/PID/stat format"))
    };
    let ticks = tick()? + tick()?;
    let hz = clock_ticks_per_sec();
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// A `kB` field of /proc/PID/status, such as `VmRSS` or `VmHWM`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| bad("field missing from /proc/PID/status"))
}

/// The TCP line of /proc/net/sockstat: sockets in use and the pages of
/// memory their buffers hold, machine-wide.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpSockets {
    pub in_use: u64,
    pub mem_pages: u64,
}

impl TcpSockets {
    pub fn read() -> io::Result<TcpSockets> {
        let text = std::fs::read_to_string("/proc/net/sockstat")?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("TCP:"))
            .ok_or_else(|| bad("/proc/net/sockstat has no TCP line"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| {
            words
                .iter()
                .position(|w| *w == name)
                .and_then(|i| words.get(i + 1)?.parse().ok())
                .unwrap_or(0)
        };
        Ok(TcpSockets {
            in_use: field("inuse"),
            mem_pages: field("mem"),
        })
    }
}

/// Bytes in one page of memory, as sockstat counts it.
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_machine() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmRSS").unwrap() > 0);
        assert!(status_kib(pid, "VmHWM").unwrap() > 0);
        process_cpu(pid).unwrap();
        own_cpu().unwrap();
        let a = MachineCpu::read().unwrap();
        let b = MachineCpu::read().unwrap();
        assert!((0.0..=100.0).contains(&a.busy_percent_until(&b)));
        TcpSockets::read().unwrap();
        assert!(status_kib(pid, "NoSuchField").is_err());
    }
}
