//! The file-system rules every reader of an image's layers shares: OCI whiteout names, and how
//! a path is resolved inside an image's root — symbolic links followed as the function will see
//! them, inside the root and never out of it, `..` never above it.
//!
//! Resolution is a pure walk over a [`Tree`] (what is at this path, links not followed), so that
//! the in-memory view of the Lambda gate and the on-disk unpacker of `lamina run` follow links
//! by the same rules and with the same limit.

use std::collections::VecDeque;

/// Symbolic links followed while resolving one path before giving up (Linux's `ELOOP` limit).
pub const MAX_LINKS: usize = 40;

/// The longest symbolic link target Linux can store (`PATH_MAX` less its NUL): a longer one in
/// a layer or a zip cannot be reproduced by an unpacker, so every reader refuses it rather than
/// cut it short.
pub const MAX_LINK_TARGET: usize = 4095;

/// `PATH` when the image sets none (Lambda's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a layer entry's file name says about whiteouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// `.wh..wh..opq`: the directory holding it hides everything lower layers put in it.
    Opaque,
    /// `.wh.NAME`: hides `NAME` (and its subtree) of lower layers in the same directory.
    Hides(&'a [u8]),
    /// Another `.wh.` name (aufs bookkeeping such as `.wh..wh.plnk`, or a bare `.wh.`): no file,
    /// and nothing hidden.
    Ignored,
    /// `.wh..` or `.wh...`: would hide `.` or `..`, the directory itself or its parent. No tool
    /// writes them; every reader refuses them (taken literally they delete the layer's parent
    /// directory, or at the root what holds the root).
    Invalid,
}

/// The whiteout meaning of a file name (one path component), or `None` for an ordinary name.
pub fn whiteout(name: &[u8]) -> Option<Whiteout<'_>> {
    let hidden = name.strip_prefix(b".wh.")?;
    Some(if hidden == b".wh..opq" {
        Whiteout::Opaque
    } else if hidden == b"." || hidden == b".." {
        Whiteout::Invalid
    } else if hidden.is_empty() || hidden.starts_with(b".wh.") {
        Whiteout::Ignored
    } else {
        Whiteout::Hides(hidden)
    })
}

/// What is at a path of a tree, a symbolic link there not followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Missing,
    Dir,
    /// A symbolic link and its target, as stored.
    Symlink(Vec<u8>),
    /// A regular file, device, fifo...: anything that is not a directory.
    Other,
}

/// A root file system that can say what is at a path.
pub trait Tree {
    /// Why a look-up failed (for an in-memory tree, [`std::convert::Infallible`]).
    type Error;
    /// What is at `path`: relative to the root, `/`-separated clean components (no `.`, `..` or
    /// empty ones), never the root itself. Every ancestor of `path` has been found to be a
    /// directory by an earlier call, so a tree on disk may join it to its root as it is.
    fn entry(&mut self, path: &[u8]) -> Result<Entry, Self::Error>;
}

/// How [`resolve`] treats the last component and what it cannot find.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Follow {
    /// Follow a symbolic link in the last component too (as `open` does; `lstat` does not).
    pub last: bool,
    /// Take a missing component, or a non-directory used as one, literally (where a layer's
    /// entry would create it), and the whole path as written after too many links.
    pub lenient: bool,
    /// The root is a directory of the host, not `/` (a zip about to be extracted): `..` at the
    /// root and an absolute link target are [`ResolveError::Escapes`] instead of staying at
    /// the root.
    pub confined: bool,
}

/// A resolved path: relative to the root, `/`-separated (empty for the root itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub path: Vec<u8>,
    /// What is there ([`Entry::Missing`] only when lenient).
    pub entry: Entry,
}

/// Why a path does not lead anywhere.
#[derive(Debug, PartialEq, Eq)]
pub enum ResolveError<E> {
    /// This path (relative to the root: the path itself, or where a link led) does not exist.
    Missing(Vec<u8>),
    /// This path (relative to the root) is used as a directory but is not one.
    NotADirectory(Vec<u8>),
    /// More than [`MAX_LINKS`] symbolic links.
    TooManyLinks,
    /// With [`Follow::confined`]: the walk left the root (a `..` above it, or an absolute link).
    Escapes,
    /// The tree could not be read.
    Tree(E),
}

/// The components of `p` that matter: no empty ones, no `.`; `..` kept (resolution decides what
/// it means).
fn components(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

fn joined(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.join(&b'/')
}

/// Resolve `path` (absolute in the image, or relative to its root) inside `tree`, as the kernel
/// would with the root as `/`: `..` climbs to the parent actually reached (never above the
/// root), an absolute link target starts again at the root, a relative one from the link's
/// directory. Nothing outside the root is ever looked at: every path handed to
/// [`Tree::entry`] is below the root, through directories only.
pub fn resolve<T: Tree + ?Sized>(
    tree: &mut T,
    path: &[u8],
    follow: Follow,
) -> Result<Resolved, ResolveError<T::Error>> {
    let mut pending: VecDeque<Vec<u8>> = components(path).map(<[u8]>::to_vec).collect();
    let mut cur: Vec<Vec<u8>> = Vec::new();
    let mut entry = Entry::Dir;
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == b".." {
            if follow.confined && cur.is_empty() {
                return Err(ResolveError::Escapes);
            }
            cur.pop();
            // The parent of something reached through directories is a directory.
            entry = Entry::Dir;
            continue;
        }
        cur.push(c);
        let candidate = joined(&cur);
        let last = pending.is_empty();
        entry = tree.entry(&candidate).map_err(ResolveError::Tree)?;
        match &entry {
            Entry::Dir => {}
            Entry::Missing if follow.lenient => {}
            Entry::Missing => return Err(ResolveError::Missing(candidate)),
            Entry::Symlink(target) if !last || follow.last => {
                links += 1;
                if links > MAX_LINKS {
                    if follow.lenient {
                        let literal: Vec<Vec<u8>> = components(path).map(<[u8]>::to_vec).collect();
                        return Ok(Resolved {
                            path: lexical(&literal),
                            entry: Entry::Missing,
                        });
                    }
                    return Err(ResolveError::TooManyLinks);
                }
                cur.pop();
                if target.starts_with(b"/") {
                    if follow.confined {
                        return Err(ResolveError::Escapes);
                    }
                    cur.clear();
                }
                for (i, part) in components(target).enumerate() {
                    pending.insert(i, part.to_vec());
                }
                // Where the link led is what the path names now (the root, for a link to `/`).
                entry = Entry::Dir;
            }
            Entry::Symlink(_) => {}
            Entry::Other if last || follow.lenient => {}
            Entry::Other => return Err(ResolveError::NotADirectory(candidate)),
        }
    }
    Ok(Resolved {
        path: joined(&cur),
        entry,
    })
}

/// `parts` with `..` climbing lexically (never above the root).
fn lexical(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for p in parts {
        if p == b".." {
            out.pop();
        } else {
            out.push(p.clone());
        }
    }
    joined(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    struct Map(BTreeMap<&'static str, Entry>);

    impl Tree for Map {
        type Error = Infallible;
        fn entry(&mut self, path: &[u8]) -> Result<Entry, Infallible> {
            assert!(!path.is_empty() && !path.starts_with(b"/"));
            assert!(!components(path).any(|c| c == b".."));
            let p = std::str::from_utf8(path).unwrap();
            Ok(self.0.get(p).cloned().unwrap_or(Entry::Missing))
        }
    }

    fn tree() -> Map {
        let l = |t: &str| Entry::Symlink(t.as_bytes().to_vec());
        Map(BTreeMap::from([
            ("usr", Entry::Dir),
            ("usr/bin", Entry::Dir),
            ("usr/bin/sh", Entry::Other),
            ("bin", l("usr/bin")),
            ("up", l("../../../../usr")),
            ("abs", l("/usr/bin/")),
            ("loop", l("loop")),
            ("dangling", l("/nowhere/x")),
        ]))
    }

    fn open(t: &mut Map, p: &str) -> Result<String, ResolveError<Infallible>> {
        let follow = Follow {
            last: true,
            lenient: false,
            confined: false,
        };
        resolve(t, p.as_bytes(), follow).map(|r| String::from_utf8(r.path).unwrap())
    }

    #[test]
    fn links_are_followed_inside_the_root_and_never_above_it() {
        let t = &mut tree();
        assert_eq!(open(t, "/bin/sh").unwrap(), "usr/bin/sh");
        assert_eq!(open(t, "up/bin/sh").unwrap(), "usr/bin/sh");
        assert_eq!(open(t, "/../../abs/sh").unwrap(), "usr/bin/sh");
        assert_eq!(open(t, "/bin/../bin/./sh").unwrap(), "usr/bin/sh");
        assert_eq!(open(t, "/").unwrap(), "");
        assert_eq!(
            open(t, "/dangling"),
            Err(ResolveError::Missing(b"nowhere".to_vec()))
        );
        assert_eq!(open(t, "/loop"), Err(ResolveError::TooManyLinks));
        assert_eq!(
            open(t, "/bin/sh/x"),
            Err(ResolveError::NotADirectory(b"usr/bin/sh".to_vec()))
        );
    }

    #[test]
    fn the_last_link_is_kept_unless_followed_and_lenient_takes_paths_literally() {
        let t = &mut tree();
        let r = resolve(t, b"/bin", Follow::default()).unwrap();
        assert_eq!(
            (r.path, r.entry),
            (b"bin".to_vec(), Entry::Symlink(b"usr/bin".to_vec()))
        );
        let lenient = Follow {
            last: true,
            lenient: true,
            confined: false,
        };
        let r = resolve(t, b"bin/new/deeper", lenient).unwrap();
        assert_eq!(
            (r.path, r.entry),
            (b"usr/bin/new/deeper".to_vec(), Entry::Missing)
        );
        let r = resolve(t, b"/loop/../x", lenient).unwrap();
        assert_eq!(r.path, b"x".to_vec());
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(whiteout(b".wh..wh..opq"), Some(Whiteout::Opaque));
        assert_eq!(whiteout(b".wh.gone"), Some(Whiteout::Hides(b"gone")));
        assert_eq!(whiteout(b".wh..wh.plnk"), Some(Whiteout::Ignored));
        assert_eq!(whiteout(b".wh."), Some(Whiteout::Ignored));
        assert_eq!(whiteout(b"gone.wh."), None);
        assert_eq!(whiteout(b".wh.."), Some(Whiteout::Invalid));
        assert_eq!(whiteout(b".wh..."), Some(Whiteout::Invalid));
        assert_eq!(whiteout(b".wh...."), Some(Whiteout::Hides(b"...")));
    }

    #[test]
    fn a_confined_walk_refuses_to_leave_the_root() {
        let l = |t: &str| Entry::Symlink(t.as_bytes().to_vec());
        let mut t = Map(BTreeMap::from([
            ("sub", Entry::Dir),
            ("sub/up", l("..")),
            ("esc", l("sub/up/..")),
            ("pw", l("sub/up/../../etc/passwd")),
            ("ok", l("sub/up/sub/./up")),
            ("abs", l("/etc")),
            ("loop", l("loop")),
        ]));
        let confined = Follow {
            last: true,
            lenient: true,
            confined: true,
        };
        let r = |t: &mut Map, p: &str| resolve(t, p.as_bytes(), confined).map(|r| r.path);
        assert_eq!(r(&mut t, "ok").unwrap(), b"".to_vec());
        assert_eq!(r(&mut t, "sub/up").unwrap(), b"".to_vec());
        for p in ["esc", "pw", "abs", "sub/../.."] {
            assert_eq!(r(&mut t, p), Err(ResolveError::Escapes), "{p}");
        }
        assert!(r(&mut t, "loop").is_ok());
    }
}
