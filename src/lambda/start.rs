//! Programs that cannot start (L012, L013): the kernel loads an ELF program's interpreter
//! (`PT_INTERP`, the dynamic loader) before the program itself, so a dynamically linked
//! bootstrap on `scratch` fails with `no such file or directory` although the file is there;
//! the loader then needs every `DT_NEEDED` library from the library paths.

use super::elf::{self, ElfHeader};
use super::fs::{FileSystem, Kind};
use super::native::ld_library_path;
use super::rules::{Finding, Process, Rule, started_programs};

/// Where the dynamic loader looks, besides `LD_LIBRARY_PATH`: the system directories (the
/// multiarch ones included), and where Lambda puts a function's and its layers' libraries.
fn library_dirs(arch: &str) -> Vec<String> {
    let triplet = format!("{}-linux-gnu", elf::gnu_arch(arch));
    let mut v: Vec<String> = [
        "lib",
        "lib64",
        "usr/lib",
        "usr/lib64",
        "usr/local/lib",
        "usr/local/lib64",
        "var/lang/lib",
        "var/task/lib",
        "opt/lib",
    ]
    .iter()
    .map(|d| d.to_string())
    .collect();
    v.push(format!("lib/{triplet}"));
    v.push(format!("usr/lib/{triplet}"));
    v
}

/// L012 and L013 for every ELF program that starts the function.
pub fn start(fs: &FileSystem, p: &Process, arch: &str) -> Vec<Finding> {
    let mut v = Vec::new();
    for prog in started_programs(fs, p, arch) {
        let Some(facts) = fs.get(&prog).and_then(|n| n.elf.as_ref()) else {
            continue;
        };
        let Some(interp) = &facts.interp else {
            continue; // statically linked
        };
        if let Some(why) = interpreter_problem(fs, interp, arch) {
            v.push(Finding::at(
                Rule::L012,
                &prog,
                format!(
                    "is dynamically linked and its ELF interpreter {interp} {why}: starting it fails with `no such file or directory` (the file is there, its loader is not); link it statically (e.g. `--target {}-unknown-linux-musl`, `CGO_ENABLED=0 go build`) or build on a base that has the loader (provided.al2023)",
                    elf::gnu_arch(arch)
                ),
            ));
            continue;
        }
        let Some(needed) = &facts.needed else {
            continue;
        };
        let mut dirs: Vec<String> = ld_library_path(p);
        dirs.extend(library_dirs(arch));
        let own = prog.trim_start_matches('/');
        let own_dir = own.rsplit_once('/').map_or("", |(d, _)| d);
        // Its own run paths first, `$ORIGIN` being its directory; then, for binaries that
        // rely on an `LD_LIBRARY_PATH` set by a wrapper, its directory and ../lib.
        for r in &facts.runpath {
            let r = r
                .replace("${ORIGIN}", "$ORIGIN")
                .replace("$ORIGIN", &format!("/{own_dir}"));
            dirs.push(r.trim_start_matches('/').to_owned());
        }
        dirs.push(own_dir.to_owned());
        dirs.push(format!("{own_dir}/../lib"));
        let missing: Vec<&str> = needed
            .iter()
            .filter(|lib| !lib.contains('/'))
            .filter(|lib| !dirs.iter().any(|d| is_file(fs, &format!("{d}/{lib}"))))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            v.push(Finding::at(
                Rule::L013,
                &prog,
                format!(
                    "needs {} (DT_NEEDED), found in none of the image's library paths (LD_LIBRARY_PATH, /lib64, /usr/lib64, /usr/lib/{}-linux-gnu, /var/task/lib, /opt/lib, …): the loader would fail with `cannot open shared object file`; add the libraries to the image (or link statically)",
                    missing.join(", "),
                    elf::gnu_arch(arch)
                ),
            ));
        }
    }
    v
}

fn is_file(fs: &FileSystem, path: &str) -> bool {
    fs.resolve(path)
        .ok()
        .and_then(|r| fs.get(&r).map(|n| n.kind == Kind::File))
        .unwrap_or(false)
}

/// Why the loader at `interp` cannot run: missing (links followed inside the image), not a
/// file, or built for another architecture.
fn interpreter_problem(fs: &FileSystem, interp: &str, arch: &str) -> Option<String> {
    let real = match fs.resolve(interp) {
        Ok(r) => r,
        Err(_) => return Some("is not in the image".to_owned()),
    };
    let node = fs.get(&real)?;
    if node.kind != Kind::File {
        return Some(format!("(-> /{real}) is not a regular file"));
    }
    let facts = node.elf.as_ref()?;
    let h = ElfHeader::from(facts);
    if elf::fits(&h, arch) {
        return None;
    }
    Some(format!(
        "(-> /{real}) is {}, but the image is linux/{arch}",
        elf::describe(&h)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lambda::fs::Node;

    fn host_arch() -> &'static str {
        if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        }
    }

    /// A minimal dynamic ELF64 for `machine`: PT_INTERP `/lib64/ld-linux-x86-64.so.2`, one
    /// DT_NEEDED `libfoo.so.1` and DT_RUNPATH `$ORIGIN/vendor`.
    fn dynamic_elf(machine: u16) -> Vec<u8> {
        let mut e = b"\x7fELF\x02\x01\x01\x00".to_vec();
        e.extend_from_slice(&[0; 8]);
        e.extend_from_slice(&3u16.to_le_bytes());
        e.extend_from_slice(&machine.to_le_bytes());
        e.extend_from_slice(&1u32.to_le_bytes());
        for v in [0u64, 64, 0] {
            e.extend_from_slice(&v.to_le_bytes()); // entry, phoff, shoff
        }
        e.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, 3, 64, 0, 0] {
            e.extend_from_slice(&v.to_le_bytes());
        }
        let phdr = |e: &mut Vec<u8>, ty: u32, off: u64, size: u64| {
            e.extend_from_slice(&ty.to_le_bytes());
            e.extend_from_slice(&4u32.to_le_bytes());
            for v in [off, off, off, size, size, 8] {
                e.extend_from_slice(&v.to_le_bytes());
            }
        };
        phdr(&mut e, 3, 232, 28); // PT_INTERP
        phdr(&mut e, 1, 0, 376); // PT_LOAD
        phdr(&mut e, 2, 296, 80); // PT_DYNAMIC
        assert_eq!(e.len(), 232);
        e.extend_from_slice(b"/lib64/ld-linux-x86-64.so.2\0");
        e.resize(264, 0);
        e.extend_from_slice(b"\0libfoo.so.1\0$ORIGIN/vendor\0");
        e.resize(296, 0);
        for (tag, val) in [(1u64, 1u64), (29, 13), (5, 264), (10, 27), (0, 0)] {
            e.extend_from_slice(&tag.to_le_bytes());
            e.extend_from_slice(&val.to_le_bytes());
        }
        assert_eq!(e.len(), 376);
        e
    }

    /// The program's own run path (`$ORIGIN` its directory) is searched for its libraries.
    #[test]
    fn run_paths_are_searched() {
        let app = dynamic_elf(crate::lambda::elf::EM_X86_64);
        let facts = crate::image::elf::facts_of(&app).unwrap();
        assert_eq!(
            facts.needed.as_deref(),
            Some(&["libfoo.so.1".to_owned()][..])
        );
        assert_eq!(facts.runpath, ["$ORIGIN/vendor"]);
        let mut fs = FileSystem::new();
        fs.insert("var/task/bin/app", Node::file(0o755, &app));
        fs.insert("lib64/ld-linux-x86-64.so.2", Node::file(0o755, &app[..64]));
        let p = Process {
            entrypoint: vec!["/var/task/bin/app".into()],
            ..Process::default()
        };
        let v = start(&fs, &p, "amd64");
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].rule == Rule::L013 && v[0].message.contains("libfoo.so.1"),
            "{v:?}"
        );
        fs.insert(
            "var/task/bin/vendor/libfoo.so.1",
            Node::file(0o644, &app[..64]),
        );
        assert_eq!(start(&fs, &p, "amd64"), []);
    }

    /// A script's `#!` interpreter is loaded like any program: a dynamic /bin/sh without its
    /// loader is L012 at the interpreter; with the loader (through a link) and libc, nothing.
    #[test]
    fn the_interpreter_of_a_script_needs_its_loader_too() {
        let sh = std::fs::read("/bin/true").expect("/bin/true");
        let interp = crate::image::elf::facts_of(&sh).unwrap().interp.unwrap();
        let mut fs = FileSystem::new();
        fs.insert("bin", Node::symlink("usr/bin"));
        fs.insert("usr/bin/sh", Node::file(0o755, &sh));
        fs.insert(
            "var/task/bootstrap",
            Node::file(0o755, b"#!/bin/sh\nexec x\n"),
        );
        let p = Process {
            entrypoint: vec!["/var/task/bootstrap".into()],
            ..Process::default()
        };
        let v = start(&fs, &p, host_arch());
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            (v[0].rule, v[0].path.as_deref()),
            (Rule::L012, Some("/usr/bin/sh"))
        );
        assert!(v[0].message.contains(&interp), "{}", v[0].message);
        // The loader through a link (as /lib64 -> usr/lib64), libc in /usr/lib64.
        let real = format!("usr/lib64/{}", interp.rsplit('/').next().unwrap());
        let dir = interp
            .trim_start_matches('/')
            .rsplit_once('/')
            .unwrap()
            .0
            .to_owned();
        fs.insert(&real, Node::file(0o755, &sh[..64]));
        fs.insert(&dir, Node::symlink("usr/lib64"));
        let v = start(&fs, &p, host_arch());
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, Rule::L013);
        assert!(v[0].message.contains("libc.so.6"), "{}", v[0].message);
        fs.insert("usr/lib64/libc.so.6", Node::file(0o755, &sh[..64]));
        assert_eq!(start(&fs, &p, host_arch()), []);
    }
}
