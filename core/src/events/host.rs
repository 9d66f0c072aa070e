//! What a heartbeat says about the worker's machine: its name, load and memory (Linux's `/proc`;
//! absent elsewhere).

/// The machine's name: `/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `localhost`.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The load averages over 1, 5 and 15 minutes.
pub(crate) fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

/// This process's resident memory, in bytes.
pub(crate) fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Linux's pages are 4 KiB on the machines celeriac runs on (x86-64, most arm64 builds).
    Some(pages * 4096)
}
