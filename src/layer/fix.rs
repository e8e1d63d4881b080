//! `--fix-permissions`: make what lamina writes under `/var/task` and `/opt` usable by the
//! non-root user Lambda runs functions as (the file system is read-only there, so nothing can
//! be fixed at run time).

use crate::layer::entry::{Entry, Kind};

/// The directories whose contents a function reads as a non-root user.
pub const ROOTS: [&[u8]; 2] = [b"var/task", b"opt"];

/// Is `path` (no leading `/`) one of [`ROOTS`] or below one?
pub fn under_roots(path: &[u8]) -> bool {
    ROOTS.iter().any(|r| {
        path == *r || (path.len() > r.len() && path.starts_with(r) && path[r.len()] == b'/')
    })
}

/// The mode `--fix-permissions` gives an entry: files `g+r,o+r`, executables (any `x` bit) also
/// `g+x,o+x`, directories `g+rx,o+rx`. Only ever adds bits.
pub fn fixed_mode(kind: &Kind, mode: u32) -> u32 {
    match kind {
        Kind::Dir => mode | 0o055,
        Kind::File { .. } | Kind::HardLink(_) if mode & 0o111 != 0 => mode | 0o055,
        Kind::File { .. } | Kind::HardLink(_) => mode | 0o044,
        Kind::Symlink(_) => mode,
    }
}

/// Apply [`fixed_mode`] to the entries under `/var/task` and `/opt`.
pub fn fix_permissions(entries: &mut [Entry]) {
    for e in entries.iter_mut().filter(|e| under_roots(&e.path)) {
        e.mode = fixed_mode(&e.kind, e.mode);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::entry::Data;

    fn file(path: &str, mode: u32) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            mode,
            uid: 0,
            gid: 0,
            kind: Kind::File {
                size: 0,
                data: Data::Empty,
            },
        }
    }

    #[test]
    fn opens_files_and_dirs_under_task_and_opt_only() {
        let mut v = vec![
            Entry::dir(b"var/task".to_vec(), 0o700, 0, 0),
            file("var/task/a", 0o600),
            file("var/task/run", 0o700),
            file("var/task/run2", 0o711),
            file("opt/x", 0o640),
            file("var/taskforce", 0o600),
            file("etc/secret", 0o600),
            Entry {
                kind: Kind::Symlink(b"a".to_vec()),
                ..file("opt/l", 0o777)
            },
        ];
        fix_permissions(&mut v);
        let modes: Vec<u32> = v.iter().map(|e| e.mode).collect();
        assert_eq!(
            modes,
            [0o755, 0o644, 0o755, 0o755, 0o644, 0o600, 0o600, 0o777]
        );
    }

    #[test]
    fn the_spec_field_and_the_flag_turn_it_on() {
        use crate::spec::{BuildSpec, Overrides, SpecFile};
        use std::path::Path;
        let resolve = |text: &str, flag: bool| {
            let sf: SpecFile = toml::from_str(text).unwrap();
            let ov = Overrides {
                fix_permissions: flag,
                ..Default::default()
            };
            BuildSpec::resolve(Some((Path::new("lamina.toml"), sf)), &ov, Path::new("/w")).unwrap()
        };
        assert!(!resolve("", false).fix_permissions);
        assert!(resolve("fix_permissions = true\n", false).fix_permissions);
        assert!(resolve("fix_permissions = false\n", true).fix_permissions);
        assert!(resolve("", false).lambda_check);
        assert!(toml::from_str::<SpecFile>("fix_permissions = 1\n").is_err());
    }

    #[test]
    fn keeps_special_bits_and_wider_modes() {
        assert_eq!(fixed_mode(&Kind::Dir, 0o1777), 0o1777);
        assert_eq!(fixed_mode(&Kind::HardLink(b"x".to_vec()), 0o4700), 0o4755);
    }
}
