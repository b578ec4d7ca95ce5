//! CPU time and memory of processes, from /proc; the server's own counters from /metrics.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

/// A process's CPU time and resident memory at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// User plus system CPU time, seconds.
    pub cpu_s: f64,
    /// User CPU time alone, seconds (the process's own code; system time is the kernel's,
    /// which on loopback includes the receiving side's network stack).
    pub user_s: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error, handled below.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Samples process `pid` (or this process with `None`).
pub fn sample(pid: Option<u32>) -> Option<Sample> {
    let base = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    let rss_kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    let ticks = clock_ticks();
    Some(Sample { cpu_s: (utime + stime) / ticks, user_s: utime / ticks, rss_bytes: rss_kb * 1024 })
}

/// The pid of the local process listening on `addr`'s port, if it can be found (it must be
/// ours to read, e.g. the same user).
pub fn listener_pid(addr: SocketAddr) -> Option<u32> {
    let port = format!("{:04X}", addr.port());
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:PORT; state 0A is LISTEN; the inode is field 9.
            if f.len() > 9 && f[3] == "0A" && f[1].rsplit(':').next() == Some(port.as_str()) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.to_str() == Some(i.as_str()))
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Fetches `GET path` over HTTP (HTTPS for `wss://` targets) and returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = crate::tls::http_stream(addr, Duration::from_secs(5)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    crate::tls::read_to_end(&mut *s, &mut raw).ok()?;
    let out = String::from_utf8(raw).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Sums a Prometheus metric over its label sets.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line.rsplit_once(' ')?;
        let metric = key.split('{').next().unwrap_or(key);
        if metric == name {
            sum += value.parse::<f64>().ok()?;
            found = true;
        }
    }
    found.then_some(sum)
}

/// The number of cores a Tandem server reports in its metrics (one `tandem_driver` line per
/// core names the driver in use).
pub fn metric_cores(text: &str) -> Option<usize> {
    let n = text.lines().filter(|l| l.starts_with("tandem_driver{") && l.ends_with(" 1")).count();
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let s = sample(None).unwrap();
        assert!(s.rss_bytes > 1024 * 1024);
        assert!(s.cpu_s >= 0.0);
        assert!(sample(Some(u32::MAX)).is_none());
    }

    #[test]
    fn finds_the_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(listener_pid(l.local_addr().unwrap()), Some(std::process::id()));
    }

    #[test]
    fn counts_cores_from_driver_lines() {
        let text = "tandem_driver{core=\"0\",driver=\"io_uring\"} 1\ntandem_driver{core=\"0\",driver=\"epoll\"} 0\ntandem_driver{core=\"1\",driver=\"io_uring\"} 0\ntandem_driver{core=\"1\",driver=\"epoll\"} 1\n";
        assert_eq!(metric_cores(text), Some(2));
        assert_eq!(metric_cores("nothing"), None);
    }

    #[test]
    fn sums_metrics() {
        let text = "# HELP x\nx_total{core=\"0\"} 3\nx_total{core=\"1\"} 4\ny 1\n";
        assert_eq!(metric_sum(text, "x_total"), Some(7.0));
        assert_eq!(metric_sum(text, "z"), None);
    }
}
