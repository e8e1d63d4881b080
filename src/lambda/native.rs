//! Native code for the wrong target (L009, L010, L011): what installs fine on a developer's
//! machine and fails at the first invoke with `invalid ELF header`, `cannot open shared object
//! file` or `No module named …`. Findings are grouped per package (a Python distribution, an
//! npm package) and name the command that fetches the right build.

use std::collections::{BTreeMap, BTreeSet};

use super::elf::{self, ElfHeader};
use super::fs::{FileSystem, Kind, Node};
use super::rules::{Finding, Process, Rule};
use super::runtime::RuntimeInfo;

/// Where native code is loaded from: the function, its layers and the runtime's own paths.
const NATIVE_ROOTS: [&str; 4] = ["var/task", "opt", "var/lang/lib", "var/runtime"];

/// A Python distribution installed beside the code: its `*.dist-info` directory.
struct Dist {
    /// The distribution's name as the directory spells it (`charset_normalizer`).
    name: String,
    /// The directory holding it (the site directory), without a leading `/`.
    site: String,
    /// Its top-level module names (`top_level.txt`, else the name).
    top: Vec<String>,
    /// The `*.dist-info` directory itself.
    dir: String,
}

/// `charset-normalizer`, `Charset_Normalizer` and `charset.normalizer` are one name.
fn norm(name: &str) -> String {
    name.to_ascii_lowercase().replace(['-', '.'], "_")
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

fn base_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One group of findings: the first path, how many paths, the message.
struct Group {
    path: String,
    more: usize,
    message: String,
}

/// Findings keyed by rule and package, so a package with 40 wrong `.so` files is one line.
#[derive(Default)]
struct Groups {
    by_key: BTreeMap<(Rule, String), Group>,
    /// Files outside any package reported one by one, and those left out past the cap.
    loose: usize,
    dropped: usize,
}

/// At most this many files outside a package are listed one by one (a base image for the
/// wrong architecture would list thousands); one more finding counts the rest.
const MAX_LOOSE: usize = 25;

impl Groups {
    fn add(&mut self, rule: Rule, key: &str, path: &str, message: impl FnOnce() -> String) {
        self.by_key
            .entry((rule, key.to_owned()))
            .and_modify(|g| g.more += 1)
            .or_insert_with(|| Group {
                path: format!("/{path}"),
                more: 0,
                message: message(),
            });
    }

    /// A file of no package, listed on its own up to [`MAX_LOOSE`].
    fn add_loose(&mut self, rule: Rule, path: &str, message: impl FnOnce() -> String) {
        if self.loose >= MAX_LOOSE {
            self.dropped += 1;
            return;
        }
        self.loose += 1;
        self.add(rule, path, path, message);
    }

    fn findings(self) -> Vec<Finding> {
        let dropped = self.dropped;
        let mut v: Vec<Finding> = self
            .by_key
            .into_iter()
            .map(|((rule, _), g)| {
                let more = match g.more {
                    0 => String::new(),
                    1 => " (and 1 more file of it)".to_owned(),
                    n => format!(" (and {n} more files of it)"),
                };
                Finding::at(rule, &g.path, format!("{}{more}", g.message))
            })
            .collect();
        if dropped > 0 {
            v.push(Finding::new(
                Rule::L009,
                format!("and {dropped} more native files for another architecture"),
            ));
        }
        v
    }
}

/// The image's view for these rules.
struct Ctx<'a> {
    fs: &'a FileSystem,
    arch: &'a str,
    rt: &'a RuntimeInfo,
    dists: Vec<Dist>,
}

/// L009, L010, L011 over `/var/task`, `/opt`, the runtime's library paths and
/// `LD_LIBRARY_PATH`.
pub fn native(fs: &FileSystem, arch: &str, rt: &RuntimeInfo, p: &Process) -> Vec<Finding> {
    if elf::expected_machine(arch).is_none() {
        return Vec::new(); // L003's business
    }
    let mut roots: Vec<String> = NATIVE_ROOTS.iter().map(|r| r.to_string()).collect();
    roots.extend(ld_library_path(p));
    let mut real_roots = BTreeSet::new();
    for r in roots {
        if let Ok(real) = fs.resolve(&r)
            && fs.get(&real).is_some_and(|n| n.kind == Kind::Dir)
        {
            real_roots.insert(real);
        }
    }
    let ctx = Ctx {
        fs,
        arch,
        rt,
        dists: dists(fs),
    };
    let mut groups = Groups::default();
    let mut visited = BTreeSet::new();
    for root in &real_roots {
        for (path, node) in fs.subtree(root) {
            if node.kind == Kind::File && visited.insert(path.to_owned()) {
                ctx.file(path, node, &mut groups);
            }
        }
    }
    for d in &ctx.dists {
        ctx.wheel(d, &mut groups);
    }
    groups.findings()
}

/// The directories of `LD_LIBRARY_PATH` in the config's env (without their leading `/`).
pub fn ld_library_path(p: &Process) -> Vec<String> {
    p.var("LD_LIBRARY_PATH")
        .map(|v| {
            v.split(':')
                .filter(|d| d.starts_with('/'))
                .map(|d| d.trim_matches('/').to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every `*.dist-info` directory under `/var/task` and `/opt`.
fn dists(fs: &FileSystem) -> Vec<Dist> {
    let mut v = Vec::new();
    for root in ["var/task", "opt"] {
        let Ok(real) = fs.resolve(root) else { continue };
        for (path, node) in fs.subtree(&real) {
            let Some(stem) = base_of(path).strip_suffix(".dist-info") else {
                continue;
            };
            if node.kind != Kind::Dir {
                continue;
            }
            let name = stem.split('-').next().unwrap_or(stem).to_owned();
            let top_level = fs
                .get(&format!("{path}/top_level.txt"))
                .and_then(|n| n.head.as_deref())
                .map(|h| {
                    String::from_utf8_lossy(h)
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let top = if top_level.is_empty() {
                vec![name.clone()]
            } else {
                top_level
            };
            v.push(Dist {
                name,
                site: parent_of(path).to_owned(),
                top,
                dir: path.to_owned(),
            });
        }
    }
    v
}

/// A Python package a file belongs to: `(name for pip, site directory)`.
struct PyPkg {
    name: String,
    site: String,
}

/// The module name of an extension module file: `md` of `md.cpython-311-x86_64-linux-gnu.so`.
fn module_stem(file: &str) -> &str {
    file.split('.').next().unwrap_or(file)
}

/// What a Python extension module's file name says: `(minor of cpython-3NN, platform)`;
/// `None` for a file that is not one. `abi3` modules give no version.
fn ext_tag(file: &str) -> Option<(Option<u32>, Option<String>)> {
    let stem = file.strip_suffix(".so")?;
    if stem.ends_with(".abi3") {
        return Some((None, None));
    }
    let (_, tag) = stem.split_once(".cpython-")?;
    let (ver, plat) = tag.split_once('-').unwrap_or((tag, ""));
    let digits: String = ver.chars().take_while(char::is_ascii_digit).collect();
    let minor = digits.strip_prefix('3').and_then(|m| m.parse().ok());
    Some((minor, (!plat.is_empty()).then(|| plat.to_owned())))
}

impl Ctx<'_> {
    /// The Python package `path` belongs to, if any: the distribution whose site directory
    /// holds the file's top-level directory (or module), else that top-level name.
    fn python_package(&self, path: &str) -> Option<PyPkg> {
        for d in &self.dists {
            let Some(rest) = path.strip_prefix(&format!("{}/", d.site)) else {
                continue;
            };
            let first = rest.split('/').next().unwrap_or(rest);
            let first = if rest.contains('/') {
                first
            } else {
                module_stem(first)
            };
            if d.top.iter().any(|t| t == first) || norm(&d.name) == norm(first) {
                return Some(PyPkg {
                    name: d.name.replace('_', "-"),
                    site: d.site.clone(),
                });
            }
        }
        let file = base_of(path);
        let in_site = path.contains("/site-packages/") || path.starts_with("opt/python/");
        if ext_tag(file).is_none() && !in_site {
            return None;
        }
        let (site, rest) = if let Some((a, b)) = path.split_once("/site-packages/") {
            (format!("{a}/site-packages"), b)
        } else if let Some(b) = path.strip_prefix("opt/python/") {
            ("opt/python".to_owned(), b)
        } else {
            let root = NATIVE_ROOTS
                .iter()
                .find(|r| path.starts_with(&format!("{r}/")))
                .copied()
                .unwrap_or("var/task");
            (root.to_owned(), &path[root.len().min(path.len())..])
        };
        let rest = rest.trim_start_matches('/');
        let first = match rest.split_once('/') {
            Some((dir, _)) => dir,
            None => module_stem(rest),
        };
        Some(PyPkg {
            name: first.to_owned(),
            site,
        })
    }

    /// `pip install` for the image: its platform, the runtime's Python, binary wheels only.
    fn pip_fix(&self, pkg: &PyPkg) -> String {
        let py = self
            .rt
            .python_version()
            .map(|v| format!(" --python-version {v}"))
            .unwrap_or_default();
        format!(
            "pip install --platform manylinux2014_{} --only-binary=:all:{py} --target <the directory that becomes /{}> {}",
            elf::gnu_arch(self.arch),
            pkg.site,
            pkg.name
        )
    }

    fn image(&self) -> String {
        format!("linux/{} ({})", self.arch, elf::gnu_arch(self.arch))
    }

    /// L009/L010/L011 for one regular file.
    fn file(&self, path: &str, node: &Node, groups: &mut Groups) {
        let file = base_of(path);
        if file.ends_with(".node") {
            return self.addon(path, node, groups);
        }
        let wrong_elf = node
            .elf
            .as_ref()
            .filter(|f| matches!(f.e_type, 2 | 3) && !elf::fits(&ElfHeader::from(*f), self.arch));
        let py = self.python_package(path);
        if let Some(f) = wrong_elf {
            let built = elf::describe(&ElfHeader::from(f));
            match &py {
                Some(pkg) => groups.add(Rule::L009, &pkg.name, path, || {
                    format!(
                        "is {built} native code of the Python package {}, but the image is {}: importing it fails with `invalid ELF header`; install the package's build for the image: {}",
                        pkg.name,
                        self.image(),
                        self.pip_fix(pkg)
                    )
                }),
                None => groups.add_loose(Rule::L009, path, || {
                    format!(
                        "is {built} native code, but the image is {}: loading it fails with `exec format error` or `wrong ELF class`; build or download it for {}",
                        self.image(),
                        self.image()
                    )
                }),
            }
        }
        let (Some(pkg), Some((minor, plat))) = (&py, ext_tag(file)) else {
            return;
        };
        let wrong_py = match (minor, self.rt.python) {
            (Some(m), Some((3, want))) if m != want => Some(format!("CPython 3.{m}")),
            _ => None,
        };
        let wrong_plat = plat.filter(|p| {
            p.contains("darwin")
                || p.contains("musl")
                || p.contains("win")
                || !p.starts_with(elf::gnu_arch(self.arch))
        });
        if wrong_py.is_none() && wrong_plat.is_none() {
            return;
        }
        let what = [wrong_py, wrong_plat]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        groups.add(Rule::L010, &pkg.name, path, || {
            format!(
                "is a Python extension module of the package {} built for {}, but the function runs {} on {}: importing it fails; install the matching wheel: {}",
                pkg.name,
                what.join(", "),
                self.rt.name.as_deref().unwrap_or("another Python"),
                self.image(),
                self.pip_fix(pkg)
            )
        });
    }

    /// L011: a Node.js addon must be a Linux ELF shared object for the image's CPU.
    fn addon(&self, path: &str, node: &Node, groups: &mut Groups) {
        let built = match &node.elf {
            Some(f) if elf::fits(&ElfHeader::from(f), self.arch) => return,
            Some(f) => elf::describe(&ElfHeader::from(f)),
            None if node.size == 0 => return,
            None => "not a Linux ELF shared object (built on macOS or Windows?)".to_owned(),
        };
        let pkg = npm_package(path);
        let cpu = match self.arch {
            "arm64" => "arm64",
            _ => "x64",
        };
        groups.add(Rule::L011, &pkg, path, || {
            format!(
                "is a Node.js addon of the package {pkg} that is {built}, but the image is {}: `require` fails with `invalid ELF header`; reinstall it for the image: `npm install --cpu={cpu} --os=linux` (npm 10+, in the directory that becomes /var/task), or run `npm ci` on linux/{}",
                self.image(),
                self.arch
            )
        });
    }

    /// L010 from a wheel's `WHEEL` file: none of its `Tag:` lines fits the runtime and CPU.
    fn wheel(&self, d: &Dist, groups: &mut Groups) {
        let dir = &d.dir;
        let path = format!("{dir}/WHEEL");
        let Some(text) = self.fs.get(&path).and_then(|n| n.head.as_deref()) else {
            return;
        };
        let text = String::from_utf8_lossy(text);
        let tags: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Tag:"))
            .map(str::trim)
            .collect();
        let arch = elf::gnu_arch(self.arch);
        if tags.is_empty() || tags.iter().any(|t| tag_fits(t, self.rt.python, arch)) {
            return;
        }
        let pkg = PyPkg {
            name: d.name.replace('_', "-"),
            site: d.site.clone(),
        };
        groups.add(Rule::L010, &pkg.name, &path, || {
            format!(
                "says the package {} is a wheel for {}, which does not fit {} on {}: install the matching wheel: {}",
                pkg.name,
                tags.join(", "),
                self.rt.name.as_deref().unwrap_or("the runtime"),
                self.image(),
                self.pip_fix(&pkg)
            )
        });
    }
}

/// `node_modules/@scope/name/…` → `@scope/name`; the first directory under the root
/// otherwise.
fn npm_package(path: &str) -> String {
    let Some((_, rest)) = path.rsplit_once("node_modules/") else {
        return parent_of(path).to_owned();
    };
    let mut parts = rest.split('/');
    match parts.next() {
        Some(scope) if scope.starts_with('@') => {
            format!("{scope}/{}", parts.next().unwrap_or(""))
        }
        Some(name) => name.to_owned(),
        None => rest.to_owned(),
    }
}

/// Does the wheel tag `interp-abi-platform` (each part possibly `.`-compressed) fit CPython
/// `py` (when known) on Linux glibc for `arch` (`x86_64`, `aarch64`)?
pub fn tag_fits(tag: &str, py: Option<(u32, u32)>, arch: &str) -> bool {
    let mut parts = tag.split('-');
    let (Some(interp), Some(abi), Some(plat), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let plat_ok = plat.split('.').any(|p| {
        p == "any" || ((p.starts_with("manylinux") || p.starts_with("linux_")) && p.ends_with(arch))
    });
    let interp_ok = |i: &str| {
        let Some((3, minor)) = py else {
            return true;
        };
        if i == "py3" || i == format!("py3{minor}") {
            return true;
        }
        let Some(v) = i.strip_prefix("cp3").and_then(|v| v.parse::<u32>().ok()) else {
            return false;
        };
        if abi.split('.').any(|a| a == "abi3") {
            v <= minor
        } else {
            v == minor
        }
    };
    plat_ok && interp.split('.').any(interp_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_tags() {
        let py312 = Some((3, 12));
        assert!(tag_fits("py3-none-any", py312, "aarch64"));
        assert!(tag_fits(
            "cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64",
            py312,
            "aarch64"
        ));
        assert!(!tag_fits(
            "cp311-cp311-manylinux_2_17_aarch64",
            py312,
            "aarch64"
        ));
        assert!(!tag_fits(
            "cp312-cp312-manylinux_2_17_x86_64",
            py312,
            "aarch64"
        ));
        assert!(tag_fits("cp38-abi3-manylinux2014_x86_64", py312, "x86_64"));
        assert!(!tag_fits(
            "cp312-cp312-musllinux_1_1_x86_64",
            py312,
            "x86_64"
        ));
        assert!(!tag_fits("cp312-cp312-macosx_11_0_arm64", py312, "aarch64"));
        assert!(tag_fits("cp311-cp311-manylinux2014_x86_64", None, "x86_64"));
    }

    fn so(machine: u16) -> Vec<u8> {
        let mut h = b"\x7fELF\x02\x01\x01\x00".to_vec();
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&3u16.to_le_bytes());
        h.extend_from_slice(&machine.to_le_bytes());
        h.extend_from_slice(&[0; 44]);
        h
    }

    /// Files of one package are one finding; loose files are capped.
    #[test]
    fn findings_are_grouped_and_capped() {
        let mut fs = FileSystem::new();
        for i in 0..3 {
            fs.insert(
                &format!("var/task/numpy/core/_m{i}.cpython-312-x86_64-linux-gnu.so"),
                Node::file(0o755, &so(elf::EM_X86_64)),
            );
        }
        for i in 0..30 {
            fs.insert(
                &format!("opt/lib/libx{i:02}.so"),
                Node::file(0o644, &so(elf::EM_X86_64)),
            );
        }
        // The right machine is fine.
        fs.insert("opt/lib/libok.so", Node::file(0o644, &so(elf::EM_AARCH64)));
        let rt = super::super::runtime::from_hint("python3.12").unwrap();
        let v = native(&fs, "arm64", &rt, &Process::default());
        let numpy: Vec<&Finding> = v
            .iter()
            .filter(|f| f.rule == Rule::L009 && f.message.contains("numpy"))
            .collect();
        assert_eq!(numpy.len(), 1, "{v:#?}");
        assert!(
            numpy[0].message.contains("and 2 more files"),
            "{}",
            numpy[0].message
        );
        let loose = v
            .iter()
            .filter(|f| {
                f.path
                    .as_deref()
                    .is_some_and(|p| p.starts_with("/opt/lib/"))
            })
            .count();
        assert_eq!(loose, MAX_LOOSE);
        assert!(v.last().unwrap().message.contains("and 5 more"), "{v:#?}");
        assert!(
            !v.iter()
                .any(|f| f.path.as_deref() == Some("/opt/lib/libok.so"))
        );
    }

    #[test]
    fn extension_file_names() {
        assert_eq!(
            ext_tag("md.cpython-311-x86_64-linux-gnu.so"),
            Some((Some(11), Some("x86_64-linux-gnu".into())))
        );
        assert_eq!(ext_tag("_rust.abi3.so"), Some((None, None)));
        assert_eq!(
            ext_tag("x.cpython-38-darwin.so"),
            Some((Some(8), Some("darwin".into())))
        );
        assert_eq!(ext_tag("libfoo.so"), None);
        assert_eq!(
            npm_package("var/task/node_modules/@scope/pkg/build/Release/a.node"),
            "@scope/pkg"
        );
        assert_eq!(
            npm_package("var/task/node_modules/a/node_modules/b/x.node"),
            "b"
        );
    }
}
