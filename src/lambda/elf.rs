//! Whether an ELF file can run on the image's architecture (the kernel refuses any other with
//! `exec format error`), and how to name what it is built for. The header is parsed by
//! `goblin` (see [`crate::image::elf`], which also reads program headers and the dynamic
//! section from layer streams); this module only judges.

/// `e_machine` values that name the architectures one meets in container images.
pub const EM_386: u16 = 3;
pub const EM_ARM: u16 = 40;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// What the first bytes of an ELF file say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfHeader {
    /// `ELFCLASS64` (else 32-bit).
    pub class64: bool,
    /// `ELFDATA2LSB` (else big-endian).
    pub little_endian: bool,
    /// `e_type`: 1 relocatable, 2 executable, 3 shared object / PIE, 4 core.
    pub e_type: u16,
    pub machine: u16,
}

/// Why a file's first bytes are not an ELF executable that can run on the image's architecture.
/// The text completes a sentence whose subject is the file ("/var/task/app is not an ELF file").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("is not an ELF file")]
    NotElf,
    /// Fewer bytes than an ELF header (the count).
    #[error("is a truncated ELF file ({0} bytes, shorter than an ELF header)")]
    Truncated(usize),
    #[error("is an ELF file with an invalid class ({0})")]
    InvalidClass(u8),
    #[error("is an ELF file with an invalid data encoding ({0})")]
    InvalidEncoding(u8),
    #[error("is an ELF relocatable object (.o), not an executable")]
    Relocatable,
    #[error("is an ELF core dump, not an executable")]
    Core,
    #[error("is an ELF file of type {0}, not an executable")]
    NotExecutable(u16),
    /// Built for another machine than the image's architecture.
    #[error(
        "is an ELF executable for {}, but the image is linux/{arch} ({}): it would fail with `exec format error`",
        describe(found),
        describe(expected)
    )]
    WrongMachine {
        found: ElfHeader,
        arch: String,
        expected: ElfHeader,
    },
}

/// Does the file start with the ELF magic?
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// Parse the ELF identification and header (`goblin` does the reading): class, byte order,
/// `e_type` and `e_machine`.
pub fn parse(head: &[u8]) -> Result<ElfHeader, ElfError> {
    use scroll::Pread;
    if !is_elf(head) {
        return Err(ElfError::NotElf);
    }
    if head.len() < 20 {
        return Err(ElfError::Truncated(head.len()));
    }
    let class64 = match head[4] {
        1 => false,
        2 => true,
        c => return Err(ElfError::InvalidClass(c)),
    };
    let little_endian = match head[5] {
        1 => true,
        2 => false,
        d => return Err(ElfError::InvalidEncoding(d)),
    };
    let h = head
        .pread::<goblin::elf::Header>(0)
        .map_err(|_| ElfError::Truncated(head.len()))?;
    Ok(ElfHeader {
        class64,
        little_endian,
        e_type: h.e_type,
        machine: h.e_machine,
    })
}

impl From<&crate::image::elf::ElfFacts> for ElfHeader {
    fn from(f: &crate::image::elf::ElfFacts) -> ElfHeader {
        ElfHeader {
            class64: f.class64,
            little_endian: f.little_endian,
            e_type: f.e_type,
            machine: f.machine,
        }
    }
}

/// Is `h` an ELF file the image's architecture `arch` loads (64-bit little-endian, its
/// machine)? Architectures Lambda does not run are not judged (true).
pub fn fits(h: &ElfHeader, arch: &str) -> bool {
    expected_machine(arch).is_none_or(|m| h.class64 && h.little_endian && h.machine == m)
}

/// The architecture's name in wheel tags and GNU triplets (`x86_64`, `aarch64`).
pub fn gnu_arch(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => other,
    }
}

/// A human name for an `e_machine` value.
pub fn machine_name(machine: u16) -> String {
    match machine {
        EM_386 => "x86 (i386)".into(),
        8 => "MIPS".into(),
        20 => "PowerPC".into(),
        21 => "PowerPC64".into(),
        22 => "s390".into(),
        EM_ARM => "32-bit ARM".into(),
        EM_X86_64 => "x86-64".into(),
        EM_AARCH64 => "AArch64 (arm64)".into(),
        243 => "RISC-V".into(),
        258 => "LoongArch".into(),
        m => format!("machine {m}"),
    }
}

/// The header as a reader would describe it: `64-bit x86-64`, `32-bit big-endian PowerPC`.
pub fn describe(h: &ElfHeader) -> String {
    format!(
        "{}{} {}",
        if h.class64 { "64-bit" } else { "32-bit" },
        if h.little_endian { "" } else { " big-endian" },
        machine_name(h.machine)
    )
}

/// The ELF header a Linux binary for the OCI architecture `arch` has (class 64, little-endian,
/// machine): `None` for architectures Lambda does not run.
pub fn expected_machine(arch: &str) -> Option<u16> {
    match arch {
        "amd64" => Some(EM_X86_64),
        "arm64" => Some(EM_AARCH64),
        _ => None,
    }
}

/// Why an ELF file cannot be executed on `arch` (an OCI architecture name), if it cannot.
/// Architectures other than amd64 and arm64 are not judged (the platform rule reports them).
pub fn check_runs_on(h: &ElfHeader, arch: &str) -> Result<(), ElfError> {
    match h.e_type {
        2 | 3 => {}
        1 => return Err(ElfError::Relocatable),
        4 => return Err(ElfError::Core),
        t => return Err(ElfError::NotExecutable(t)),
    }
    let Some(machine) = expected_machine(arch) else {
        return Ok(());
    };
    if h.class64 && h.little_endian && h.machine == machine {
        return Ok(());
    }
    Err(ElfError::WrongMachine {
        found: *h,
        arch: arch.to_owned(),
        expected: ElfHeader {
            class64: true,
            little_endian: true,
            e_type: 2,
            machine,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of an ELF64 little-endian executable for `machine`.
    fn header(class: u8, data: u8, e_type: u16, machine: u16) -> Vec<u8> {
        let mut h = b"\x7fELF".to_vec();
        h.extend_from_slice(&[class, data, 1, 0]);
        h.extend_from_slice(&[0; 8]);
        if data == 2 {
            h.extend_from_slice(&e_type.to_be_bytes());
            h.extend_from_slice(&machine.to_be_bytes());
        } else {
            h.extend_from_slice(&e_type.to_le_bytes());
            h.extend_from_slice(&machine.to_le_bytes());
        }
        h.extend_from_slice(&[0; 44]);
        h
    }

    #[test]
    fn reads_class_data_type_and_machine() {
        let h = parse(&header(2, 1, 2, EM_X86_64)).unwrap();
        assert_eq!(
            h,
            ElfHeader {
                class64: true,
                little_endian: true,
                e_type: 2,
                machine: EM_X86_64
            }
        );
        let h = parse(&header(1, 2, 3, 20)).unwrap();
        assert!(!h.class64 && !h.little_endian);
        assert_eq!((h.e_type, h.machine), (3, 20));
        assert_eq!(describe(&h), "32-bit big-endian PowerPC");
    }

    #[test]
    fn refuses_what_is_not_a_whole_elf_header() {
        assert!(!is_elf(b"#!/bin/sh\n"));
        assert!(parse(b"#!/bin/sh\n").is_err());
        assert!(
            parse(b"\x7fELF\x02\x01")
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        assert!(
            parse(&header(3, 1, 2, EM_X86_64))
                .unwrap_err()
                .to_string()
                .contains("class")
        );
    }

    #[test]
    fn the_other_architecture_is_an_exec_format_error() {
        let x86 = parse(&header(2, 1, 2, EM_X86_64)).unwrap();
        let arm = parse(&header(2, 1, 3, EM_AARCH64)).unwrap();
        assert!(check_runs_on(&x86, "amd64").is_ok());
        assert!(check_runs_on(&arm, "arm64").is_ok());
        let e = check_runs_on(&x86, "arm64").unwrap_err().to_string();
        assert!(
            e.contains("x86-64") && e.contains("exec format error"),
            "{e}"
        );
        assert!(check_runs_on(&arm, "amd64").is_err());
        // 32-bit x86 on amd64 needs a compat layer Lambda does not have.
        let i386 = parse(&header(1, 1, 2, EM_386)).unwrap();
        assert!(check_runs_on(&i386, "amd64").is_err());
        let obj = parse(&header(2, 1, 1, EM_X86_64)).unwrap();
        assert!(
            check_runs_on(&obj, "amd64")
                .unwrap_err()
                .to_string()
                .contains("object")
        );
        // Unknown architectures are the platform rule's business.
        assert!(check_runs_on(&x86, "s390x").is_ok());
    }
}
