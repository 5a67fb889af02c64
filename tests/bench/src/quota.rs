//! Lambda's share of a CPU: Lambda allots CPU in proportion to memory, a whole vCPU at 1,769 MB,
//! so a 128 MB function gets about 7 % of one. A process started here runs in a cgroup whose CFS
//! quota is that share (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`); it needs a writable cgroup
//! file system (root on Linux).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bootstrap::BoxError;

/// Memory at which Lambda gives a whole vCPU.
pub const FULL_VCPU_MB: u32 = 1_769;
/// The CFS period: the quota is spent within each 100 ms, as Linux does by default.
const PERIOD_US: u64 = 100_000;

/// A cgroup limiting CPU to the share of `memory_mb`; removed when dropped.
pub struct CpuQuota {
    pub memory_mb: u32,
    /// Its directories: the CPU controller's, and the accounting's where that is apart (v1).
    dirs: Vec<PathBuf>,
    usage: Option<Usage>,
}

impl CpuQuota {
    /// The share of one CPU Lambda gives `memory_mb`.
    pub fn share(memory_mb: u32) -> f64 {
        (f64::from(memory_mb) / f64::from(FULL_VCPU_MB)).min(1.0)
    }

    /// A new group (named after `label`) with the share of `memory_mb`, its whole quota unspent.
    pub fn for_memory_as(memory_mb: u32, label: &str) -> Result<Self, BoxError> {
        static GROUPS: AtomicU64 = AtomicU64::new(0);
        let quota_us = (Self::share(memory_mb) * PERIOD_US as f64).round() as u64;
        let number = GROUPS.fetch_add(1, Ordering::Relaxed);
        let name = format!("saas-bench-{label}-{memory_mb}mb-{}-{number}", std::process::id());
        let unified = Path::new("/sys/fs/cgroup");
        let mut dirs = Vec::new();
        let usage = if unified.join("cgroup.controllers").exists() {
            let dir = unified.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| cannot(&dir, e))?;
            write(&dir.join("cpu.max"), &format!("{quota_us} {PERIOD_US}"))?;
            dirs.push(dir.clone());
            Some(Usage::Unified(dir.join("cpu.stat")))
        } else {
            let dir = unified.join("cpu").join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| cannot(&dir, e))?;
            write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota_us.to_string())?;
            dirs.push(dir);
            // Version 1 counts CPU time in a hierarchy of its own (where mounted apart).
            let accounting = unified.join("cpuacct").join(&name);
            match std::fs::create_dir_all(&accounting) {
                Ok(()) if accounting.join("cpuacct.usage").exists() => {
                    dirs.push(accounting.clone());
                    Some(Usage::Accounting(accounting.join("cpuacct.usage")))
                }
                Ok(()) => {
                    let _ = std::fs::remove_dir(&accounting);
                    None
                }
                Err(_) => None,
            }
        };
        Ok(Self { memory_mb, dirs, usage })
    }

    /// `program` run inside the group from its first instruction: a shell moves itself into the
    /// group, then becomes the program (`exec`).
    pub fn command(&self, program: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg("for procs do echo $$ > \"$procs\" || exit 1; done; exec \"$0\"")
            .arg(program)
            .args(self.dirs.iter().map(|dir| dir.join("cgroup.procs")));
        command
    }

    /// The CPU time its processes have used so far (ms), where the cgroup file system counts it.
    pub fn cpu_used_ms(&self) -> Option<f64> {
        match self.usage.as_ref()? {
            Usage::Unified(stat) => {
                let text = std::fs::read_to_string(stat).ok()?;
                let line = text.lines().find(|l| l.starts_with("usage_usec "))?;
                line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|us| us / 1000.0)
            }
            Usage::Accounting(usage) => {
                let ns: f64 = std::fs::read_to_string(usage).ok()?.trim().parse().ok()?;
                Some(ns / 1_000_000.0)
            }
        }
    }
}

/// Where a group's CPU time is counted.
enum Usage {
    /// cgroup v2: `usage_usec` in `cpu.stat`.
    Unified(PathBuf),
    /// cgroup v1: `cpuacct.usage`, nanoseconds.
    Accounting(PathBuf),
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // Empty by then (its processes were killed); a group still busy is left behind.
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), BoxError> {
    std::fs::write(path, value).map_err(|e| cannot(path, e))
}

fn cannot(path: &Path, error: std::io::Error) -> BoxError {
    format!(
        "CPU quota: cannot write {} ({error}); the Lambda-like runs need a writable cgroup file system (root on Linux)",
        path.display()
    )
    .into()
}
