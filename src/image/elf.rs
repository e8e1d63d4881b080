//! What the Lambda gate needs to know of an ELF file, read from a layer's stream as it passes:
//! its class, byte order, type and machine (the ELF header), its interpreter (`PT_INTERP`) and
//! the libraries it needs (`DT_NEEDED`). The structures are parsed with `goblin` (a maintained
//! ELF reader) on the few byte ranges that hold them, so a file is never buffered whole: at
//! most [`PREFIX_CAP`] bytes from its start (headers, program headers, interpreter and the
//! dynamic string table of ordinary binaries) and [`DYNAMIC_CAP`] bytes of its dynamic section,
//! wherever that sits. What lies beyond those caps is reported as unknown, never guessed.

use goblin::container::{Container, Ctx};
use goblin::elf::dynamic::{DT_NEEDED, DT_NULL, DT_RPATH, DT_RUNPATH, DT_STRSZ, DT_STRTAB};
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP, PT_LOAD};
use goblin::elf::{Dyn, Header, ProgramHeader};
use scroll::Pread;
use serde::{Deserialize, Serialize};

/// How many bytes from a file's start are kept while it is read.
pub const PREFIX_CAP: usize = 256 << 10;
/// How many bytes of a dynamic section are read.
pub const DYNAMIC_CAP: usize = 64 << 10;
/// At most this many `DT_NEEDED` names are kept (a real binary has a few dozen).
const MAX_NEEDED: usize = 256;
/// A longer interpreter path or library name is not a real one.
const MAX_NAME: usize = 4096;

/// The facts of one ELF file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ElfFacts {
    /// `ELFCLASS64` (else 32-bit).
    pub class64: bool,
    /// `ELFDATA2LSB` (else big-endian).
    pub little_endian: bool,
    /// `e_type`: 1 relocatable, 2 executable, 3 shared object / PIE, 4 core.
    pub e_type: u16,
    /// `e_machine`.
    pub machine: u16,
    /// The `PT_INTERP` path, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interp: Option<String>,
    /// Has a `PT_DYNAMIC` segment (dynamically linked).
    #[serde(default)]
    pub dynamic: bool,
    /// The `DT_NEEDED` names, `None` when they could not be read within the caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<Vec<String>>,
    /// The directories of `DT_RUNPATH` and `DT_RPATH` (`$ORIGIN` as written), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runpath: Vec<String>,
}

/// A push reader: [`feed`](Scanner::feed) it a file's bytes in order, then
/// [`finish`](Scanner::finish).
pub struct Scanner {
    /// How many bytes from the start are kept ([`PREFIX_CAP`], smaller in tests).
    cap: usize,
    prefix: Vec<u8>,
    /// Bytes fed so far.
    pos: u64,
    /// Where the dynamic section is, once known to lie beyond the prefix: `(offset, length)`.
    dynamic_at: Option<(u64, usize)>,
    dynamic: Vec<u8>,
    /// The prefix is full and parsed.
    parsed: Option<Parsed>,
}

struct Parsed {
    facts: ElfFacts,
    ctx: Ctx,
    loads: Vec<ProgramHeader>,
}

impl Scanner {
    /// A scanner for a file that starts with the ELF magic.
    pub fn new() -> Scanner {
        Scanner::with_cap(PREFIX_CAP)
    }

    fn with_cap(cap: usize) -> Scanner {
        Scanner {
            cap,
            prefix: Vec::new(),
            pos: 0,
            dynamic_at: None,
            dynamic: Vec::new(),
            parsed: None,
        }
    }

    /// Whether more bytes would tell more.
    pub fn wants_more(&self) -> bool {
        match (&self.parsed, self.dynamic_at) {
            (None, _) => true,
            (Some(_), Some((_, len))) => self.dynamic.len() < len,
            (Some(_), None) => false,
        }
    }

    /// Where the scanner next needs bytes, when that is past what it was fed: a reader that
    /// can seek goes there and calls [`skip_to`](Self::skip_to) rather than reading the gap.
    pub fn wanted_at(&self) -> Option<u64> {
        let (at, _) = self.dynamic_at?;
        (self.parsed.is_some() && self.dynamic.is_empty() && at > self.pos).then_some(at)
    }

    /// The caller skipped the file's bytes up to offset `at` (no further than
    /// [`wanted_at`](Self::wanted_at)).
    pub fn skip_to(&mut self, at: u64) {
        if self.parsed.is_some() && at > self.pos && self.wanted_at().is_some_and(|w| at <= w) {
            self.pos = at;
        }
    }

    /// The next bytes of the file.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.parsed.is_none() {
            let take = data.len().min(self.cap - self.prefix.len());
            self.prefix.extend_from_slice(&data[..take]);
            self.pos += take as u64;
            data = &data[take..];
            if self.prefix.len() < self.cap {
                return;
            }
            self.parse_prefix();
        }
        let Some((at, len)) = self.dynamic_at else {
            return;
        };
        let end = self.pos + data.len() as u64;
        if end > at && self.dynamic.len() < len {
            let from = at.saturating_sub(self.pos) as usize;
            let want = len - self.dynamic.len();
            let slice = &data[from..];
            self.dynamic
                .extend_from_slice(&slice[..slice.len().min(want)]);
        }
        self.pos = end;
    }

    /// What the bytes fed say; `None` when they do not hold a readable ELF header.
    pub fn finish(mut self) -> Option<ElfFacts> {
        if self.parsed.is_none() {
            self.parse_prefix();
        }
        let mut p = self.parsed.take()?;
        if let Some((_, len)) = self.dynamic_at
            && self.dynamic.len() == len
        {
            (p.facts.needed, p.facts.runpath) = needed(&self.dynamic, &self.prefix, &p);
        }
        Some(p.facts)
    }

    /// Parse the header and program headers from the prefix; the interpreter and the dynamic
    /// section too when they lie within it, else note where the dynamic section is.
    fn parse_prefix(&mut self) {
        let Ok(h) = self.prefix.pread::<Header>(0) else {
            return;
        };
        let (Ok(container), Ok(le)) = (h.container(), h.endianness()) else {
            return;
        };
        let ctx = Ctx::new(container, le);
        let mut facts = ElfFacts {
            class64: container == Container::Big,
            little_endian: le == scroll::LE,
            e_type: h.e_type,
            machine: h.e_machine,
            interp: None,
            dynamic: false,
            needed: None,
            runpath: Vec::new(),
        };
        let phdrs = usize::try_from(h.e_phoff)
            .ok()
            .filter(|&off| off < self.prefix.len())
            .and_then(|off| {
                ProgramHeader::parse(&self.prefix, off, usize::from(h.e_phnum), ctx).ok()
            })
            .unwrap_or_default();
        let mut dynamic = None;
        for ph in &phdrs {
            match ph.p_type {
                PT_INTERP => facts.interp = c_string(range(&self.prefix, ph.p_offset, ph.p_filesz)),
                PT_DYNAMIC => {
                    facts.dynamic = true;
                    dynamic = Some((ph.p_offset, ph.p_filesz));
                }
                _ => {}
            }
        }
        let loads = phdrs.into_iter().filter(|p| p.p_type == PT_LOAD).collect();
        let mut parsed = Parsed { facts, ctx, loads };
        if let Some((off, size)) = dynamic {
            let len = usize::try_from(size).unwrap_or(usize::MAX).min(DYNAMIC_CAP);
            if let Some(bytes) = range(&self.prefix, off, len as u64) {
                (parsed.facts.needed, parsed.facts.runpath) = needed(bytes, &self.prefix, &parsed);
            } else if off >= self.prefix.len() as u64 {
                self.dynamic_at = Some((off, len));
            }
        }
        self.parsed = Some(parsed);
    }
}

/// `bytes[off..off + len]`, if all of it is there.
fn range(bytes: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    bytes.get(start..end)
}

/// The NUL-terminated string at the start of `bytes`.
fn c_string(bytes: Option<&[u8]>) -> Option<String> {
    let b = bytes?;
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    (end > 0 && end <= MAX_NAME).then(|| String::from_utf8_lossy(&b[..end]).into_owned())
}

/// The `DT_NEEDED` names of dynamic section `dynamic` (`None` when the string table lies
/// beyond the prefix) and its run paths, with the string table looked up in `prefix`
/// through the load segments.
fn needed(dynamic: &[u8], prefix: &[u8], p: &Parsed) -> (Option<Vec<String>>, Vec<String>) {
    let mut off = 0;
    let (mut names, mut paths, mut strtab, mut strsz) = (Vec::new(), Vec::new(), None, None);
    while let Ok(d) = dynamic.gread_with::<Dyn>(&mut off, p.ctx) {
        match d.d_tag {
            DT_NULL => break,
            DT_NEEDED if names.len() < MAX_NEEDED => names.push(d.d_val),
            DT_RUNPATH | DT_RPATH if paths.len() < 4 => paths.push(d.d_val),
            DT_STRTAB => strtab = Some(d.d_val),
            DT_STRSZ => strsz = Some(d.d_val),
            _ => {}
        }
    }
    let Some(table) = strtab.and_then(|vaddr| string_table(vaddr, strsz, prefix, p)) else {
        return (None, Vec::new());
    };
    let at = |o: u64| c_string(table.get(usize::try_from(o).ok()?..));
    let runpath = paths
        .into_iter()
        .filter_map(at)
        .flat_map(|p| p.split(':').map(str::to_owned).collect::<Vec<_>>())
        .filter(|d| !d.is_empty())
        .collect();
    (names.into_iter().map(at).collect(), runpath)
}

/// The dynamic string table at `vaddr` (`strsz` bytes), if the prefix holds it.
fn string_table<'a>(
    vaddr: u64,
    strsz: Option<u64>,
    prefix: &'a [u8],
    p: &Parsed,
) -> Option<&'a [u8]> {
    let seg = p
        .loads
        .iter()
        .find(|s| vaddr >= s.p_vaddr && vaddr - s.p_vaddr < s.p_filesz)?;
    let file_off = (vaddr - seg.p_vaddr).checked_add(seg.p_offset)?;
    let size = strsz.unwrap_or(0).min(seg.p_filesz - (vaddr - seg.p_vaddr));
    range(prefix, file_off, size)
}

/// The facts of a whole file held in memory (tests).
#[cfg(test)]
pub fn facts_of(bytes: &[u8]) -> Option<ElfFacts> {
    let mut s = Scanner::new();
    s.feed(bytes);
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's `/bin/true` (x86-64 or arm64, dynamically linked) read in small pieces
    /// gives what reading it whole gives: its interpreter and libc among its needs.
    #[test]
    fn reads_the_hosts_true_in_pieces() {
        let bytes = std::fs::read("/bin/true").expect("/bin/true");
        let whole = facts_of(&bytes).expect("an ELF file");
        assert!(whole.class64 && whole.little_endian && whole.dynamic);
        assert!(
            whole.interp.as_deref().unwrap().starts_with("/lib"),
            "{whole:?}"
        );
        let needed = whole.needed.clone().expect("needed names");
        assert!(
            needed.iter().any(|n| n.starts_with("libc.so")),
            "{needed:?}"
        );
        let mut s = Scanner::new();
        for chunk in bytes.chunks(777) {
            s.feed(chunk);
        }
        assert_eq!(s.finish(), Some(whole));
    }

    /// A dynamic section beyond the prefix is read as the stream passes it.
    #[test]
    fn a_far_dynamic_section_is_read_from_the_stream() {
        let bytes = std::fs::read("/bin/true").expect("/bin/true");
        let whole = facts_of(&bytes).unwrap();
        // A 4 KiB prefix holds /bin/true's headers and string table, not its dynamic
        // section (in the last segment).
        let mut s = Scanner::with_cap(4096);
        for chunk in bytes.chunks(1000) {
            s.feed(chunk);
        }
        assert!(s.dynamic_at.is_some_and(|(at, _)| at >= 4096));
        assert!(!s.wants_more());
        assert_eq!(s.finish().as_ref(), Some(&whole));
        // Cut before the dynamic section: the needs are unknown, not guessed.
        let mut s = Scanner::with_cap(4096);
        s.feed(&bytes[..5000]);
        let cut = s.finish().unwrap();
        assert_eq!((cut.needed, cut.interp), (None, whole.interp));
    }

    /// A reader that seeks skips the gap before the dynamic section.
    #[test]
    fn a_seeking_reader_skips_to_the_dynamic_section() {
        let bytes = std::fs::read("/bin/true").expect("/bin/true");
        let whole = facts_of(&bytes).unwrap();
        let mut s = Scanner::with_cap(4096);
        s.feed(&bytes[..4096]);
        let at = s
            .wanted_at()
            .expect("the dynamic section lies beyond 4 KiB");
        s.skip_to(at);
        assert_eq!(s.wanted_at(), None);
        s.feed(&bytes[at as usize..]);
        assert_eq!(s.finish(), Some(whole));
    }

    #[test]
    fn busybox_static_has_no_interpreter() {
        let Ok(bytes) = std::fs::read("/bin/busybox") else {
            panic!("busybox-static is needed at /bin/busybox");
        };
        let f = facts_of(&bytes).unwrap();
        assert_eq!(f.interp, None);
        assert!(f.needed.unwrap_or_default().is_empty());
    }

    #[test]
    fn garbage_is_no_elf() {
        assert_eq!(facts_of(b"\x7fELF\x09\x09"), None);
        assert_eq!(facts_of(b"#!/bin/sh\n"), None);
    }
}
