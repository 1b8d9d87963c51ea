//! What the operating system says about the process's memory, so that a
//! report can put the tracked heap next to the RSS it turned into.

use crate::dump::OsMemory;

/// Reads the current figures; absent ones stay `None`.
pub(crate) fn read() -> OsMemory {
    let mut os = OsMemory::default();
    #[cfg(target_os = "linux")]
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        parse_proc_status(&status, &mut os);
    }
    if os.peak_rss_bytes.is_none() {
        os.peak_rss_bytes = peak_rss_from_getrusage();
    }
    os
}

/// The RSS alone, cheaply (one short read of `/proc/self/statm`), for a
/// logged scope's before and after; `None` where not known.
pub(crate) fn rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: `sysconf` has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        resident_pages.checked_mul(page)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Parses the `Vm*`/`Rss*` lines of Linux's `/proc/self/status`, whose
/// sizes are in kB (KiB).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_proc_status(status: &str, os: &mut OsMemory) {
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key == "Threads" {
            os.threads = value.trim().parse().ok();
            continue;
        }
        let kib = value
            .trim()
            .strip_suffix("kB")
            .and_then(|n| n.trim().parse::<u64>().ok());
        let Some(bytes) = kib.and_then(|k| k.checked_mul(1024)) else {
            continue;
        };
        let field = match key {
            "VmRSS" => &mut os.rss_bytes,
            "RssAnon" => &mut os.rss_anon_bytes,
            "RssFile" => &mut os.rss_file_bytes,
            "RssShmem" => &mut os.rss_shmem_bytes,
            "VmSize" => &mut os.virtual_bytes,
            "VmHWM" => &mut os.peak_rss_bytes,
            _ => continue,
        };
        *field = Some(bytes);
    }
}

#[cfg(unix)]
fn peak_rss_from_getrusage() -> Option<u64> {
    // SAFETY: `rusage` is plain data, valid when zeroed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage` for the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let max_rss = u64::try_from(usage.ru_maxrss).ok()?;
    // Linux and the BSDs report KiB; macOS reports bytes.
    if cfg!(target_os = "macos") {
        Some(max_rss)
    } else {
        max_rss.checked_mul(1024)
    }
}

#[cfg(not(unix))]
fn peak_rss_from_getrusage() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_linux_status_sizes() {
        let status =
            "Name:\tworker\nVmPeak:\t  20000 kB\nVmSize:\t   8192 kB\nVmHWM:\t    4096 kB\n\
                      VmRSS:\t    2048 kB\nRssAnon:\t    1024 kB\nRssFile:\t     1000 kB\n\
                      RssShmem:\t      24 kB\nThreads:\t1\n";
        let mut os = OsMemory::default();
        parse_proc_status(status, &mut os);
        assert_eq!(os.rss_bytes, Some(2048 * 1024));
        assert_eq!(os.rss_anon_bytes, Some(1024 * 1024));
        assert_eq!(os.rss_file_bytes, Some(1000 * 1024));
        assert_eq!(os.rss_shmem_bytes, Some(24 * 1024));
        assert_eq!(os.virtual_bytes, Some(8192 * 1024));
        assert_eq!(os.peak_rss_bytes, Some(4096 * 1024));
        assert_eq!(os.threads, Some(1));
    }

    #[test]
    fn reads_this_process() {
        let os = read();
        if cfg!(target_os = "linux") {
            let rss = os.rss_bytes.expect("Linux reports VmRSS");
            assert!(rss > 0);
            assert!(os.virtual_bytes.expect("Linux reports VmSize") >= rss);
            assert!(os.peak_rss_bytes.expect("Linux reports VmHWM") >= rss);
            assert!(rss_bytes().expect("Linux reports statm") > 0);
        }
    }
}
