//! The Lambda compatibility rules: each a pure function from what an image says (manifest media
//! types, config, merged file system) to findings with a stable rule id, so they can be tested
//! on hand-made inputs and asked for by any caller.

use std::fmt;

use serde::Serialize;

use super::elf;
use super::fs::{BOOTSTRAPS, FileSystem, HEAD, Kind, ResolveError, normalize};
use crate::image::fs::DEFAULT_PATH;
use crate::platform::{Platform, describe};

/// The rules. Ids are stable: scripts match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Rule {
    /// Not a single-arch image manifest: an index.
    L001,
    /// A manifest, config or layer media type Lambda does not take.
    L002,
    /// A platform other than linux/amd64 or linux/arm64.
    L003,
    /// More than 10 GiB uncompressed.
    L004,
    /// No ENTRYPOINT and no CMD.
    L005,
    /// The entrypoint cannot be executed.
    L006,
    /// A bootstrap cannot be executed.
    L007,
    /// Files or directories under /var/task or /opt a non-root user cannot read or search.
    L008,
    /// Native code (an ELF executable or shared object under /var/task, /opt or the runtime's
    /// library paths) built for another architecture than the image's.
    L009,
    /// A Python extension module or wheel for another Python version or platform (its ABI tag
    /// in the file name, or the `Tag` lines of its `*.dist-info/WHEEL`).
    L010,
    /// A Node.js addon (`.node`) that is not a Linux shared object for the image's CPU.
    L011,
    /// A program Lambda starts (entrypoint, bootstrap, their `#!` interpreters) whose ELF
    /// interpreter (`PT_INTERP`) is missing from the image or built for another architecture.
    L012,
    /// A shared library such a program needs (`DT_NEEDED`) is in none of the image's library
    /// paths.
    L013,
    /// The handler does not resolve to a file the AWS-managed runtime would load.
    L014,
    /// The handler cannot be checked: the image's runtime is not one lamina recognizes.
    L015,
    /// The manifest is larger than Lambda's documented 25,400 bytes.
    L016,
    /// More layers than an overlay mount stacks (127).
    L017,
    /// A layer holds hard links to a lower layer's files (reported as a cause of
    /// `UnsupportedImageLayerDetected`).
    L018,
    /// A layer adds an entry whose parent directory neither it nor a layer below holds
    /// (`InvalidImage: MissingParentDirectory`).
    L019,
    /// `[function] runtime_client`: the client's interpreter (`python3`, `node`, `java`) is
    /// not on the base's PATH.
    L020,
    /// `[function] runtime_client`: the client's files are not where its `path` says.
    L021,
}

impl Rule {
    /// Whether the rule stops a push (error) or only warns.
    pub fn severity(self) -> Severity {
        match self {
            Rule::L008
            | Rule::L013
            | Rule::L015
            | Rule::L016
            | Rule::L017
            | Rule::L018
            | Rule::L019 => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Lambda refuses the image or the function fails to start.
    Error,
    /// Likely to fail at run time, depending on how the function uses the files.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem found, at an image path when it has one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule that found it.
    pub rule: Rule,
    /// The rule's severity.
    pub severity: Severity,
    /// What is wrong and how to fix it.
    pub message: String,
    /// The absolute path in the image at fault.
    pub path: Option<String>,
}

impl Finding {
    /// A finding about the image as a whole.
    pub fn new(rule: Rule, message: impl Into<String>) -> Finding {
        Finding {
            rule,
            severity: rule.severity(),
            message: message.into(),
            path: None,
        }
    }

    /// A finding about one path in the image.
    pub fn at(rule: Rule, path: &str, message: impl Into<String>) -> Finding {
        Finding {
            path: Some(path.to_owned()),
            ..Finding::new(rule, message)
        }
    }
}

/// `error L006 /var/task/bootstrap: is not executable (mode 0644)`
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.severity, self.rule)?;
        if let Some(p) = &self.path {
            write!(f, " {p}")?;
        }
        write!(f, ": {}", self.message)
    }
}

pub use crate::image::MAX_UNCOMPRESSED;

pub const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
pub const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
pub const LAYER_TYPES: [&str; 2] = [
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// How deep `#!` interpreters may nest (a script run by a script...), as the kernel allows.
const MAX_INTERPRETERS: u32 = 4;

/// At most this many L008 findings are listed; one more says how many were left out.
pub const MAX_PERMISSION_FINDINGS: usize = 25;

/// An index entry, as L001 describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// `os/arch[/variant]`, or `unknown/unknown`.
    pub platform: String,
    /// A buildx attestation (provenance, SBOM) rather than an image.
    pub attestation: bool,
}

/// L001: `reference` resolves to an index with `entries`.
pub fn index(entries: &[IndexEntry]) -> Finding {
    let listed: Vec<String> = entries
        .iter()
        .map(|e| {
            if e.attestation {
                format!("{} (attestation)", e.platform)
            } else {
                e.platform.clone()
            }
        })
        .collect();
    let images: Vec<&IndexEntry> = entries.iter().filter(|e| !e.attestation).collect();
    let what = if images.len() < entries.len() {
        "an image index carrying attestation manifests"
    } else if images.len() > 1 {
        "a multi-platform image index"
    } else {
        "an image index"
    };
    let hint = match images.as_slice() {
        [one] => format!(
            "push just the image with --platform {} (and build with `--provenance=false --sbom=false` under buildx)",
            one.platform
        ),
        _ => "push one platform with --platform".to_owned(),
    };
    Finding::new(
        Rule::L001,
        format!(
            "is {what} ({}), not a single image manifest; Lambda takes one image manifest: {hint}",
            listed.join(", ")
        ),
    )
}

/// L002: the manifest's, config's and layers' media types. `layers` are `(digest, media type)`.
pub fn media_types(manifest: &str, config: &str, layers: &[(String, String)]) -> Vec<Finding> {
    let mut v = Vec::new();
    if !MANIFEST_TYPES.contains(&manifest) {
        v.push(Finding::new(
            Rule::L002,
            format!(
                "the manifest's media type is {manifest}; Lambda takes an OCI image manifest ({}) or a Docker v2 schema 2 manifest ({})",
                MANIFEST_TYPES[0], MANIFEST_TYPES[1]
            ),
        ));
    }
    if !CONFIG_TYPES.contains(&config) {
        v.push(Finding::new(
            Rule::L002,
            format!(
                "the config's media type is {config}, not a container image config ({} or {}): the manifest describes an artifact, not an image",
                CONFIG_TYPES[0], CONFIG_TYPES[1]
            ),
        ));
    }
    for (digest, mt) in layers {
        if LAYER_TYPES.contains(&mt.as_str()) {
            continue;
        }
        let why = if mt.ends_with("+zstd") || mt.ends_with(".zstd") {
            "is zstd-compressed"
        } else if mt.ends_with(".tar") || mt.ends_with("v1.tar") {
            "is an uncompressed tar"
        } else if mt.contains("nondistributable") || mt.contains("foreign") {
            "is a non-distributable (foreign) layer"
        } else {
            "is not a gzip-compressed tar layer"
        };
        v.push(Finding::new(
            Rule::L002,
            format!(
                "layer {digest} {why} ({mt}); Lambda takes only gzip layers ({} or {}): rebuild or convert it with gzip",
                LAYER_TYPES[0], LAYER_TYPES[1]
            ),
        ));
    }
    v
}

/// L003: the config's platform.
pub fn platform(os: &str, arch: &str, variant: Option<&str>) -> Vec<Finding> {
    if Platform::ALL.iter().any(|p| p.matches(os, arch, variant)) {
        return Vec::new();
    }
    vec![Finding::new(
        Rule::L003,
        format!(
            "the image is for {}; Lambda runs linux/amd64 (x86_64) and linux/arm64 (arm64) only",
            describe(os, arch, variant)
        ),
    )]
}

/// L004: the sum of the layers' uncompressed sizes.
pub fn size(uncompressed: u64) -> Vec<Finding> {
    if uncompressed <= MAX_UNCOMPRESSED {
        return Vec::new();
    }
    vec![Finding::new(
        Rule::L004,
        format!(
            "the image is {uncompressed} bytes ({:.2} GiB) uncompressed, over Lambda's limit of 10 GiB",
            uncompressed as f64 / (1u64 << 30) as f64
        ),
    )]
}

/// What the runtime starts: the config's process fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`
    pub env: Vec<String>,
    /// Empty: `/`.
    pub workdir: String,
}

impl Process {
    pub fn of(config: &oci_spec::image::ImageConfiguration) -> Process {
        let c = config.config().clone().unwrap_or_default();
        Process {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            workdir: c.working_dir().clone().unwrap_or_default(),
        }
    }

    /// The value of variable `name` in the env (the last one set wins, as in Docker).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    }

    /// `PATH` from the env, else the runtime's default.
    pub fn path_var(&self) -> String {
        self.var("PATH").unwrap_or(DEFAULT_PATH).to_owned()
    }

    /// argv\[0\]: ENTRYPOINT's first word, else CMD's.
    pub fn argv0(&self) -> Option<&str> {
        self.entrypoint
            .first()
            .or(self.cmd.first())
            .map(String::as_str)
    }

    /// An image path as the process sees it: absolute, or relative to the working directory.
    fn absolute(&self, p: &str) -> String {
        if p.starts_with('/') {
            p.to_owned()
        } else {
            format!("{}/{p}", self.workdir.trim_end_matches('/'))
        }
    }
}

/// What running the programs found besides errors: paths only their owner or group may execute.
#[derive(Default)]
struct Seen {
    owner_only: Vec<String>,
    /// The ELF programs reached that run on the architecture (absolute, links resolved).
    elves: Vec<String>,
}

/// Where `name` (no `/`) is found in `PATH`, as the runtime looks it up: the first executable
/// regular file, else the first existing path (to report why it cannot run).
fn look_up(fs: &FileSystem, p: &Process, name: &str) -> Option<String> {
    let mut first = None;
    for dir in p.path_var().split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = p.absolute(&format!("{}/{name}", dir.trim_end_matches('/')));
        let Ok(real) = fs.resolve(&candidate) else {
            continue;
        };
        let Some(node) = fs.get(&real) else { continue };
        if node.kind == Kind::File && node.mode & 0o111 != 0 {
            return Some(candidate);
        }
        first.get_or_insert(candidate);
    }
    first
}

/// Why `path` (absolute) cannot be executed on `arch`, following links, `#!` interpreters (and
/// `/usr/bin/env NAME`) through the image.
fn exec_problem(
    fs: &FileSystem,
    p: &Process,
    path: &str,
    arch: &str,
    depth: u32,
    seen: &mut Seen,
) -> Option<String> {
    let real = match fs.resolve(path) {
        Ok(r) => r,
        Err(ResolveError::Missing(m)) if normalize(&m) == normalize(path) => {
            return Some("is not in the image".into());
        }
        Err(ResolveError::Missing(m)) => {
            return Some(format!("is not in the image ({m} does not exist)"));
        }
        Err(ResolveError::NotADirectory(d)) => {
            return Some(format!("cannot be reached: {d} is not a directory"));
        }
        Err(ResolveError::TooManyLinks) => {
            return Some("cannot be reached: too many levels of symbolic links".into());
        }
    };
    let via = if normalize(&real) == normalize(path) {
        String::new()
    } else {
        format!(" (-> /{real})")
    };
    let node = fs.get(&real)?;
    match &node.kind {
        Kind::File => {}
        Kind::Dir => return Some(format!("is a directory{via}, not an executable file")),
        Kind::Other(what) => return Some(format!("is {what}{via}, not an executable file")),
        Kind::Symlink(_) => return Some(format!("is a dangling symbolic link{via}")),
    }
    if node.mode & 0o111 == 0 {
        return Some(format!(
            "is not executable{via} (mode {:04o}): it would fail with `permission denied`",
            node.mode
        ));
    }
    if node.mode & 0o001 == 0 {
        seen.owner_only.push(format!("/{real}"));
    }
    let head = node.head.as_deref()?;
    if elf::is_elf(head) {
        return match elf::parse(head).and_then(|h| elf::check_runs_on(&h, arch)) {
            Ok(()) => {
                seen.elves.push(format!("/{real}"));
                None
            }
            Err(e) => Some(format!("{e}{via}")),
        };
    }
    let Some(line) = head.strip_prefix(b"#!") else {
        return Some(format!(
            "is neither an ELF executable nor a #! script{via}: it would fail with `exec format error`"
        ));
    };
    let Some(end) = line.iter().position(|&b| b == b'\n') else {
        if head.len() < HEAD {
            // The whole file is the #! line.
            return interpreter_problem(fs, p, line, arch, depth, seen);
        }
        return None; // a #! line longer than what was kept: not judged
    };
    interpreter_problem(fs, p, &line[..end], arch, depth, seen)
}

/// Why a `#!` line's interpreter (and `env`'s program) cannot run.
fn interpreter_problem(
    fs: &FileSystem,
    p: &Process,
    line: &[u8],
    arch: &str,
    depth: u32,
    seen: &mut Seen,
) -> Option<String> {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches('\r').trim();
    let (interp, arg) = match line.split_once([' ', '\t']) {
        Some((i, a)) => (i, a.trim()),
        None => (line, ""),
    };
    if interp.is_empty() {
        return Some("has an empty #! line: it would fail with `exec format error`".into());
    }
    if depth >= MAX_INTERPRETERS {
        return Some(format!(
            "nests #! interpreters more than {MAX_INTERPRETERS} deep"
        ));
    }
    let interp_abs = p.absolute(interp);
    if let Some(e) = exec_problem(fs, p, &interp_abs, arch, depth + 1, seen) {
        return Some(format!(
            "has the interpreter {interp} (#!{line}), which {e}"
        ));
    }
    // `#!/usr/bin/env NAME`: env looks NAME up in PATH.
    let is_env = interp.rsplit('/').next() == Some("env");
    let program = arg.split_whitespace().next().unwrap_or("");
    if !is_env || program.is_empty() || program.starts_with('-') || program.contains('=') {
        return None;
    }
    let found = if program.contains('/') {
        Some(p.absolute(program))
    } else {
        look_up(fs, p, program)
    };
    let Some(found) = found else {
        return Some(format!(
            "runs `{program}` through {interp} (#!{line}), but `{program}` is not in the image's PATH ({})",
            p.path_var()
        ));
    };
    exec_problem(fs, p, &found, arch, depth + 1, seen)
        .map(|e| format!("runs `{program}` through {interp} (#!{line}); {found} {e}"))
}

/// L008 warnings for programs the checks would run that only their owner may execute.
fn owner_only_findings(seen: Seen) -> Vec<Finding> {
    let mut paths = seen.owner_only;
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .map(|p| {
            Finding::at(
                Rule::L008,
                &p,
                "is executable by its owner (or group) only: Lambda runs the function as a non-root user (add o+x, or build with --fix-permissions)",
            )
        })
        .collect()
}

/// L005 and L006: something to run, and that it runs on `arch`.
pub fn command(fs: &FileSystem, p: &Process, arch: &str) -> Vec<Finding> {
    let Some(argv0) = p.argv0() else {
        return vec![Finding::new(
            Rule::L005,
            "the image has no ENTRYPOINT and no CMD: Lambda has nothing to start (set [config] entrypoint or cmd)",
        )];
    };
    if argv0.is_empty() {
        return vec![Finding::new(
            Rule::L006,
            "the entrypoint is an empty string",
        )];
    }
    let what = if p.entrypoint.is_empty() {
        "CMD[0]"
    } else {
        "ENTRYPOINT[0]"
    };
    let path = if argv0.contains('/') {
        p.absolute(argv0)
    } else {
        match look_up(fs, p, argv0) {
            Some(found) => found,
            None => {
                return vec![Finding::at(
                    Rule::L006,
                    argv0,
                    format!(
                        "the entrypoint ({what}) is not in any directory of the image's PATH ({})",
                        p.path_var()
                    ),
                )];
            }
        }
    };
    let mut seen = Seen::default();
    let mut v = Vec::new();
    if let Some(e) = exec_problem(fs, p, &path, arch, 0, &mut seen) {
        v.push(Finding::at(
            Rule::L006,
            &path,
            format!("the entrypoint ({what}) {e}"),
        ));
    }
    v.extend(owner_only_findings(seen));
    v
}

/// Where ENTRYPOINT\[0\] (else CMD\[0\]) leads: absolute, looked up in `PATH` when it has
/// no `/`.
fn argv0_path(fs: &FileSystem, p: &Process) -> Option<String> {
    let argv0 = p.argv0().filter(|a| !a.is_empty())?;
    if argv0.contains('/') {
        Some(p.absolute(argv0))
    } else {
        look_up(fs, p, argv0)
    }
}

/// The ELF programs the kernel would load to start the function on `arch`: the entrypoint,
/// the bootstraps present and the `#!` interpreters they name, each once (absolute, links
/// resolved), as far as they run on `arch` (what does not is L006's and L007's business).
pub fn started_programs(fs: &FileSystem, p: &Process, arch: &str) -> Vec<String> {
    let mut seen = Seen::default();
    let mut starts: Vec<String> = argv0_path(fs, p).into_iter().collect();
    starts.extend(
        BOOTSTRAPS
            .iter()
            .map(|b| format!("/{b}"))
            .filter(|b| fs.exists(b)),
    );
    for s in starts {
        let _ = exec_problem(fs, p, &s, arch, 0, &mut seen);
    }
    let mut v = seen.elves;
    v.sort();
    v.dedup();
    v
}

/// L007: `/var/runtime/bootstrap` and `/var/task/bootstrap`, where present, must run.
pub fn bootstraps(fs: &FileSystem, p: &Process, arch: &str) -> Vec<Finding> {
    let mut v = Vec::new();
    let mut seen = Seen::default();
    for b in BOOTSTRAPS {
        let path = format!("/{b}");
        if !fs.exists(&path) {
            continue;
        }
        if let Some(e) = exec_problem(fs, p, &path, arch, 0, &mut seen) {
            v.push(Finding::at(Rule::L007, &path, format!("the bootstrap {e}")));
        }
    }
    v.extend(owner_only_findings(seen));
    v
}

/// L008: what a non-root user cannot read (files) or search (directories) under `/var/task`
/// and `/opt`, and executables there only their owner may run.
pub fn permissions(fs: &FileSystem) -> Vec<Finding> {
    let mut v = Vec::new();
    for root in ["var/task", "opt"] {
        let Ok(real) = fs.resolve(root) else { continue };
        for (path, node) in fs.subtree(&real) {
            let shown = format!("/{path}");
            let m = node.mode;
            let why = match node.kind {
                Kind::Dir if m & 0o001 == 0 => format!(
                    "is a directory others cannot search (mode {m:04o}): Lambda runs the function as a non-root user"
                ),
                Kind::File if m & 0o004 == 0 => format!(
                    "is not readable by others (mode {m:04o}): Lambda runs the function as a non-root user"
                ),
                Kind::File if m & 0o111 != 0 && m & 0o001 == 0 => format!(
                    "is executable by its owner (or group) only (mode {m:04o}): Lambda runs the function as a non-root user"
                ),
                _ => continue,
            };
            v.push(Finding::at(Rule::L008, &shown, why));
        }
    }
    v
}

/// Keep the first [`MAX_PERMISSION_FINDINGS`] L008 findings (deduplicated by path), and say how
/// many more there were; other findings are kept as they are.
pub fn cap_permission_findings(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut paths = std::collections::BTreeSet::new();
    let mut dropped = 0usize;
    for f in findings {
        if f.rule != Rule::L008 {
            out.push(f);
            continue;
        }
        if !paths.insert(f.path.clone()) {
            continue;
        }
        if paths.len() > MAX_PERMISSION_FINDINGS {
            dropped += 1;
        } else {
            out.push(f);
        }
    }
    if dropped > 0 {
        out.push(Finding::new(
            Rule::L008,
            format!(
                "and {dropped} more paths that a non-root user cannot read, search or execute (build with --fix-permissions to fix the layers lamina writes)"
            ),
        ));
    }
    out
}

/// The rules that need the file system: L004 to L008.
pub fn file_system(fs: &FileSystem, uncompressed: u64, p: &Process, arch: &str) -> Vec<Finding> {
    let mut v = size(uncompressed);
    v.extend(command(fs, p, arch));
    v.extend(bootstraps(fs, p, arch));
    v.extend(permissions(fs));
    cap_permission_findings(v)
}

/// Every rule that needs the file system: L004 to L008, then the native code (L009 to L011),
/// the programs' loaders and libraries (L012, L013), the handler (L014, L015) and the layers'
/// shapes (L018, L019).
pub fn file_system_for(
    fs: &FileSystem,
    uncompressed: u64,
    p: &Process,
    arch: &str,
    rt: &super::runtime::RuntimeInfo,
) -> Vec<Finding> {
    let mut v = file_system(fs, uncompressed, p, arch);
    // A program L006 or L007 already refuses for its architecture is not reported twice.
    let refused: Vec<Option<String>> = v
        .iter()
        .filter(|f| matches!(f.rule, Rule::L006 | Rule::L007))
        .map(|f| f.path.clone())
        .collect();
    v.extend(
        super::native::native(fs, arch, rt, p)
            .into_iter()
            .filter(|f| f.rule != Rule::L009 || !refused.contains(&f.path)),
    );
    v.extend(super::start::start(fs, p, arch));
    v.extend(super::handler::handler(fs, p, rt));
    v.extend(super::budgets::shapes(fs));
    v
}

#[cfg(test)]
mod tests {
    use super::super::fs::Node;
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut h = b"\x7fELF\x02\x01\x01\x00".to_vec();
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&machine.to_le_bytes());
        h.extend_from_slice(&[0; 100]);
        h
    }

    /// A fixture-like image: /bin -> usr/bin, usr/bin/sh an x86-64 ELF, the entrypoint script.
    fn base() -> FileSystem {
        let mut fs = FileSystem::new();
        fs.insert("bin", Node::symlink("usr/bin"));
        fs.insert("usr/bin/sh", Node::file(0o755, &elf(elf::EM_X86_64)));
        fs.insert("usr/bin/env", Node::file(0o755, &elf(elf::EM_X86_64)));
        fs.insert(
            "lambda-entrypoint.sh",
            Node::file(0o755, b"#!/bin/sh\nexec /var/task/bootstrap\n"),
        );
        fs.insert("var/task", Node::dir(0o755));
        fs.insert("var/runtime", Node::dir(0o755));
        fs.insert("opt", Node::dir(0o755));
        fs
    }

    fn process(entrypoint: &[&str], cmd: &[&str]) -> Process {
        Process {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/usr/local/bin:/usr/bin/:/bin".into()],
            workdir: "/var/task".into(),
        }
    }

    fn rules(v: &[Finding]) -> Vec<(Rule, Option<&str>)> {
        v.iter().map(|f| (f.rule, f.path.as_deref())).collect()
    }

    #[test]
    fn a_sound_image_passes() {
        let mut fs = base();
        fs.insert(
            "var/task/bootstrap",
            Node::file(0o755, b"#!/bin/sh\necho hi\n"),
        );
        fs.insert("var/task/handler.sh", Node::file(0o644, b""));
        let p = process(&["/lambda-entrypoint.sh"], &["handler.handle"]);
        assert_eq!(file_system(&fs, 1 << 20, &p, "amd64"), []);
    }

    #[test]
    fn l001_names_platforms_and_attestations() {
        let f = index(&[
            IndexEntry {
                platform: "linux/amd64".into(),
                attestation: false,
            },
            IndexEntry {
                platform: "unknown/unknown".into(),
                attestation: true,
            },
        ]);
        assert_eq!(f.rule, Rule::L001);
        assert_eq!(f.severity, Severity::Error);
        assert!(f.message.contains("attestation"), "{}", f.message);
        assert!(
            f.message.contains("--platform linux/amd64"),
            "{}",
            f.message
        );
        let f = index(&[
            IndexEntry {
                platform: "linux/amd64".into(),
                attestation: false,
            },
            IndexEntry {
                platform: "linux/arm64/v8".into(),
                attestation: false,
            },
        ]);
        assert!(f.message.contains("multi-platform"), "{}", f.message);
    }

    #[test]
    fn l002_takes_gzip_layers_and_image_manifests_only() {
        let ok = media_types(
            MANIFEST_TYPES[1],
            CONFIG_TYPES[1],
            &[("sha256:a".into(), LAYER_TYPES[1].into())],
        );
        assert_eq!(ok, []);
        let v = media_types(
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "application/vnd.example.artifact+json",
            &[
                ("sha256:a".into(), LAYER_TYPES[0].into()),
                (
                    "sha256:z".into(),
                    "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                ),
                (
                    "sha256:t".into(),
                    "application/vnd.oci.image.layer.v1.tar".into(),
                ),
            ],
        );
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v.iter().all(|f| f.rule == Rule::L002));
        assert!(v[2].message.contains("sha256:z") && v[2].message.contains("zstd"));
        assert!(v[3].message.contains("uncompressed"));
    }

    #[test]
    fn l003_accepts_the_two_lambda_platforms() {
        assert_eq!(platform("linux", "amd64", None), []);
        assert_eq!(platform("linux", "arm64", Some("v8")), []);
        let v = platform("linux", "s390x", None);
        assert_eq!(rules(&v), [(Rule::L003, None)]);
        assert!(v[0].message.contains("linux/s390x"));
        assert_eq!(platform("windows", "amd64", None).len(), 1);
        assert_eq!(platform("linux", "arm", Some("v7")).len(), 1);
    }

    #[test]
    fn l004_counts_past_ten_gib() {
        assert_eq!(size(MAX_UNCOMPRESSED), []);
        let v = size(MAX_UNCOMPRESSED + 1);
        assert_eq!(rules(&v), [(Rule::L004, None)]);
        assert!(v[0].message.contains("10.00 GiB"), "{}", v[0].message);
    }

    #[test]
    fn l005_without_entrypoint_or_cmd() {
        let v = command(&base(), &process(&[], &[]), "amd64");
        assert_eq!(rules(&v), [(Rule::L005, None)]);
        // CMD alone is enough.
        let v = command(&base(), &process(&[], &["/lambda-entrypoint.sh"]), "amd64");
        assert_eq!(v, []);
    }

    #[test]
    fn l006_missing_unexecutable_or_wrong_architecture() {
        let mut fs = base();
        fs.insert("var/task/plain", Node::file(0o644, b"#!/bin/sh\n"));
        fs.insert("var/task/arm", Node::file(0o755, &elf(elf::EM_AARCH64)));
        fs.insert("var/task/py", Node::file(0o755, b"#!/usr/bin/python3\n"));
        fs.insert(
            "var/task/envpy",
            Node::file(0o755, b"#!/usr/bin/env python3 -u\n"),
        );
        fs.insert("var/task/text", Node::file(0o755, b"echo no shebang\n"));
        fs.insert("var/task/dir", Node::dir(0o755));
        fs.insert("var/task/dangling", Node::symlink("/nowhere"));
        let cases: [(&str, &str); 8] = [
            ("/var/task/missing", "is not in the image"),
            ("/var/task/plain", "not executable"),
            ("/var/task/arm", "exec format error"),
            ("/var/task/py", "/usr/bin/python3"),
            ("/var/task/envpy", "python3"),
            ("/var/task/text", "exec format error"),
            ("/var/task/dir", "directory"),
            ("/var/task/dangling", "/nowhere"),
        ];
        for (ep, want) in cases {
            let v = command(&fs, &process(&[ep], &[]), "amd64");
            assert_eq!(rules(&v), [(Rule::L006, Some(ep))], "{ep}: {v:?}");
            assert!(v[0].message.contains(want), "{ep}: {}", v[0].message);
        }
        // The arm64 ELF is fine on arm64, but /bin/sh (x86-64) is not: scripts fail there.
        assert_eq!(command(&fs, &process(&["/var/task/arm"], &[]), "arm64"), []);
        let v = command(&fs, &process(&["/lambda-entrypoint.sh"], &[]), "arm64");
        assert_eq!(rules(&v), [(Rule::L006, Some("/lambda-entrypoint.sh"))]);
        assert!(
            v[0].message.contains("/bin/sh") && v[0].message.contains("x86-64"),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn l006_looks_relative_names_up_in_path() {
        let mut fs = base();
        let v = command(&fs, &process(&["sh"], &["-c", "true"]), "amd64");
        assert_eq!(v, []);
        let v = command(&fs, &process(&["node"], &[]), "amd64");
        assert_eq!(rules(&v), [(Rule::L006, Some("node"))]);
        assert!(v[0].message.contains("PATH"), "{}", v[0].message);
        // A relative path with a slash is relative to the working directory.
        fs.insert("var/task/run", Node::file(0o755, &elf(elf::EM_X86_64)));
        assert_eq!(command(&fs, &process(&["./run"], &[]), "amd64"), []);
        // Without PATH in the env, the runtime's default applies.
        let mut p = process(&["env"], &[]);
        p.env.clear();
        assert_eq!(command(&fs, &p, "amd64"), []);
    }

    #[test]
    fn l006_follows_symlinks_to_the_interpreter() {
        let mut fs = FileSystem::new();
        fs.insert("bin", Node::symlink("usr/bin"));
        fs.insert("usr/bin/sh", Node::symlink("dash"));
        fs.insert("usr/bin/dash", Node::file(0o755, &elf(elf::EM_AARCH64)));
        fs.insert("var/task/bootstrap", Node::file(0o755, b"#!/bin/sh\n"));
        let p = process(&["/var/task/bootstrap"], &[]);
        assert_eq!(command(&fs, &p, "arm64"), []);
        let v = command(&fs, &p, "amd64");
        assert_eq!(rules(&v), [(Rule::L006, Some("/var/task/bootstrap"))]);
        assert!(
            v[0].message.contains("/usr/bin/dash") && v[0].message.contains("AArch64"),
            "{}",
            v[0].message
        );
        fs.remove("usr/bin/dash");
        let v = command(&fs, &p, "arm64");
        assert!(v[0].message.contains("/usr/bin/dash"), "{}", v[0].message);
    }

    #[test]
    fn l007_checks_bootstraps_where_present() {
        let p = process(&["/lambda-entrypoint.sh"], &[]);
        let mut fs = base();
        assert_eq!(bootstraps(&fs, &p, "amd64"), []);
        fs.insert("var/runtime/bootstrap", Node::file(0o644, &elf(62)));
        fs.insert("var/task/bootstrap", Node::file(0o755, &elf(183)));
        let v = bootstraps(&fs, &p, "amd64");
        assert_eq!(
            rules(&v),
            [
                (Rule::L007, Some("/var/runtime/bootstrap")),
                (Rule::L007, Some("/var/task/bootstrap"))
            ]
        );
        assert!(v[0].message.contains("not executable"));
        assert!(v[1].message.contains("AArch64"));
        // A dangling link is present, and broken.
        let mut fs = base();
        fs.insert("var/task/bootstrap", Node::symlink("../runtime/gone"));
        let v = bootstraps(&fs, &p, "amd64");
        assert!(v[0].message.contains("/var/runtime/gone"), "{:?}", v);
    }

    #[test]
    fn l008_warns_on_what_others_cannot_read() {
        let mut fs = base();
        fs.insert("var/task/secret.txt", Node::file(0o600, b""));
        fs.insert("var/task/ok.txt", Node::file(0o644, b""));
        fs.insert("opt/ext", Node::dir(0o750));
        fs.insert("opt/ext/tool", Node::file(0o744, b"#!/bin/sh\n"));
        fs.insert("usr/secret", Node::file(0o600, b""));
        let v = permissions(&fs);
        assert_eq!(
            rules(&v),
            [
                (Rule::L008, Some("/var/task/secret.txt")),
                (Rule::L008, Some("/opt/ext")),
                (Rule::L008, Some("/opt/ext/tool")),
            ]
        );
        assert!(v.iter().all(|f| f.severity == Severity::Warning));
        // The entrypoint itself, executable by its owner only.
        fs.insert("var/task/bootstrap", Node::file(0o700, b"#!/bin/sh\n"));
        let v = command(&fs, &process(&["/var/task/bootstrap"], &[]), "amd64");
        assert_eq!(rules(&v), [(Rule::L008, Some("/var/task/bootstrap"))]);
    }

    #[test]
    fn l008_findings_are_capped() {
        let mut fs = base();
        for i in 0..40 {
            fs.insert(&format!("var/task/f{i:02}"), Node::file(0o600, b""));
        }
        let v = cap_permission_findings(permissions(&fs));
        assert_eq!(v.len(), MAX_PERMISSION_FINDINGS + 1);
        assert!(v.last().unwrap().message.contains("15 more"));
    }

    #[test]
    fn findings_print_as_one_line() {
        let f = Finding::at(Rule::L006, "/var/task/bootstrap", "is not in the image");
        assert_eq!(
            f.to_string(),
            "error L006 /var/task/bootstrap: is not in the image"
        );
        assert_eq!(
            Finding::new(Rule::L005, "nothing").to_string(),
            "error L005: nothing"
        );
        let j = serde_json::to_value(&f).unwrap();
        assert_eq!(j["rule"], "L006");
        assert_eq!(j["severity"], "error");
    }
}
