//! Starting the function's process in isolation, with no daemon and no privileges.
//!
//! The default, [`Isolation::Namespaces`], is done here from Rust: the child process enters new
//! user, mount, pid, UTS and IPC namespaces (the user running lamina mapped to root inside), forks
//! the function's pid 1, bind-mounts the unpacked root read-only (as Lambda's is), mounts `/proc`,
//! a writable tmpfs `/tmp` and a minimal `/dev` (the host's null, zero, full, random and urandom
//! bound in), then `pivot_root`s into it (or `chroot`s where the root cannot be pivoted) and execs
//! the entrypoint. The network namespace is the host's, so the function reaches lamina's Runtime
//! API on 127.0.0.1. [`Isolation::Oci`] writes an OCI bundle (`config.json`, rootless, the same
//! mounts) and hands it to `crun` or `runc`.
//!
//! [`launch`] must be called from a thread that lives as long as the function should (lamina
//! calls it from a task of the caller's tokio runtime, whose worker threads last until the
//! runtime shuts down; never from the blocking pool, whose idle threads exit): the
//! intermediate process is killed when that thread exits
//! (`PR_SET_PDEATHSIG`), and the function's pid 1 when the intermediate dies, which takes down
//! everything in its pid namespace. Nothing outlives lamina.

use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::error::{Error, IoContext};

/// How the function is isolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Namespaces set up by lamina itself (the default).
    Namespaces,
    /// An OCI runtime (`crun`, `runc`, or a path to one) given a bundle.
    Oci(String),
}

/// What to run: the image's process, resolved.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The unpacked root file system (for overlayfs: the empty directory it is mounted on).
    pub rootfs: PathBuf,
    /// overlayfs to mount on `rootfs`, read-only: the directory its `lowerdir` names are
    /// relative to, and its options.
    pub overlay: Option<(PathBuf, String)>,
    /// The program: an absolute path inside the root.
    pub program: String,
    /// The argument vector (`args[0]` as the image gives it).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The working directory inside the root.
    pub cwd: String,
    pub hostname: String,
    /// Who the function runs as inside: `None` is root (the user running lamina, mapped to
    /// root), `Some((uid, gid))` anyone else — Lambda's `sbx_user1051` by default, see
    /// [`Identity`].
    pub user: Option<(u32, u32)>,
    /// The `cgroup.procs` file of the memory-limited cgroup the function joins (`cgroup`),
    /// when there is one.
    pub cgroup_procs: Option<PathBuf>,
    /// External extensions (paths inside the root, `/opt/extensions/NAME`), started with the
    /// function's environment just before the runtime, in the same sandbox.
    pub extensions: Vec<String>,
}

/// The uid Lambda runs every function as (`sbx_user1051`), whatever the image's `USER` says.
pub const LAMBDA_UID: u32 = 993;
/// The gid of Lambda's `sbx_user1051`.
pub const LAMBDA_GID: u32 = 990;

/// How the user namespace maps ids, decided before `fork` from who runs lamina.
///
/// An unprivileged process may map only its own uid into a new user namespace. So:
/// - to run as root inside (`--root`), the user running lamina is mapped to uid 0, as ever;
/// - to run as another user `U` when lamina runs as root (or holds a mapping of `U` and 0 in
///   its own namespace), uid 0 inside is root outside and `U` inside is `U` outside: the
///   image's files (unpacked by root) stay owned by root, so a file only root may read fails
///   as it does on Lambda. The sandbox is set up as root inside, then drops to `U` before exec;
/// - otherwise the user running lamina is mapped straight to `U`: the function sees its uid,
///   but the image's files (unpacked by that user) appear owned by `U`, so permission failures
///   on root-owned files do not show. [`Identity::caveat`] says so on stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `/proc/self/uid_map` of the new namespace.
    pub uid_map: String,
    /// `/proc/self/gid_map` of the new namespace.
    pub gid_map: String,
    /// `(uid, gid)` to switch to after the sandbox is set up (the root-owned mapping).
    pub switch_to: Option<(u32, u32)>,
    /// What the user should know about a mapping less faithful than Lambda's.
    pub caveat: Option<String>,
}

/// Is `id` mapped in the id map file `map` (`/proc/self/uid_map` syntax)?
fn mapped(map: &str, id: u32) -> bool {
    map.lines().any(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        f.len() == 3 && f[0] <= u64::from(id) && u64::from(id) < f[0] + f[2]
    })
}

impl Identity {
    /// The mapping for running as `user` (`None`: root) when lamina runs as `host` (uid, gid)
    /// in a namespace whose maps are `outer` (uid map, gid map).
    pub fn plan(user: Option<(u32, u32)>, host: (u32, u32), outer: (&str, &str)) -> Identity {
        let (hu, hg) = host;
        match user {
            None | Some((0, _)) => Identity {
                uid_map: format!("0 {hu} 1\n"),
                gid_map: format!("0 {hg} 1\n"),
                switch_to: None,
                caveat: None,
            },
            Some((u, g)) if hu == 0 && mapped(outer.0, u) && mapped(outer.1, g) => Identity {
                uid_map: format!("0 0 1\n{u} {u} 1\n"),
                gid_map: if g == 0 {
                    "0 0 1\n".to_owned()
                } else {
                    format!("0 0 1\n{g} {g} 1\n")
                },
                switch_to: Some((u, g)),
                caveat: None,
            },
            Some((u, g)) => Identity {
                uid_map: format!("{u} {hu} 1\n"),
                gid_map: format!("{g} {hg} 1\n"),
                switch_to: None,
                caveat: Some(format!(
                    "the function runs as uid {u} by mapping your uid {hu} to it (an unprivileged user can map only its own uid): \
                     the image's files appear owned by uid {u}, so a file only root may read is readable here but not on Lambda. \
                     Run lamina as root for Lambda's ownership, or --root to run as root inside"
                )),
            },
        }
    }

    /// The mapping for this process (its effective ids and its namespace's maps).
    pub fn for_this_process(user: Option<(u32, u32)>) -> Identity {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let (um, gm) = (read("/proc/self/uid_map"), read("/proc/self/gid_map"));
        Identity::plan(
            user,
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            (&um, &gm),
        )
    }

    /// How the function's identity is described to the user.
    fn describe(&self, user: Option<(u32, u32)>) -> String {
        let host = nix::unistd::geteuid();
        match (user, &self.switch_to) {
            (None | Some((0, _)), _) => format!("uid {host} mapped to root inside"),
            (Some((u, g)), Some(_)) => {
                format!("running as uid {u} gid {g} (root outside is root inside)")
            }
            (Some((u, g)), None) => format!("uid {host} mapped to uid {u} gid {g} inside"),
        }
    }
}

/// Why a launch failed.
#[derive(Debug)]
pub enum LaunchError {
    /// The sandbox is fine but the program could not be executed (missing, not executable,
    /// wrong format): Lambda's `Runtime.InvalidEntrypoint`. The message is Lambda's wording.
    Exec(String),
    /// The sandbox itself could not be set up: lamina cannot run anything here.
    Sandbox(Error),
}

/// A started function process.
pub struct Launched {
    pub child: tokio::process::Child,
    /// Which isolation is in use, for the user.
    pub how: String,
    /// What differs from Lambda in this isolation (said once on stderr).
    pub caveat: Option<String>,
    /// The names of the external extensions started with it.
    pub extensions: Vec<String>,
    stop: Stop,
}

enum Stop {
    /// SIGKILL to the child (the namespace sandbox: its pid namespace dies with it).
    Signal,
    /// `RUNTIME --root STATE kill ID KILL`, then `delete --force`.
    Oci {
        runtime: String,
        state: crate::staging::Dir,
        _bundle: crate::staging::Dir,
        id: String,
    },
}

impl Launched {
    /// Kill the function and everything it started.
    pub async fn kill(&mut self) {
        match &self.stop {
            Stop::Signal => {
                // It fails only when the child was already reaped: nothing left to kill.
                let _ = self.child.start_kill();
            }
            Stop::Oci {
                runtime, state, id, ..
            } => {
                let killed = tokio::process::Command::new(runtime)
                    .arg("--root")
                    .arg(state.path())
                    .args(["kill", id, "KILL"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
                if !killed.is_ok_and(|s| s.success()) {
                    // As above: an error means the child is already gone.
                    let _ = self.child.start_kill();
                }
            }
        }
    }

    /// Wait for the process to end (and, for an OCI runtime, remove its container).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        if let Stop::Oci {
            runtime, state, id, ..
        } = &self.stop
        {
            // Removing the stopped container is housekeeping of a temporary state directory,
            // itself removed when `state` is dropped: a failure changes nothing for the user.
            let _ = tokio::process::Command::new(runtime)
                .arg("--root")
                .arg(state.path())
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        Ok(status)
    }
}

/// Start `spec` under `iso`. The function's stdout and stderr both go to lamina's stderr (so
/// that `lamina invoke`'s stdout holds only the response); its stdin is `/dev/null`.
pub fn launch(iso: &Isolation, spec: &Spec) -> Result<Launched, LaunchError> {
    match iso {
        Isolation::Namespaces => launch_namespaced(spec),
        Isolation::Oci(_) if spec.overlay.is_some() => Err(LaunchError::Sandbox(Error::Sandbox(
            "an OCI runtime takes one root directory, not overlayfs layers: prepare the image with Composition::Copy".to_owned(),
        ))),
        Isolation::Oci(runtime) => launch_oci(runtime, spec),
    }
}

fn stderr_stdio() -> io::Result<Stdio> {
    Ok(Stdio::from(io::stderr().as_fd().try_clone_to_owned()?))
}

fn cstring(s: impl AsRef<OsStr>) -> Result<CString, LaunchError> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| {
        LaunchError::Sandbox(Error::Sandbox(format!(
            "{} contains a NUL byte",
            s.as_ref().to_string_lossy()
        )))
    })
}

/// A NULL-terminated array of C strings (`argv`, `envp`), built before `fork` so that the
/// child only passes pointers.
struct ExecArgs {
    _strings: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into `_strings`, owned by the same value and never changed; the
// value is only read (by the forked child).
unsafe impl Send for ExecArgs {}
// SAFETY: as above: nothing mutates it after construction.
unsafe impl Sync for ExecArgs {}

impl ExecArgs {
    fn new(items: &[String]) -> Result<ExecArgs, LaunchError> {
        let strings: Vec<CString> = items.iter().map(cstring).collect::<Result<_, _>>()?;
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(ExecArgs {
            _strings: strings,
            ptrs,
        })
    }
}

/// Everything the child needs, prepared before `fork` (the child allocates nothing).
struct Plan {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    /// Deny `setgroups` (required to write a gid map unprivileged); not when switching ids,
    /// where the supplementary groups are cleared instead.
    deny_setgroups: bool,
    /// `(uid, gid)` to switch to once the sandbox is set up.
    switch_to: Option<(u32, u32)>,
    /// The `cgroup.procs` file to join first.
    cgroup_procs: Option<CString>,
    /// The extensions' `execve` arguments, prepared before `fork`.
    extensions: Vec<ExecArgs>,
    /// Their environment (the function's), shared.
    ext_env: ExecArgs,
    /// When the maps have more than the writer's own id, they are written from outside by
    /// lamina (which holds `CAP_SETUID` where the child, in its new namespace, does not): the
    /// child sends its pid on the first descriptor and waits for a `G` on the second.
    map_sync: Option<(OwnedFd, OwnedFd)>,
    root: CString,
    proc_dir: CString,
    tmp_dir: CString,
    dev_dir: CString,
    /// `(host device, file in the new /dev)`.
    devices: Vec<(CString, CString)>,
    /// `(link target, link in the new /dev)`.
    dev_links: Vec<(CString, CString)>,
    /// The flags of the mount holding the root, which a read-only remount must keep.
    locked: MsFlags,
    /// overlayfs instead of a bind mount: the directory to mount from, and the options.
    overlay: Option<(CString, CString)>,
    cwd: CString,
    hostname: CString,
    /// The write end of the report pipe (close-on-exec): the child says there which step
    /// failed, or how it entered the root.
    report: OwnedFd,
}

/// Host devices bound into the sandbox's `/dev`.
const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

/// Mount flags a bind remount must repeat (a user namespace may not drop them).
fn locked_flags(root: &Path) -> MsFlags {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let Ok(st) = statvfs(root) else {
        // Unknown flags: the remount then asks for none, and fails (reported as such) only if
        // the mount has some it may not drop.
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut m = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            m |= ms;
        }
    }
    if !f.intersects(FsFlags::ST_NOATIME | FsFlags::ST_RELATIME) {
        m |= MsFlags::MS_STRICTATIME;
    }
    m
}

fn plan(
    spec: &Spec,
    ident: &Identity,
    map_sync: Option<(OwnedFd, OwnedFd)>,
    report: OwnedFd,
) -> Result<Plan, LaunchError> {
    let root = &spec.rootfs;
    let dev = root.join("dev");
    let mut devices = Vec::new();
    for d in DEVICES {
        devices.push((
            cstring(format!("/dev/{d}"))?,
            cstring(dev.join(d).as_os_str())?,
        ));
    }
    let mut dev_links = Vec::new();
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        dev_links.push((cstring(target)?, cstring(dev.join(name).as_os_str())?));
    }
    Ok(Plan {
        uid_map: ident.uid_map.clone().into_bytes(),
        gid_map: ident.gid_map.clone().into_bytes(),
        deny_setgroups: ident.switch_to.is_none(),
        switch_to: ident.switch_to,
        map_sync,
        cgroup_procs: match &spec.cgroup_procs {
            Some(p) => Some(cstring(p.as_os_str())?),
            None => None,
        },
        extensions: spec
            .extensions
            .iter()
            .map(|e| ExecArgs::new(std::slice::from_ref(e)))
            .collect::<Result<_, _>>()?,
        ext_env: ExecArgs::new(
            &spec
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )?,
        root: cstring(root.as_os_str())?,
        proc_dir: cstring(root.join("proc").as_os_str())?,
        tmp_dir: cstring(root.join("tmp").as_os_str())?,
        dev_dir: cstring(dev.as_os_str())?,
        devices,
        dev_links,
        locked: locked_flags(root),
        overlay: match &spec.overlay {
            Some((dir, opts)) => Some((cstring(dir.as_os_str())?, cstring(opts)?)),
            None => None,
        },
        cwd: cstring(&spec.cwd)?,
        hostname: cstring(&spec.hostname)?,
        report,
    })
}

// Everything from here to `enter` runs in the forked child before exec: async-signal-safe
// calls only, no allocation (paths are `CStr`s prepared in the `Plan`, which nix passes through
// without copying).

/// Write a short static message to the report pipe.
fn say(fd: BorrowedFd, msg: &str) {
    // The parent reads the report only to word its error; a message lost to a full or closed
    // pipe leaves it with exec's error, so a failed write may be ignored.
    let _ = nix::unistd::write(fd, msg.as_bytes());
}

/// Report a failed step and turn its errno into the error `spawn` returns.
fn failed(fd: BorrowedFd, step: &str, e: Errno) -> io::Error {
    say(fd, "E:");
    say(fd, step);
    say(fd, "\n");
    io::Error::from_raw_os_error(e as i32)
}

/// Write `data` to the file at `path` (the `/proc/self/*_map` files) in one `write`, as the
/// kernel requires of them.
fn write_proc(path: &CStr, data: &[u8]) -> Result<(), Errno> {
    let f = nix::fcntl::open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    match nix::unistd::write(&f, data)? {
        n if n == data.len() => Ok(()),
        _ => Err(Errno::EIO),
    }
}

/// In the child: send its pid to lamina, which writes its id maps, and wait for the go.
fn maps_from_outside(ready: BorrowedFd, go: BorrowedFd, fd: BorrowedFd) -> io::Result<()> {
    let pid = nix::unistd::getpid().as_raw().to_ne_bytes();
    match nix::unistd::write(ready, &pid) {
        Ok(4) => {}
        Ok(_) => {
            return Err(failed(
                fd,
                "writing the uid_map (sending the pid)",
                Errno::EIO,
            ));
        }
        Err(e) => return Err(failed(fd, "writing the uid_map (sending the pid)", e)),
    }
    let mut answer = [0u8; 1];
    loop {
        match nix::unistd::read(go, &mut answer) {
            Ok(1) if answer[0] == b'G' => return Ok(()),
            Err(Errno::EINTR) => continue,
            _ => {
                return Err(failed(
                    fd,
                    "writing /proc/PID/uid_map from outside",
                    Errno::EPERM,
                ));
            }
        }
    }
}

/// In lamina: wait (on its own thread) for the child's pid, write its maps, answer `G` (or
/// `E`). The thread ends when the child has its maps or is gone.
fn write_maps_for_child(ready: OwnedFd, go: OwnedFd, ident: &Identity) {
    let (uid_map, gid_map) = (ident.uid_map.clone(), ident.gid_map.clone());
    std::thread::spawn(move || {
        let mut pid = [0u8; 4];
        if std::fs::File::from(ready).read_exact(&mut pid).is_err() {
            return; // the child failed before (its report says why)
        }
        let pid = i32::from_ne_bytes(pid);
        let write = |what: &str, data: &str| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/{pid}/{what}"))
                .and_then(|mut f| io::Write::write_all(&mut f, data.as_bytes()))
        };
        let ok = write("uid_map", &uid_map).is_ok() && write("gid_map", &gid_map).is_ok();
        // The child waits for this byte; if it cannot be written the child is gone.
        let _ = io::Write::write_all(&mut std::fs::File::from(go), if ok { b"G" } else { b"E" });
    });
}

/// The intermediate process: outside the new pid namespace, it waits for the function's pid 1
/// and exits as it did. It keeps no descriptor but the standard ones, so that `spawn` returns
/// as soon as the function's exec succeeds.
fn intermediate(child: Pid) -> ! {
    use nix::sys::signal::{SigHandler, kill, signal};
    use nix::sys::wait::{WaitStatus, waitpid};
    // SAFETY: close_range takes integers only and closes descriptors this process never uses
    // again (nothing here owns one of them).
    if unsafe { libc::close_range(3, u32::MAX, 0) } != 0 {
        // An older kernel: close them one by one. EBADF for the many that are not open is
        // expected, so the results are ignored.
        for fd in 3..4096 {
            let _ = nix::unistd::close(fd);
        }
    }
    let code = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                // SAFETY: restoring the default disposition installs no handler.
                // If it failed, the kill below would not end this process: the exit
                // code that follows still says which signal it was.
                let _ = unsafe { signal(sig, SigHandler::SigDfl) };
                // Dying of the same signal is how the exit is passed on; if it cannot be
                // sent, the conventional exit code says the same.
                let _ = kill(Pid::this(), sig);
                break 128 + sig as i32;
            }
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(_) => break 127,
        }
    };
    // SAFETY: `_exit` ends the process without running the parent's atexit handlers or
    // destructors, which a forked child must not run.
    unsafe { libc::_exit(code) }
}

/// Runs in the forked child before exec: namespaces, the intermediate process, mounts, root.
fn enter(p: &Plan) -> io::Result<()> {
    let fd = p.report.as_fd();
    if let Some(procs) = &p.cgroup_procs {
        write_proc(procs, b"0").map_err(|e| failed(fd, "joining the memory cgroup", e))?;
    }
    enter_namespaces(p, fd)?;
    mount_root(p, fd)?;
    mount_dev(p, fd)?;
    switch_root(p, fd)?;
    become_user(p, fd)?;
    start_extensions(p);
    Ok(())
}

/// Fork and exec each external extension (children of the runtime's process, in its
/// sandbox). One that cannot be executed exits 127 and never registers, which the supervisor
/// sees as an init that does not finish.
fn start_extensions(p: &Plan) {
    for ext in &p.extensions {
        // SAFETY: the child only calls execve and _exit.
        if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
            // SAFETY: NULL-terminated arrays of valid C strings, prepared before the fork.
            unsafe {
                libc::execve(ext.ptrs[0], ext.ptrs.as_ptr(), p.ext_env.ptrs.as_ptr());
                libc::_exit(127);
            }
        }
        // A failed fork leaves that extension unstarted: reported as above.
    }
}

/// Drop from root inside to the function's user (when the mapping has both): no
/// supplementary groups, the gid, then the uid — which clears every capability, and the
/// parent-death signal, set again.
fn become_user(p: &Plan, fd: BorrowedFd) -> io::Result<()> {
    let Some((uid, gid)) = p.switch_to else {
        return Ok(());
    };
    use nix::unistd::{Gid, Uid};
    nix::unistd::setgroups(&[]).map_err(|e| failed(fd, "clearing the supplementary groups", e))?;
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(|e| failed(fd, "setresgid", e))?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(|e| failed(fd, "setresuid", e))?;
    set_pdeathsig(Signal::SIGKILL).map_err(|e| failed(fd, "prctl(PR_SET_PDEATHSIG)", e))
}

/// New user, mount, pid, UTS and IPC namespaces (the user mapped to root), and the fork that
/// makes this process pid 1 of the new pid namespace, the intermediate waiting outside.
fn enter_namespaces(p: &Plan, fd: BorrowedFd) -> io::Result<()> {
    set_pdeathsig(Signal::SIGKILL).map_err(|e| failed(fd, "prctl(PR_SET_PDEATHSIG)", e))?;
    nix::sched::unshare(
        CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(|e| failed(fd, "unshare(user, mount, pid, uts, ipc namespaces)", e))?;
    if p.deny_setgroups {
        match write_proc(c"/proc/self/setgroups", b"deny") {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(failed(fd, "writing /proc/self/setgroups", e)),
        }
    }
    match &p.map_sync {
        Some((ready, go)) => maps_from_outside(ready.as_fd(), go.as_fd(), fd)?,
        None => {
            write_proc(c"/proc/self/uid_map", &p.uid_map)
                .map_err(|e| failed(fd, "writing /proc/self/uid_map", e))?;
            write_proc(c"/proc/self/gid_map", &p.gid_map)
                .map_err(|e| failed(fd, "writing /proc/self/gid_map", e))?;
        }
    }
    // SAFETY: the child only makes async-signal-safe calls until it execs.
    match unsafe { nix::unistd::fork() } {
        Err(e) => return Err(failed(fd, "fork", e)),
        Ok(nix::unistd::ForkResult::Parent { child }) => intermediate(child),
        Ok(nix::unistd::ForkResult::Child) => {}
    }
    // Now pid 1 of the new pid namespace.
    set_pdeathsig(Signal::SIGKILL).map_err(|e| failed(fd, "prctl(PR_SET_PDEATHSIG)", e))
}

/// The root bound read-only on itself (or overlayfs mounted read-only on it), `/proc` and a
/// tmpfs `/tmp` in it.
fn mount_root(p: &Plan, fd: BorrowedFd) -> io::Result<()> {
    let none: Option<&CStr> = None;
    mount(
        none,
        c"/",
        none,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        none,
    )
    .map_err(|e| failed(fd, "making the mounts private", e))?;
    if let Some((dir, opts)) = &p.overlay {
        // The layers are named relative to their directory, which keeps the option short.
        nix::unistd::chdir(dir.as_c_str())
            .map_err(|e| failed(fd, "entering the layers' directory", e))?;
        mount(
            Some(c"overlay"),
            p.root.as_c_str(),
            Some(c"overlay"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_c_str()),
        )
        .map_err(|e| failed(fd, "mounting the layers (overlayfs)", e))?;
    } else {
        mount(
            Some(p.root.as_c_str()),
            p.root.as_c_str(),
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .map_err(|e| failed(fd, "bind-mounting the root", e))?;
        mount(
            none,
            p.root.as_c_str(),
            none,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | p.locked,
            none,
        )
        .map_err(|e| failed(fd, "remounting the root read-only", e))?;
    }
    mount(
        Some(c"proc"),
        p.proc_dir.as_c_str(),
        Some(c"proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .map_err(|e| failed(fd, "mounting /proc", e))?;
    mount(
        Some(c"tmpfs"),
        p.tmp_dir.as_c_str(),
        Some(c"tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(c"mode=1777,size=512m"),
    )
    .map_err(|e| failed(fd, "mounting a tmpfs on /tmp", e))
}

/// Can overlayfs be mounted here, inside a new user namespace, from `dir` with `opts` on
/// `target`? Tried in a forked child (new user and mount namespaces, the user mapped to root,
/// the mount made then dropped with the namespace), as the sandbox will do it.
pub fn overlay_mounts(dir: &Path, opts: &str, target: &Path) -> bool {
    let (Ok(dir), Ok(opts), Ok(target)) = (
        CString::new(dir.as_os_str().as_bytes()),
        CString::new(opts),
        CString::new(target.as_os_str().as_bytes()),
    ) else {
        return false;
    };
    let uid_map = format!("0 {} 1\n", nix::unistd::geteuid()).into_bytes();
    // SAFETY: the child makes only async-signal-safe calls (no allocation) and `_exit`s.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let tried = (|| -> Result<(), Errno> {
                nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)?;
                write_proc(c"/proc/self/uid_map", &uid_map)?;
                nix::unistd::chdir(dir.as_c_str())?;
                mount(
                    Some(c"overlay"),
                    target.as_c_str(),
                    Some(c"overlay"),
                    MsFlags::MS_RDONLY,
                    Some(opts.as_c_str()),
                )
            })();
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(i32::from(tried.is_err())) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => matches!(
            nix::sys::wait::waitpid(child, None),
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0))
        ),
        Err(_) => false,
    }
}

/// A minimal `/dev`: a tmpfs with the host's harmless devices bound in and the usual links,
/// then made read-only.
fn mount_dev(p: &Plan, fd: BorrowedFd) -> io::Result<()> {
    let none: Option<&CStr> = None;
    mount(
        Some(c"tmpfs"),
        p.dev_dir.as_c_str(),
        Some(c"tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(c"mode=755,size=64k"),
    )
    .map_err(|e| failed(fd, "mounting a tmpfs on /dev", e))?;
    for (host, target) in &p.devices {
        // The file to bind the device on; closed at once (dropped).
        nix::fcntl::open(
            target.as_c_str(),
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o666),
        )
        .map_err(|e| failed(fd, "creating the files of /dev", e))?;
        match mount(
            Some(host.as_c_str()),
            target.as_c_str(),
            none,
            MsFlags::MS_BIND,
            none,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(failed(fd, "binding the host's devices into /dev", e)),
        }
    }
    for (target, link) in &p.dev_links {
        // Conveniences (`/dev/fd`, `/dev/stdin`...): a function that needs one and lacks it
        // fails in a way it reports itself, so a failure here may be ignored.
        let _ = nix::unistd::symlinkat(target.as_c_str(), AT_FDCWD, link.as_c_str());
    }
    // Read-only is a nicety (the tmpfs is tiny and private to the sandbox): ignored if refused.
    let _ = mount(
        none,
        p.dev_dir.as_c_str(),
        none,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        none,
    );
    Ok(())
}

/// The hostname, then the new root made `/` (by `pivot_root`, or `chroot` where the root cannot
/// be pivoted) and the image's working directory entered.
fn switch_root(p: &Plan, fd: BorrowedFd) -> io::Result<()> {
    let none: Option<&CStr> = None;
    // The hostname is cosmetic (the UTS namespace is the sandbox's own): ignored if refused.
    let _ = nix::unistd::sethostname(OsStr::from_bytes(p.hostname.to_bytes()));
    nix::unistd::chdir(p.root.as_c_str()).map_err(|e| failed(fd, "entering the root", e))?;
    match nix::unistd::pivot_root(c".", c".") {
        Ok(()) => {
            umount2(c".", MntFlags::MNT_DETACH)
                .map_err(|e| failed(fd, "detaching the old root", e))?;
            say(fd, "R:pivot_root\n");
        }
        Err(_) => {
            // A root that cannot be pivoted (an initramfs): move the new root over it.
            mount(Some(c"."), c"/", none, MsFlags::MS_MOVE, none)
                .map_err(|e| failed(fd, "moving the root", e))?;
            nix::unistd::chroot(c".").map_err(|e| failed(fd, "chroot", e))?;
            say(fd, "R:chroot\n");
        }
    }
    nix::unistd::chdir(c"/").map_err(|e| failed(fd, "entering the root", e))?;
    nix::unistd::chdir(p.cwd.as_c_str())
        .map_err(|e| failed(fd, "entering the image's WorkingDir", e))?;
    Ok(())
}

/// What the kernel settings say about user namespaces, for the error message.
fn userns_hints() -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let mut hints = Vec::new();
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        hints.push("user namespaces are disabled (sysctl user.max_user_namespaces = 0)");
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        hints.push(
            "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone = 0)",
        );
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        hints.push(
            "AppArmor restricts unprivileged user namespaces (sysctl kernel.apparmor_restrict_unprivileged_userns = 1)",
        );
    }
    if hints.is_empty() {
        "inside a container, the outer runtime's seccomp profile or a masked /proc may forbid them"
            .to_owned()
    } else {
        hints.join("; ")
    }
}

/// When `ident` switches ids, the pipes through which lamina writes the child's maps (its
/// thread started): the child's ends.
fn maps_from_lamina(ident: &Identity) -> Result<Option<(OwnedFd, OwnedFd)>, LaunchError> {
    if ident.switch_to.is_none() {
        return Ok(None);
    }
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| LaunchError::Sandbox(Error::Sandbox(format!("cannot create a pipe: {e}"))))
    };
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    write_maps_for_child(ready_r, go_w, ident);
    Ok(Some((ready_w, go_r)))
}

fn launch_namespaced(spec: &Spec) -> Result<Launched, LaunchError> {
    let sandbox_err = |m: String| LaunchError::Sandbox(Error::Sandbox(m));
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| sandbox_err(format!("cannot create a pipe: {e}")))?;
    let ident = Identity::for_this_process(spec.user);
    let map_sync = maps_from_lamina(&ident)?;
    let plan = plan(spec, &ident, map_sync, report_w)?;
    if plan.locked.contains(MsFlags::MS_NOEXEC) {
        return Err(sandbox_err(format!(
            "{} is on a file system mounted noexec, so nothing in it can run: set LAMINA_CACHE_DIR to a directory elsewhere",
            spec.rootfs.display()
        )));
    }
    let program = &spec.program;
    let mut cmd = std::process::Command::new(program);
    std::os::unix::process::CommandExt::arg0(&mut cmd, spec.args.first().unwrap_or(program));
    cmd.args(spec.args.iter().skip(1))
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stderr_stdio().map_err(|e| sandbox_err(format!("stderr: {e}")))?)
        .stderr(Stdio::inherit());
    // Its own process group: a Ctrl-C at the terminal reaches lamina, which stops it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // SAFETY: `enter` only makes async-signal-safe calls and allocates nothing.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || enter(&plan));
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let spawned = cmd.spawn();
    // The plan, and with it the parent's write end of the report pipe, goes with the command:
    // once it is closed, the read below ends when the child execs (or exits).
    drop(cmd);
    let mut report = String::new();
    // An unreadable report only loses the name of the failed step: spawn's error remains.
    let _ = std::fs::File::from(report_r).read_to_string(&mut report);
    let step = report
        .lines()
        .find_map(|l| l.strip_prefix("E:"))
        .map(str::to_owned);
    let root_how = report
        .lines()
        .find_map(|l| l.strip_prefix("R:"))
        .unwrap_or("pivot_root")
        .to_owned();
    match (spawned, step) {
        (Ok(child), _) => Ok(Launched {
            child,
            how: format!(
                "user+mount+pid namespaces ({}), {root_how} into {}, read-only root, tmpfs /tmp, /proc, minimal /dev; host network",
                ident.describe(spec.user),
                spec.rootfs.display()
            ),
            caveat: ident.caveat.clone(),
            extensions: spec
                .extensions
                .iter()
                .map(|e| e.rsplit('/').next().unwrap_or(e).to_owned())
                .collect(),
            stop: Stop::Signal,
        }),
        (Err(e), Some(step)) => {
            let mut msg = format!("cannot start the sandbox: {step}: {e}");
            if step.starts_with("unshare") || step.contains("_map") || step.contains("setgroups") {
                msg.push_str(&format!(
                    ". lamina run needs unprivileged user namespaces (with mount and pid namespaces): {}. Enable them, or use an OCI runtime (--runtime crun)",
                    userns_hints()
                ));
            } else if step.contains("WorkingDir") {
                msg = format!("the image's WorkingDir {} cannot be entered: {e}", spec.cwd);
            } else if step.contains("/proc") {
                msg.push_str(
                    ". Mounting /proc in a new pid namespace needs an unmasked /proc (inside a container: run it with a full /proc, or use --runtime crun)",
                );
            }
            Err(LaunchError::Sandbox(Error::Sandbox(msg)))
        }
        (Err(e), None) => Err(LaunchError::Exec(format!(
            "fork/exec {program}: {}",
            exec_error(&e)
        ))),
    }
}

/// `exec`'s error as Go (and so Lambda) words it.
fn exec_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file or directory".into(),
        Some(libc::EACCES) => "permission denied".into(),
        Some(libc::ENOEXEC) => "exec format error".into(),
        _ => e.to_string(),
    }
}

/// The OCI runtime spec (`config.json`) for a rootless container running `spec`: the user
/// mapped to root, the root read-only, `/tmp` a writable tmpfs, no network namespace (the
/// function reaches the Runtime API on the host's 127.0.0.1), no cgroup settings.
pub fn oci_config(spec: &Spec, ident: &Identity) -> Value {
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let (uid, gid) = spec.user.unwrap_or((0, 0));
    let mappings = |map: &str| -> Vec<Value> {
        map.lines()
            .filter_map(|l| {
                let f: Vec<u32> = l
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                (f.len() == 3).then(|| json!({"containerID": f[0], "hostID": f[1], "size": f[2]}))
            })
            .collect()
    };
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": spec.args,
            "env": env,
            "cwd": spec.cwd,
            "noNewPrivileges": true,
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        },
        "root": {"path": spec.rootfs, "readonly": true},
        "hostname": spec.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777", "size=524288k"]}
        ],
        "linux": {
            "uidMappings": mappings(&ident.uid_map),
            "gidMappings": mappings(&ident.gid_map),
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "user"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"
            ],
            "readonlyPaths": [
                "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

fn launch_oci(runtime: &str, spec: &Spec) -> Result<Launched, LaunchError> {
    if !spec.extensions.is_empty() {
        eprintln!(
            "lamina: note: the extensions in /opt/extensions are not started under --runtime {runtime}"
        );
    }
    let sandbox_err = |e: Error| LaunchError::Sandbox(e);
    let bundle = crate::staging::dir("lamina-bundle-")
        .ctx(|| "creating an OCI bundle directory".to_owned())
        .map_err(sandbox_err)?;
    let state = crate::staging::dir("lamina-oci-state-")
        .ctx(|| "creating an OCI runtime state directory".to_owned())
        .map_err(sandbox_err)?;
    let ident = Identity::for_this_process(spec.user);
    let config = oci_config(spec, &ident);
    let path = bundle.path().join("config.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&config).expect("JSON serializes"),
    )
    .at("writing", &path)
    .map_err(sandbox_err)?;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = format!(
        "lamina-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut cmd = tokio::process::Command::new(runtime);
    cmd.arg("--root")
        .arg(state.path())
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(
            stderr_stdio()
                .ctx(|| "duplicating stderr".to_owned())
                .map_err(sandbox_err)?,
        )
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        LaunchError::Sandbox(Error::Sandbox(format!(
            "cannot run the OCI runtime `{runtime}`: {e}{}",
            if e.kind() == io::ErrorKind::NotFound {
                " (is it installed? without --runtime, lamina sets up namespaces itself)"
            } else {
                ""
            }
        )))
    })?;
    Ok(Launched {
        child,
        how: format!(
            "OCI runtime `{runtime}` (rootless bundle {}, read-only root, tmpfs /tmp; host network)",
            bundle.path().display()
        ),
        caveat: ident.caveat.clone(),
        // Not started under an OCI runtime (the bundle runs one process).
        extensions: Vec::new(),
        stop: Stop::Oci {
            runtime: runtime.to_owned(),
            state,
            _bundle: bundle,
            id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            rootfs: PathBuf::from("/cache/rootfs/abc/rootfs"),
            overlay: None,
            program: "/lambda-entrypoint.sh".into(),
            args: vec!["/lambda-entrypoint.sh".into(), "app.handler".into()],
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("AWS_LAMBDA_RUNTIME_API".into(), "127.0.0.1:4242".into()),
            ],
            cwd: "/var/task".into(),
            hostname: "lamina".into(),
            user: None,
            cgroup_procs: None,
            extensions: Vec::new(),
        }
    }

    #[test]
    fn identities_map_what_the_user_running_lamina_may_map() {
        let full = "         0          0 4294967295\n";
        let lambda = Some((LAMBDA_UID, LAMBDA_GID));
        // As root: root stays root (the image's files stay root's), 993 is 993.
        let i = Identity::plan(lambda, (0, 0), (full, full));
        assert_eq!(i.uid_map, "0 0 1\n993 993 1\n");
        assert_eq!(i.gid_map, "0 0 1\n990 990 1\n");
        assert_eq!(i.switch_to, Some((993, 990)));
        assert!(i.caveat.is_none());
        // Unprivileged: only its own uid, mapped straight to 993, with a caveat.
        let i = Identity::plan(lambda, (1000, 1000), ("0 1000 1\n", "0 1000 1\n"));
        assert_eq!(i.uid_map, "993 1000 1\n");
        assert_eq!(i.switch_to, None);
        assert!(
            i.caveat
                .unwrap()
                .contains("readable here but not on Lambda")
        );
        // Root in a namespace where 993 is not mapped: the same fallback.
        let i = Identity::plan(lambda, (0, 0), ("0 0 1\n", "0 0 1\n"));
        assert_eq!(i.uid_map, "993 0 1\n");
        // --root: as before.
        let i = Identity::plan(None, (1000, 1001), (full, full));
        assert_eq!(
            (i.uid_map.as_str(), i.gid_map.as_str()),
            ("0 1000 1\n", "0 1001 1\n")
        );
        let c = oci_config(
            &Spec {
                user: lambda,
                ..spec()
            },
            &Identity::plan(lambda, (0, 0), (full, full)),
        );
        assert_eq!(c["process"]["user"], json!({"uid": 993, "gid": 990}));
        assert_eq!(
            c["linux"]["uidMappings"],
            json!([{"containerID": 0, "hostID": 0, "size": 1}, {"containerID": 993, "hostID": 993, "size": 1}])
        );
    }

    #[test]
    fn oci_config_is_rootless_read_only_with_a_writable_tmp() {
        let c = oci_config(&spec(), &Identity::plan(None, (1000, 1001), ("", "")));
        assert_eq!(c["ociVersion"], "1.0.2");
        assert_eq!(c["root"]["path"], "/cache/rootfs/abc/rootfs");
        assert_eq!(c["root"]["readonly"], true);
        assert_eq!(
            c["process"]["args"],
            json!(["/lambda-entrypoint.sh", "app.handler"])
        );
        assert_eq!(c["process"]["cwd"], "/var/task");
        assert_eq!(c["process"]["user"], json!({"uid": 0, "gid": 0}));
        assert_eq!(
            c["process"]["env"],
            json!([
                "PATH=/usr/bin:/bin",
                "AWS_LAMBDA_RUNTIME_API=127.0.0.1:4242"
            ])
        );
        assert_eq!(
            c["linux"]["uidMappings"],
            json!([{"containerID": 0, "hostID": 1000, "size": 1}])
        );
        assert_eq!(
            c["linux"]["gidMappings"],
            json!([{"containerID": 0, "hostID": 1001, "size": 1}])
        );
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(ns.contains(&"user") && ns.contains(&"mount") && ns.contains(&"pid"));
        assert!(
            !ns.contains(&"network"),
            "the function must reach 127.0.0.1"
        );
        assert!(c["linux"].get("resources").is_none());
        assert!(c["linux"].get("cgroupsPath").is_none());
        let mounts = c["mounts"].as_array().unwrap();
        let tmp = mounts.iter().find(|m| m["destination"] == "/tmp").unwrap();
        assert_eq!(tmp["type"], "tmpfs");
        assert!(!tmp["options"].as_array().unwrap().iter().any(|o| o == "ro"));
        assert!(mounts.iter().any(|m| m["destination"] == "/proc"));
    }

    #[test]
    fn exec_errors_are_worded_as_lambda_words_them() {
        assert_eq!(
            exec_error(&io::Error::from_raw_os_error(libc::ENOENT)),
            "no such file or directory"
        );
        assert_eq!(
            exec_error(&io::Error::from_raw_os_error(libc::ENOEXEC)),
            "exec format error"
        );
    }
}
