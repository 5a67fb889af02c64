//! Lambda's share of a CPU: Lambda allots CPU in proportion to memory, a whole vCPU at 1,769 MB,
//! so a 128 MB function gets about 7 % of one. A process started here runs in a cgroup whose CFS
//! quota is that share (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`); it needs a writable cgroup
//! file system (root on Linux).

use std::path::{Path, PathBuf};

use crate::bootstrap::BoxError;

/// Memory at which Lambda gives a whole vCPU.
pub const FULL_VCPU_MB: u32 = 1_769;
/// The CFS period: the quota is spent within each 100 ms, as Linux does by default.
const PERIOD_US: u64 = 100_000;

/// A cgroup limiting CPU to the share of `memory_mb`; removed when dropped.
pub struct CpuQuota {
    pub memory_mb: u32,
    /// The file a process's id is written to, to move it into the group.
    procs: PathBuf,
    dir: PathBuf,
}

impl CpuQuota {
    /// The share of one CPU Lambda gives `memory_mb`.
    pub fn share(memory_mb: u32) -> f64 {
        (f64::from(memory_mb) / f64::from(FULL_VCPU_MB)).min(1.0)
    }

    pub fn for_memory(memory_mb: u32) -> Result<Self, BoxError> {
        Self::for_memory_as(memory_mb, "function")
    }

    /// A group of its own (`label`) with the share of `memory_mb`: the floor's, beside the function's.
    pub fn for_memory_as(memory_mb: u32, label: &str) -> Result<Self, BoxError> {
        let quota_us = (Self::share(memory_mb) * PERIOD_US as f64).round() as u64;
        let name = format!("saas-bench-{label}-{memory_mb}mb-{}", std::process::id());
        let unified = Path::new("/sys/fs/cgroup");
        let (dir, procs) = if unified.join("cgroup.controllers").exists() {
            let dir = unified.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| cannot(&dir, e))?;
            write(&dir.join("cpu.max"), &format!("{quota_us} {PERIOD_US}"))?;
            (dir.clone(), dir.join("cgroup.procs"))
        } else {
            let dir = unified.join("cpu").join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| cannot(&dir, e))?;
            write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota_us.to_string())?;
            (dir.clone(), dir.join("cgroup.procs"))
        };
        Ok(Self { memory_mb, procs, dir })
    }

    /// `program` run inside the group from its first instruction: a shell moves itself into the
    /// group, then becomes the program (`exec`).
    pub fn command(&self, program: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("/bin/sh");
        command.arg("-c").arg("echo $$ > \"$0\" && exec \"$1\"").arg(&self.procs).arg(program);
        command
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // Empty by then (its processes were killed); a busy group is left for the next run.
        let _ = std::fs::remove_dir(&self.dir);
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
