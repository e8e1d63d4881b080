//! A private network for a test: a thread of its own in a new network namespace, where an
//! address outside 127.0.0.0/8 sits on the namespace's own loopback interface. Traffic to it
//! never leaves the machine (nor the namespace), yet to lamina it is an ordinary network
//! address, not a loopback one: the way to test rules that treat loopback specially.

use std::process::Command;

use super::{describe, require_tool, run_bounded};

/// Run `f` on a new thread in a new network namespace whose `lo` is up and also carries `ip`
/// (e.g. `10.200.0.1`), and return what it returns (its panic, re-raised here). Everything `f`
/// starts (registries, lamina, skopeo) inherits the namespace; the namespace goes away with the
/// thread and its children. Needs CAP_SYS_ADMIN (root, as on the test machines): fails loudly
/// without it.
pub fn in_private_network<T: Send>(ip: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let joined = s
            .spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| {
                    panic!("cannot make a network namespace (needs CAP_SYS_ADMIN): {e}")
                });
                ip_ok(&["link", "set", "lo", "up"]);
                ip_ok(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
                f()
            })
            .join();
        joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// `ip ARGS`, which must succeed.
fn ip_ok(args: &[&str]) {
    let bin = require_tool("ip");
    let out = run_bounded(
        Command::new(&bin).args(args),
        None,
        std::time::Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "ip {args:?} failed:\n{}",
        describe(&out)
    );
}
