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

/// Everything the child needs, prepared before `fork` (the child allocates nothing).
struct Plan {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
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

fn plan(spec: &Spec, report: OwnedFd) -> Result<Plan, LaunchError> {
    let root = &spec.rootfs;
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
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
        uid_map: format!("0 {uid} 1\n").into_bytes(),
        gid_map: format!("0 {gid} 1\n").into_bytes(),
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
    enter_namespaces(p, fd)?;
    mount_root(p, fd)?;
    mount_dev(p, fd)?;
    switch_root(p, fd)
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
    match write_proc(c"/proc/self/setgroups", b"deny") {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(failed(fd, "writing /proc/self/setgroups", e)),
    }
    write_proc(c"/proc/self/uid_map", &p.uid_map)
        .map_err(|e| failed(fd, "writing /proc/self/uid_map", e))?;
    write_proc(c"/proc/self/gid_map", &p.gid_map)
        .map_err(|e| failed(fd, "writing /proc/self/gid_map", e))?;
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

fn launch_namespaced(spec: &Spec) -> Result<Launched, LaunchError> {
    let sandbox_err = |m: String| LaunchError::Sandbox(Error::Sandbox(m));
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| sandbox_err(format!("cannot create a pipe: {e}")))?;
    let plan = plan(spec, report_w)?;
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
                "user+mount+pid namespaces (uid {} mapped to root inside), {root_how} into {}, read-only root, tmpfs /tmp, /proc, minimal /dev; host network",
                nix::unistd::geteuid(),
                spec.rootfs.display()
            ),
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
pub fn oci_config(spec: &Spec, uid: u32, gid: u32) -> Value {
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
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
            "uidMappings": [{"containerID": 0, "hostID": uid, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": gid, "size": 1}],
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
    let sandbox_err = |e: Error| LaunchError::Sandbox(e);
    let bundle = crate::staging::dir("lamina-bundle-")
        .ctx(|| "creating an OCI bundle directory".to_owned())
        .map_err(sandbox_err)?;
    let state = crate::staging::dir("lamina-oci-state-")
        .ctx(|| "creating an OCI runtime state directory".to_owned())
        .map_err(sandbox_err)?;
    let config = oci_config(
        spec,
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
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
        }
    }

    #[test]
    fn oci_config_is_rootless_read_only_with_a_writable_tmp() {
        let c = oci_config(&spec(), 1000, 1001);
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
