//! Minimal ELF64 programs written by the tests, for the Lambda checks' native-code rules: one
//! PT_LOAD segment whose code calls exit(0), no interpreter, no dynamic section (as the
//! fixture base's `/usr/bin/sh`, written by fixtures/gen-base.py).

pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;

/// The ELF machine of an OCI architecture (`amd64`, else arm64).
pub fn machine_of(arch: &str) -> u16 {
    match arch {
        "amd64" => EM_X86_64,
        _ => EM_AARCH64,
    }
}

/// A static ELF64 file of type `e_type` (`ET_EXEC`, `ET_DYN`) for `machine` that exits 0 when
/// run.
pub fn stub_elf(machine: u16, e_type: u16) -> Vec<u8> {
    let code: Vec<u8> = match machine {
        EM_X86_64 => vec![0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05],
        EM_AARCH64 => [0xD280_0BA8u32, 0xD280_0000, 0xD400_0001]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect(),
        _ => panic!("no stub for machine {machine}"),
    };
    let base = 0x40_0000u64;
    let size = (64 + 56 + code.len()) as u64;
    let mut e = b"\x7fELF\x02\x01\x01\x00".to_vec();
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&e_type.to_le_bytes());
    e.extend_from_slice(&machine.to_le_bytes());
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(base + 120).to_le_bytes()); // e_entry
    e.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [0, base, base, size, size, 0x1000] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&code);
    assert_eq!(e.len() as u64, size);
    e
}

/// A static executable that exits 0.
pub fn exit0_elf(machine: u16) -> Vec<u8> {
    stub_elf(machine, ET_EXEC)
}
