//! One gate for zips: `lamina zip` runs the image gate's file rules on what the function will
//! see — the package's files under `/var/task` (a layer zip's under `/opt`) and its Lambda
//! layers' under `/opt` — for the platform the spec names. The runtime's own files are not in
//! a zip: what lives outside `/var/task` and `/opt` (`/bin/sh`, the system's loader) is the
//! managed runtime's and is not judged, except that a bootstrap must name Amazon Linux's
//! loader.

use std::io::{self, Read};

use serde::Serialize;

use super::elf::{self, ElfHeader};
use super::fs::{FileSystem, Kind, Node};
use super::rules::{self, Finding, Process, Rule, Severity};
use super::runtime::{self, RuntimeInfo};
use super::{handler, native};
use crate::image::elf::{ElfFacts, Scanner};
use crate::image::fsindex::{BOOTSTRAPS, HEAD, META_HEAD, is_metadata};
use crate::layer::entry::{Data, Kind as EntryKind};
use crate::layer::source::Input;
use crate::platform::Platform;

/// What the zip gate needs to know besides the files.
#[derive(Clone, Debug)]
pub struct GateOptions {
    /// The platform the function runs on (the spec's `platform`).
    pub platform: Platform,
    /// The Lambda runtime name (`python3.12`) or its AWS base image reference, when known.
    pub runtime: Option<String>,
    /// The function's handler (`app.handler`), when the spec gives one.
    pub handler: Option<String>,
    /// The package is a Lambda layer's (its files under `/opt`), not a function's: it has no
    /// handler and need not hold a bootstrap.
    pub layer: bool,
}

/// What the zip gate found (and `lamina zip --json` prints when it refuses).
#[derive(Serialize, Debug, Clone)]
pub struct GateReport {
    /// The zip that was to be written.
    pub reference: String,
    /// `os/arch` checked for.
    pub platform: String,
    /// No error findings.
    pub ok: bool,
    /// Every finding.
    pub findings: Vec<Finding>,
}

/// The loaders Amazon Linux's managed runtimes have, per architecture: a bootstrap linked
/// against another (Alpine's musl loader, a Nix store path) does not start there.
fn system_loaders(arch: &str) -> &'static [&'static str] {
    match arch {
        "amd64" => &["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-x86-64.so.2"],
        "arm64" => &["/lib/ld-linux-aarch64.so.1", "/lib64/ld-linux-aarch64.so.1"],
        _ => &[],
    }
}

/// A file entry as the gate's file system holds it: its head (as the image index keeps one)
/// and ELF facts, read from `r` no further than they need.
pub(crate) fn probe_node(path: &str, mode: u32, size: u64, r: &mut dyn Read) -> io::Result<Node> {
    let meta = is_metadata(path);
    let cap = if meta { META_HEAD } else { HEAD };
    let mut head = Vec::with_capacity(cap);
    (&mut *r).take(cap as u64).read_to_end(&mut head)?;
    let is_elf = head.starts_with(b"\x7fELF");
    let mut facts: Option<ElfFacts> = None;
    if is_elf {
        let mut s = Scanner::new();
        s.feed(&head);
        let mut chunk = vec![0u8; 64 << 10];
        while s.wants_more() {
            let n = r.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            s.feed(&chunk[..n]);
        }
        facts = s.finish();
    }
    let keep = mode & 0o111 != 0 || is_elf || meta || BOOTSTRAPS.contains(&path);
    Ok(Node {
        kind: Kind::File,
        mode,
        size,
        head: keep.then_some(head),
        kept: None,
        elf: facts,
    })
}

/// [`probe_node`] for a file on disk: the gap before an ELF file's dynamic section is sought
/// over, not read.
fn probe_file(path: &str, mode: u32, size: u64, p: &std::path::Path) -> io::Result<Node> {
    use std::io::{Seek, SeekFrom};
    let mut f = io::BufReader::new(crate::image::blob::open_regular(p)?);
    let meta = is_metadata(path);
    let cap = if meta { META_HEAD } else { HEAD };
    let mut head = Vec::with_capacity(cap);
    (&mut f).take(cap as u64).read_to_end(&mut head)?;
    if !head.starts_with(b"\x7fELF") {
        return probe_node(path, mode, size, &mut io::Cursor::new(head));
    }
    let mut s = Scanner::new();
    s.feed(&head);
    let mut chunk = vec![0u8; 64 << 10];
    while s.wants_more() {
        if let Some(at) = s.wanted_at() {
            f.seek(SeekFrom::Start(at))?;
            s.skip_to(at);
        }
        let n = f.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        s.feed(&chunk[..n]);
    }
    let mut node = probe_node(path, mode, size, &mut io::Cursor::new(head))?;
    node.elf = s.finish();
    Ok(node)
}

/// The node of one collected entry at `path` (in-image, no leading `/`), its bytes read from
/// `input` as needed. Hard links are copies of their target (`None`: added by the caller).
pub(crate) fn node_of(
    path: &str,
    mode: u32,
    kind: &EntryKind,
    input: &mut Input,
) -> io::Result<Option<Node>> {
    Ok(Some(match kind {
        EntryKind::Dir => Node::dir(mode),
        EntryKind::Symlink(t) => Node::symlink(&String::from_utf8_lossy(t)),
        EntryKind::HardLink(_) => return Ok(None),
        EntryKind::File { size, data } => match data {
            Data::Empty => probe_node(path, mode, *size, &mut io::empty())?,
            Data::Path(p) => probe_file(path, mode, *size, p)?,
            Data::Zip(i) => match input {
                Input::Zip(z) => {
                    let mut f = z.by_index(*i).map_err(io::Error::other)?;
                    probe_node(path, mode, *size, &mut f)?
                }
                Input::Files => return Err(io::Error::other("its zip archive is not open")),
            },
        },
    }))
}

/// The file rules on a package's file system `fs` (the function's files under `/var/task`,
/// layers' under `/opt`): permissions (L008), native code (L009 to L011), the bootstrap and its
/// loader (L007, L012) and the handler (L014, L015).
pub fn check_files(fs: &FileSystem, o: &GateOptions) -> Vec<Finding> {
    let arch = o.platform.to_oci().architecture().to_string();
    let rt = runtime::detect(fs, o.runtime.as_deref());
    let mut v = bootstrap(fs, &arch, &rt, o.layer);
    v.extend(native::native(fs, &arch, &rt, &Process::default()));
    if let Some(h) = o.handler.as_deref().filter(|_| !is_custom(&rt) && !o.layer) {
        v.extend(handler::check(fs, &Process::default(), &rt, h, "/var/task"));
    }
    v.extend(rules::permissions(fs));
    let mut v = rules::cap_permission_findings(v);
    v.sort_by_key(|f| f.severity != Severity::Error);
    v
}

fn is_custom(rt: &RuntimeInfo) -> bool {
    rt.family == Some(crate::spec::runtime::Family::Provided)
}

/// L007 and L012 for the bootstrap of an OS-only runtime: `/var/task/bootstrap` (or
/// `/opt/bootstrap`) must be there, executable, for the platform, and an ELF one must name
/// the system's loader (or one the package carries).
fn bootstrap(fs: &FileSystem, arch: &str, rt: &RuntimeInfo, layer: bool) -> Vec<Finding> {
    let candidates = ["var/task/bootstrap", "opt/bootstrap"];
    let Some(path) = candidates.iter().find(|p| fs.exists(p)) else {
        if is_custom(rt) && !layer {
            return vec![Finding::new(
                Rule::L007,
                "the OS-only runtime runs /var/task/bootstrap (or a layer's /opt/bootstrap), and the package has neither: add the executable as `bootstrap` at the zip's root",
            )];
        }
        return Vec::new();
    };
    let shown = format!("/{path}");
    let Ok(real) = fs.resolve(path) else {
        return vec![Finding::at(
            Rule::L007,
            &shown,
            "the bootstrap is a dangling symbolic link",
        )];
    };
    let Some(node) = fs.get(&real).filter(|n| n.kind == Kind::File) else {
        return vec![Finding::at(
            Rule::L007,
            &shown,
            "the bootstrap is not a regular file",
        )];
    };
    if node.mode & 0o111 == 0 {
        return vec![Finding::at(
            Rule::L007,
            &shown,
            format!(
                "the bootstrap is not executable (mode {:04o}): it would fail with `permission denied` (chmod +x it, or zip with --fix-permissions)",
                node.mode
            ),
        )];
    }
    let Some(facts) = &node.elf else {
        return Vec::new(); // a script: its interpreter is the runtime's
    };
    let h = ElfHeader::from(facts);
    if let Err(e) = elf::check_runs_on(&h, arch) {
        return vec![Finding::at(
            Rule::L007,
            &shown,
            format!("the bootstrap {e}"),
        )];
    }
    match &facts.interp {
        Some(i) if !system_loaders(arch).contains(&i.as_str()) && fs.resolve(i).is_err() => {
            vec![Finding::at(
                Rule::L012,
                &shown,
                format!(
                    "is dynamically linked and its ELF interpreter {i} is neither Amazon Linux's ({}) nor in the package: starting it fails with `no such file or directory`; link it statically or against glibc",
                    system_loaders(arch).join(" or ")
                ),
            )]
        }
        _ => Vec::new(),
    }
}
