//! The file system an image's layers add up to, as far as the Lambda checks need it: each path's
//! kind, mode, size, link target and (for executables and bootstraps) its first bytes. Each
//! layer is a list of [`Item`]s — read from its tar stream (gunzip → tar) or remembered from an
//! earlier read ([`crate::image::fsindex`]) — applied in order by
//! [`FileSystem::apply_items`], OCI whiteouts included; nothing is unpacked to disk and no
//! file's content is kept beyond [`HEAD`] bytes.

use std::collections::BTreeMap;
use std::convert::Infallible;
#[cfg(test)]
use std::io::{self, Read};

pub use crate::image::elf::ElfFacts;
use crate::image::fs::{self as rootfs, Entry, Follow, Tree};
pub use crate::image::fsindex::{BOOTSTRAPS, HEAD, Item, Op, normalize};
#[cfg(test)]
use crate::image::fsindex::{FsIndex, Keeper};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink(String),
    /// Devices, fifos: `what` names it for messages.
    Other(&'static str),
}

/// One path of the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    pub size: u64,
    /// The first [`HEAD`] bytes of a regular file that has an execute bit or sits at a bootstrap
    /// path; `None` when they were not kept (or not known: a hard link to a missing file).
    pub head: Option<Vec<u8>>,
    /// For a regular file applied with a [`Keeper`]: the id the keeper gave its whole content
    /// (a hard link shares its target's).
    pub kept: Option<u64>,
    /// What its ELF headers say, for an ELF file.
    pub elf: Option<ElfFacts>,
}

impl Node {
    pub fn dir(mode: u32) -> Node {
        Node {
            kind: Kind::Dir,
            mode,
            size: 0,
            head: None,
            kept: None,
            elf: None,
        }
    }

    /// A regular file whose first bytes are `content` (cut to [`HEAD`]).
    #[cfg(test)]
    pub fn file(mode: u32, content: &[u8]) -> Node {
        Node {
            kind: Kind::File,
            mode,
            size: content.len() as u64,
            head: Some(content[..content.len().min(HEAD)].to_vec()),
            kept: None,
            elf: crate::image::elf::facts_of(content),
        }
    }

    pub fn symlink(target: &str) -> Node {
        Node {
            kind: Kind::Symlink(target.to_owned()),
            mode: 0o777,
            size: 0,
            head: None,
            kept: None,
            elf: None,
        }
    }
}

/// Why a path does not lead to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolveError {
    /// This absolute path (the path itself, or where a link led) does not exist.
    Missing(String),
    /// This absolute path is used as a directory but is a file.
    NotADirectory(String),
    /// More than [`MAX_LINKS`](crate::image::fs::MAX_LINKS) symbolic links.
    TooManyLinks,
}

/// An image's merged file system. Keys are paths without a leading `/` (the root is `""`).
#[derive(Clone, Debug)]
pub struct FileSystem {
    nodes: BTreeMap<String, Node>,
    /// What the layers applied so far held that Lambda is known to stumble on.
    pub notes: Notes,
}

/// Shapes of layers reported as causes of `UnsupportedImageLayerDetected` and
/// `InvalidImage: MissingParentDirectory`: the first [`MAX_NOTED`] paths of each, and counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notes {
    /// Hard-link entries to files a lower layer holds (their paths, without the leading `/`).
    pub hard_links: Vec<String>,
    pub hard_link_count: usize,
    /// Entries whose parent directory neither their layer (before them) nor a lower layer
    /// holds.
    pub orphans: Vec<String>,
    pub orphan_count: usize,
}

/// How many paths [`Notes`] keeps of each kind.
pub const MAX_NOTED: usize = 10;

fn note(list: &mut Vec<String>, count: &mut usize, path: &str) {
    *count += 1;
    if list.len() < MAX_NOTED {
        list.push(path.to_owned());
    }
}

impl Default for FileSystem {
    fn default() -> Self {
        Self::new()
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn split_last(p: &str) -> (&str, &str) {
    p.rsplit_once('/').unwrap_or(("", p))
}

/// The nodes as a [`Tree`] to resolve paths in. (Keys are valid UTF-8, and so is every path
/// resolution asks for: it is made of components of keys and link targets.)
struct Nodes<'a>(&'a BTreeMap<String, Node>);

impl Tree for Nodes<'_> {
    type Error = Infallible;
    fn entry(&mut self, path: &[u8]) -> Result<Entry, Infallible> {
        let node = std::str::from_utf8(path).ok().and_then(|p| self.0.get(p));
        Ok(match node.map(|n| &n.kind) {
            None => Entry::Missing,
            Some(Kind::Dir) => Entry::Dir,
            Some(Kind::Symlink(t)) => Entry::Symlink(t.clone().into_bytes()),
            Some(Kind::File | Kind::Other(_)) => Entry::Other,
        })
    }
}

impl FileSystem {
    /// An empty file system: the root directory only.
    pub fn new() -> FileSystem {
        FileSystem {
            nodes: BTreeMap::from([(String::new(), Node::dir(0o755))]),
            notes: Notes::default(),
        }
    }

    /// The node at `path` itself (no link followed), `/`-prefixed or not.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&normalize(path))
    }

    /// Every path (without its leading `/`) and node, in path order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// `dir` (normalized) and every path below it, in path order.
    pub fn subtree<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        let dir = normalize(dir);
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(dir.clone()..)
            .take_while(move |(k, _)| **k == dir || k.starts_with(&prefix))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Is there an entry at `path` (a dangling symbolic link counts), links in its parents
    /// followed?
    pub fn exists(&self, path: &str) -> bool {
        self.walk(path, false, false).is_ok()
    }

    /// Follow `path` (absolute, or relative to the root) through every symbolic link, as `open`
    /// would: the resolved path, without its leading `/`.
    pub fn resolve(&self, path: &str) -> Result<String, ResolveError> {
        self.walk(path, true, false)
    }

    /// Walk `path` by the image's rules ([`crate::image::fs::resolve`]). `follow_last`: resolve
    /// a link in the last component too. `lenient`: a missing or non-directory component is
    /// taken literally (where a layer would create it).
    fn walk(&self, path: &str, follow_last: bool, lenient: bool) -> Result<String, ResolveError> {
        let follow = Follow {
            last: follow_last,
            lenient,
            confined: false,
        };
        let shown = |p: Vec<u8>| format!("/{}", String::from_utf8_lossy(&p));
        match rootfs::resolve(&mut Nodes(&self.nodes), path.as_bytes(), follow) {
            Ok(r) => Ok(String::from_utf8_lossy(&r.path).into_owned()),
            Err(rootfs::ResolveError::Missing(p)) => Err(ResolveError::Missing(shown(p))),
            Err(rootfs::ResolveError::NotADirectory(p)) => {
                Err(ResolveError::NotADirectory(shown(p)))
            }
            Err(rootfs::ResolveError::TooManyLinks) => Err(ResolveError::TooManyLinks),
            // Not confined: `..` stays at the root.
            Err(rootfs::ResolveError::Escapes) => Err(ResolveError::Missing(shown(Vec::new()))),
            Err(rootfs::ResolveError::Tree(never)) => match never {},
        }
    }

    /// Where a layer's entry `path` lands: its parent directory with links followed (as
    /// container runtimes unpack), then its own name.
    fn place(&self, path: &str) -> String {
        let norm = normalize(path);
        let (parent, name) = split_last(&norm);
        if name.is_empty() {
            return String::new();
        }
        let parent = self
            .walk(parent, true, true)
            .unwrap_or_else(|_| parent.to_owned());
        join(&parent, name)
    }

    /// Where a layer's entry at `path` lands in this file system (see [`Self::insert`]).
    pub fn landing(&self, path: &str) -> String {
        self.place(path)
    }

    /// Give the regular file at `key` (a path as [`Self::landing`] returns it) the content a
    /// keeper kept as `id`.
    pub fn set_kept(&mut self, key: &str, id: u64) {
        if let Some(n) = self.nodes.get_mut(key)
            && n.kind == Kind::File
        {
            n.kept = Some(id);
        }
    }

    /// Make `dir` (normalized) and its ancestors directories where nothing is (mode 0755, as
    /// runtimes do).
    fn make_dirs(&mut self, dir: &str) {
        let mut at = String::new();
        for c in dir.split('/').filter(|c| !c.is_empty()) {
            at = join(&at, c);
            self.nodes
                .entry(at.clone())
                .or_insert_with(|| Node::dir(0o755));
        }
    }

    /// Add `node` at `path` as a layer would: parents created, a directory merged with the one
    /// below (its children stay), anything else replacing what was there with its subtree.
    pub fn insert(&mut self, path: &str, node: Node) {
        let key = self.place(path);
        if key.is_empty() {
            if node.kind == Kind::Dir {
                self.nodes.insert(key, node);
            }
            return;
        }
        self.make_dirs(split_last(&key).0);
        let replaces_dir = self.nodes.get(&key).is_some_and(|n| n.kind == Kind::Dir);
        if node.kind != Kind::Dir && replaces_dir {
            self.remove(&key);
        }
        self.nodes.insert(key, node);
    }

    /// Remove `path` and everything below it (never the root itself).
    pub fn remove(&mut self, path: &str) {
        let key = normalize(path);
        let doomed: Vec<String> = self.subtree(&key).map(|(k, _)| k.to_owned()).collect();
        for k in doomed {
            if !k.is_empty() {
                self.nodes.remove(&k);
            }
        }
    }

    /// Remove everything below `dir`, keeping `dir`.
    pub fn clear_dir(&mut self, dir: &str) {
        let key = normalize(dir);
        let doomed: Vec<String> = self
            .subtree(&key)
            .map(|(k, _)| k.to_owned())
            .filter(|k| *k != key)
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Apply one layer (an uncompressed tar stream) over this file system: whiteouts and opaque
    /// markers hide what the lower layers hold, then the layer's entries are added in order.
    #[cfg(test)]
    pub fn apply_tar<R: Read>(&mut self, r: R) -> io::Result<()> {
        self.apply_tar_keeping(r, &mut |_, _| Ok(None))
    }

    /// [`apply_tar`](Self::apply_tar), handing every regular file's content to `keeper`.
    #[cfg(test)]
    pub fn apply_tar_keeping<R: Read>(&mut self, r: R, keeper: &mut Keeper) -> io::Result<()> {
        self.apply_items(FsIndex::read_keeping(r, keeper)?.items);
        Ok(())
    }

    /// Apply one layer's items over this file system: its whiteouts and opaque markers first
    /// (they only hide what the lower layers hold), then its own entries in order.
    pub fn apply_items(&mut self, items: Vec<Item>) {
        for item in &items {
            match item.op {
                Op::Opaque => {
                    let dir = &item.path;
                    let d = self.walk(dir, true, true).unwrap_or_else(|_| dir.clone());
                    self.clear_dir(&d);
                }
                Op::Whiteout => {
                    let key = self.place(&item.path);
                    if !key.is_empty() {
                        self.remove(&key);
                    }
                }
                _ => {}
            }
        }
        // Hard links to files this layer itself holds are plain tar; one to a lower layer's
        // file is what Lambda is reported to refuse.
        let mut own_files = std::collections::HashSet::new();
        for Item { path, op } in items {
            let node = match op {
                Op::HardLink { target } => {
                    if !own_files.contains(&normalize(&target)) {
                        let n = &mut self.notes;
                        note(&mut n.hard_links, &mut n.hard_link_count, &path);
                    }
                    self.hard_linked(&target)
                }
                op => match node_of(op) {
                    Some(n) => n,
                    None => continue,
                },
            };
            if node.kind == Kind::File {
                own_files.insert(path.clone());
            }
            let key = self.place(&path);
            let parent = split_last(&key).0;
            if !key.is_empty() && !self.nodes.contains_key(parent) {
                let n = &mut self.notes;
                note(&mut n.orphans, &mut n.orphan_count, &path);
            }
            self.insert(&path, node);
        }
    }

    /// What a hard link to `target` is: the node of the inode it shares (same kind, mode and
    /// content), or an empty file of unknown content when the target is missing.
    fn hard_linked(&self, target: &str) -> Node {
        let found = self
            .walk(target, false, true)
            .ok()
            .and_then(|k| self.nodes.get(&k).cloned());
        found.unwrap_or(Node {
            kind: Kind::File,
            mode: 0o644,
            size: 0,
            head: None,
            kept: None,
            elf: None,
        })
    }
}

/// The node a layer's file, directory, link or special entry makes (`None` for hard links,
/// whiteouts and opaque markers, which are applied otherwise).
fn node_of(op: Op) -> Option<Node> {
    Some(match op {
        Op::File {
            mode,
            size,
            head,
            elf,
            kept,
        } => Node {
            kind: Kind::File,
            mode,
            size,
            head,
            kept,
            elf,
        },
        Op::Dir { mode } => Node::dir(mode),
        Op::Symlink { mode, target } => Node {
            mode,
            ..Node::symlink(&target)
        },
        Op::Special { mode, what } => Node {
            kind: Kind::Other(what.what()),
            mode,
            size: 0,
            head: None,
            kept: None,
            elf: None,
        },
        Op::HardLink { .. } | Op::Whiteout | Op::Opaque => return None,
    })
}

/// Apply a layer blob (`gzip`: gzip-compressed, else a plain tar) read from `r`; returns its
/// uncompressed size. The whole stream is read (past the tar's end-of-archive blocks), so the
/// size is the size of the layer, not of what the tar reader needed.
#[cfg(test)]
pub fn apply_layer<R: Read>(fs: &mut FileSystem, r: R, gzip: bool) -> io::Result<u64> {
    apply_layer_keeping(fs, r, gzip, &mut |_, _| Ok(None))
}

/// [`apply_layer`], handing every regular file's content to `keeper`.
#[cfg(test)]
pub fn apply_layer_keeping<R: Read>(
    fs: &mut FileSystem,
    r: R,
    gzip: bool,
    keeper: &mut Keeper,
) -> io::Result<u64> {
    let index = if gzip {
        FsIndex::read_keeping(flate2::read::MultiGzDecoder::new(r), keeper)?
    } else {
        FsIndex::read_keeping(r, keeper)?
    };
    fs.apply_items(index.items);
    Ok(index.uncompressed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of `(path, entry)` in order: `d` dir, `f:CONTENT` file 0755, `l:TARGET` symlink,
    /// `h:TARGET` hard link, `w` empty file (for whiteout names).
    fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, what) in entries {
            let mut h = tar::Header::new_ustar();
            let (ty, data, link): (tar::EntryType, &[u8], Option<&str>) = match what.split_once(':')
            {
                Some(("f", c)) => (tar::EntryType::Regular, c.as_bytes(), None),
                Some(("l", t)) => (tar::EntryType::Symlink, b"", Some(t)),
                Some(("h", t)) => (tar::EntryType::Link, b"", Some(t)),
                _ if *what == "d" => (tar::EntryType::Directory, b"", None),
                _ => (tar::EntryType::Regular, b"", None),
            };
            h.set_entry_type(ty);
            h.set_mode(0o755);
            h.set_size(data.len() as u64);
            if let Some(t) = link {
                h.set_link_name(t).unwrap();
            }
            b.append_data(&mut h, path, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn paths(fs: &FileSystem) -> Vec<String> {
        fs.iter()
            .map(|(k, _)| k.to_owned())
            .filter(|k| !k.is_empty())
            .collect()
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers_only() {
        let mut fs = FileSystem::new();
        fs.apply_tar(
            &tar_of(&[
                ("opt/", "d"),
                ("opt/old/", "d"),
                ("opt/old/a", "f:a"),
                ("opt/old/sub/b", "f:b"),
                ("usr/lib/gone", "f:x"),
                ("usr/lib/gone.txt", "f:x"),
                ("usr/lib/dir/deep", "f:x"),
            ])[..],
        )
        .unwrap();
        fs.apply_tar(
            &tar_of(&[
                ("opt/old/.wh..wh..opq", "w"),
                ("opt/old/c", "f:c"),
                ("usr/lib/.wh.gone", "w"),
                ("usr/lib/.wh.dir", "w"),
                ("usr/lib/dir/new", "f:n"),
            ])[..],
        )
        .unwrap();
        assert_eq!(
            paths(&fs),
            [
                "opt",
                "opt/old",
                "opt/old/c",
                "usr",
                "usr/lib",
                "usr/lib/dir",
                "usr/lib/dir/new",
                "usr/lib/gone.txt"
            ]
        );
    }

    #[test]
    fn links_resolve_within_the_image() {
        let mut fs = FileSystem::new();
        fs.apply_tar(
            &tar_of(&[
                ("bin", "l:usr/bin"),
                ("usr/bin/sh", "f:\x7fELF"),
                ("usr/bin/dash", "h:usr/bin/sh"),
                ("var/task/up", "l:../../usr/bin/sh"),
                ("loop", "l:loop"),
                ("dangling", "l:/nowhere/x"),
            ])[..],
        )
        .unwrap();
        assert_eq!(fs.resolve("/bin/sh").unwrap(), "usr/bin/sh");
        assert_eq!(fs.resolve("/var/task/up").unwrap(), "usr/bin/sh");
        assert_eq!(fs.resolve("/var/task/../../bin/sh").unwrap(), "usr/bin/sh");
        assert_eq!(
            fs.resolve("/dangling"),
            Err(ResolveError::Missing("/nowhere".into()))
        );
        assert_eq!(fs.resolve("/loop"), Err(ResolveError::TooManyLinks));
        assert_eq!(
            fs.resolve("/usr/bin/sh/x"),
            Err(ResolveError::NotADirectory("/usr/bin/sh".into()))
        );
        let dash = fs.get("usr/bin/dash").unwrap();
        assert_eq!(dash.kind, Kind::File);
        assert_eq!(dash.head.as_deref(), Some(&b"\x7fELF"[..]));
    }

    #[test]
    fn entries_below_a_symlinked_dir_land_at_its_target() {
        let mut fs = FileSystem::new();
        fs.apply_tar(&tar_of(&[("bin", "l:usr/bin"), ("usr/bin/", "d")])[..])
            .unwrap();
        fs.apply_tar(&tar_of(&[("bin/tool", "f:#!/bin/sh\n")])[..])
            .unwrap();
        assert!(fs.get("usr/bin/tool").is_some());
        assert_eq!(fs.get("bin").unwrap().kind, Kind::Symlink("usr/bin".into()));
    }

    #[test]
    fn a_file_replaces_a_lower_directory_and_its_subtree() {
        let mut fs = FileSystem::new();
        fs.apply_tar(&tar_of(&[("a/b/c", "f:x")])[..]).unwrap();
        fs.apply_tar(&tar_of(&[("a/b", "f:y")])[..]).unwrap();
        assert_eq!(paths(&fs), ["a", "a/b"]);
        assert_eq!(fs.get("a/b").unwrap().kind, Kind::File);
    }

    #[test]
    fn a_keeper_gets_whole_files_and_links_share_them() {
        let mut fs = FileSystem::new();
        let mut kept = Vec::new();
        let mut keeper = |path: &str, r: &mut dyn Read| -> io::Result<Option<u64>> {
            if !path.starts_with("var/task/") {
                return Ok(None);
            }
            let mut s = String::new();
            r.read_to_string(&mut s)?;
            kept.push(s);
            Ok(Some(kept.len() as u64 - 1))
        };
        let content = format!("#!/bin/sh\n{}", "x".repeat(300));
        fs.apply_tar_keeping(
            &tar_of(&[
                ("var/task/run", &format!("f:{content}")),
                ("var/task/same", "h:var/task/run"),
                ("usr/bin/other", "f:elsewhere"),
            ])[..],
            &mut keeper,
        )
        .unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0], content);
        assert_eq!(fs.get("var/task/run").unwrap().kept, Some(0));
        assert_eq!(fs.get("var/task/same").unwrap().kept, Some(0));
        assert_eq!(fs.get("usr/bin/other").unwrap().kept, None);
        // The head the checks need is still there.
        assert_eq!(
            fs.get("var/task/run").unwrap().head.as_deref(),
            Some(&content.as_bytes()[..HEAD])
        );
    }

    #[test]
    fn gzip_layers_report_their_uncompressed_size() {
        use std::io::Write;
        let tar = tar_of(&[("x", "f:hello")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let blob = gz.finish().unwrap();
        let mut fs = FileSystem::new();
        assert_eq!(
            apply_layer(&mut fs, &blob[..], true).unwrap(),
            tar.len() as u64
        );
        assert_eq!(fs.get("/x").unwrap().size, 5);
        let mut fs = FileSystem::new();
        assert_eq!(
            apply_layer(&mut fs, &tar[..], false).unwrap(),
            tar.len() as u64
        );
    }
}

#[cfg(test)]
mod notes_tests {
    use super::*;

    /// Hard links to a lower layer's file and entries without parents are noted; a hard link
    /// within its own layer is not.
    #[test]
    fn notes_cross_layer_hard_links_and_orphans() {
        let layer = |entries: &[(&str, Op)]| -> Vec<Item> {
            entries
                .iter()
                .map(|(p, op)| Item {
                    path: p.to_string(),
                    op: op.clone(),
                })
                .collect()
        };
        let file = || Op::File {
            mode: 0o644,
            size: 1,
            head: None,
            elf: None,
            kept: None,
        };
        let link = |t: &str| Op::HardLink { target: t.into() };
        let mut fs = FileSystem::new();
        fs.apply_items(layer(&[
            ("var", Op::Dir { mode: 0o755 }),
            ("var/a", file()),
            ("var/b", link("var/a")),
        ]));
        assert_eq!(fs.notes, Notes::default());
        fs.apply_items(layer(&[("var/c", link("var/a")), ("srv/x/y", file())]));
        assert_eq!(fs.notes.hard_links, ["var/c"]);
        assert_eq!(fs.notes.orphans, ["srv/x/y"]);
    }
}
