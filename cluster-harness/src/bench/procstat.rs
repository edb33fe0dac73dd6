//! CPU time and peak memory of the processes under test, read from `/proc`.
//!
//! CPU: `utime + stime` (fields 14 and 15 of `/proc/<pid>/stat`, in clock ticks), sampled
//! before and after the measured window and summed over the system's processes. Peak RSS:
//! `VmHWM` of `/proc/<pid>/status` (the process's high-water mark since it started); RSS now:
//! its `VmRSS`.

use anyhow::Context;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, fixed at 100 on Linux for x86
/// and arm64 whatever the kernel's internal HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// `utime + stime` in ticks from the text of `/proc/<pid>/stat`.
pub fn parse_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("no ')' after the command name")?;
    // After the name: field 3 (state) is index 0, so utime (14) is index 11, stime (15) index 12.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("stat has only {} fields after the name", fields.len()))?
            .parse()
            .with_context(|| format!("field {} is not a number", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// `VmHWM` in bytes from the text of `/proc/<pid>/status`.
pub fn parse_vm_hwm(status: &str) -> anyhow::Result<u64> {
    parse_status_kb(status, "VmHWM:")
}

/// A `kB` field (`VmHWM:`, `VmRSS:`) in bytes from the text of `/proc/<pid>/status`.
fn parse_status_kb(status: &str, field: &str) -> anyhow::Result<u64> {
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} line"))?;
    let kb: u64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("bad {field} line {line:?}"))?;
    Ok(kb * 1024)
}

/// CPU seconds used so far by these processes together.
pub fn cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    let mut ticks = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        ticks += parse_cpu_ticks(&text).with_context(|| format!("parse {path}"))?;
    }
    Ok(ticks as f64 / TICKS_PER_SECOND)
}

/// Peak resident memory of each process, in bytes, in the order given.
pub fn peak_rss(pids: &[u32]) -> anyhow::Result<Vec<u64>> {
    pids.iter().map(|pid| status_kb(*pid, "VmHWM:")).collect()
}

/// Resident memory of a process now, in bytes (`VmRSS`).
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    status_kb(pid, "VmRSS:")
}

fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_status_kb(&text, field).with_context(|| format!("parse {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_ticks_with_spaces_in_the_name() {
        let line = "4242 (petkv serve) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 12 0 \
                    98765 123456789 4321 18446744073709551615 1 1 0 0 0 0 0 4096 17000 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_cpu_ticks(line).unwrap(), 325);
    }

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\tpetkv\nVmPeak:\t  900000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30000 kB\n";
        assert_eq!(parse_vm_hwm(status).unwrap(), 40960 * 1024);
        assert!(parse_vm_hwm("Name:\tx\n").is_err());
        assert_eq!(parse_status_kb(status, "VmRSS:").unwrap(), 30000 * 1024);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(&[me]).unwrap() >= 0.0);
        assert!(peak_rss(&[me]).unwrap()[0] > 0);
        assert!(rss(me).unwrap() > 0);
    }
}
