//! Lambda's memory size, enforced: a child cgroup of lamina's own with the limit, which the
//! function's processes join before they enter their namespaces.
//!
//! Where a cgroup may be made depends on the host: with cgroup v2, a directory of lamina's
//! cgroup that the user may write (a delegated subtree, or root) whose `memory` controller is
//! enabled for children; with cgroup v1 (hybrid hosts, many containers), lamina's cgroup in the
//! `memory` hierarchy, when writable (as root). Otherwise [`Limit::create`] says why not, and
//! the memory size is only told to the function.
//!
//! A process the kernel's OOM killer ends is told apart from one killed otherwise by the
//! cgroup's `oom_kill` count, so that it is reported as Lambda reports it:
//! `Runtime.OutOfMemory` (the runtime interface emulator's `ErrorRuntimeOutOfMemory`,
//! internal/lambda-managed-instances/rapid/shutdown.go, `processTermination`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A memory-limited cgroup, removed on drop (once its processes are gone).
#[derive(Debug)]
pub struct Limit {
    dir: PathBuf,
    version: Version,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The path of this process's cgroup for `controller` (v1), or its unified cgroup (v2:
/// `controller` `None`), from `/proc/self/cgroup` text.
fn own_cgroup(proc_cgroup: &str, controller: Option<&str>) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let hit = match controller {
            None => id == "0" && ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_owned())
    })
}

fn unique_name() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "lamina-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Remove the cgroups earlier lamina processes left under `parent` (killed before they could):
/// `lamina-PID-N` whose PID is gone. `rmdir` removes only an empty cgroup, so one still in use
/// stays.
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("lamina-"))
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            // Best effort: one that cannot be removed stays for a later sweep.
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {}: {e}", path.display()))
}

impl Limit {
    /// A new cgroup limited to `mb` megabytes (swap included), or why there can be none.
    pub fn create(mb: u32) -> Result<Limit, String> {
        let bytes = (u64::from(mb) * 1024 * 1024).to_string();
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            let own =
                own_cgroup(&proc_cgroup, None).ok_or("no cgroup v2 entry in /proc/self/cgroup")?;
            let parent = root.join(own.trim_start_matches('/'));
            let enabled =
                std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "memory") {
                // Fails when the cgroup holds processes (lamina) and is not the root: the
                // subtree is then not delegated in a usable way.
                write(&parent.join("cgroup.subtree_control"), "+memory").map_err(|e| {
                    format!(
                        "the memory controller is not enabled for children of {} ({e})",
                        parent.display()
                    )
                })?;
            }
            sweep(&parent);
            let dir = parent.join(unique_name());
            std::fs::create_dir(&dir).map_err(|e| {
                format!(
                    "creating {}: {e} (no delegated cgroup subtree)",
                    dir.display()
                )
            })?;
            let limit = Limit {
                dir,
                version: Version::V2,
            };
            write(&limit.dir.join("memory.max"), &bytes)?;
            // Without swap, as Lambda has none; the file is missing when swap accounting is off.
            let _ = write(&limit.dir.join("memory.swap.max"), "0");
            return Ok(limit);
        }
        let own = own_cgroup(&proc_cgroup, Some("memory"))
            .ok_or("no memory controller is mounted (cgroup v1 without memory, or none)")?;
        let base = root.join("memory");
        let parent = [base.join(own.trim_start_matches('/')), base.clone()]
            .into_iter()
            .find(|p| p.join("memory.limit_in_bytes").exists())
            .ok_or_else(|| {
                format!(
                    "lamina's memory cgroup {own} is not under {}",
                    base.display()
                )
            })?;
        sweep(&parent);
        let dir = parent.join(unique_name());
        std::fs::create_dir(&dir)
            .map_err(|e| format!("creating {}: {e} (cgroup v1 needs root)", dir.display()))?;
        let limit = Limit {
            dir,
            version: Version::V1,
        };
        write(&limit.dir.join("memory.limit_in_bytes"), &bytes)?;
        // Present only with swap accounting; the limit above already holds without swap.
        let _ = write(&limit.dir.join("memory.memsw.limit_in_bytes"), &bytes);
        Ok(limit)
    }

    /// The file a process writes `0` to, to join the cgroup.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// How many processes of the cgroup the OOM killer has killed so far.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The most memory the cgroup's processes used at once, in bytes (Lambda's `Max Memory
    /// Used`), when the kernel tells.
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Where the cgroup is, for the user.
    pub fn describe(&self) -> String {
        let v = match self.version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        };
        format!("cgroup {v} {}", self.dir.display())
    }
}

impl Drop for Limit {
    fn drop(&mut self) {
        // A cgroup is removed with rmdir once empty; the function's processes are killed
        // before the supervisor ends, but may take a moment to be reaped: a few tries.
        for _ in 0..20 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroups_are_read_per_hierarchy() {
        let text = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/user.slice/u.scope\n";
        assert_eq!(
            own_cgroup(text, Some("memory")).as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(own_cgroup(text, Some("cpuacct")).as_deref(), Some("/x"));
        assert_eq!(
            own_cgroup(text, None).as_deref(),
            Some("/user.slice/u.scope")
        );
        assert_eq!(own_cgroup("4:memory:/a\n", None), None);
    }
}
