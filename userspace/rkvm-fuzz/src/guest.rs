//! Random guest code: a string of instructions that reach the hypervisor
//! (port and string I/O, MMIO, MSRs, CR and DR writes, CPUID, HLT, cache
//! flushes, SVM/VMX instructions), that fault (#UD, #DE, #GP, #PF, INT3),
//! that change the guest's own state (LGDT, LIDT, CLI/STI, IRET), loops,
//! and plain random bytes. The encodings are the 32-bit ones; in 16- and
//! 64-bit code they decode to other instructions, which is fine here.
//!
//! Guest code never writes EFER and never clears CR4.PAE: together with
//! CR0.PG clear, EFER.LME without CR4.PAE hangs QEMU's emulation of SVM
//! (`actions::avoid_qemu_vmexit_hang`), so the MSRs it names leave EFER out.

use crate::rng::Rng;

/// Snippets, each a complete instruction (or two).
const SNIPPETS: &[&[u8]] = &[
    &[0xee],             // out dx, al
    &[0xef],             // out dx, eax
    &[0xec],             // in al, dx
    &[0xed],             // in eax, dx
    &[0xe6, 0x80],       // out 0x80, al
    &[0xe4, 0x61],       // in al, 0x61
    &[0xf3, 0x6c],       // rep insb
    &[0xf3, 0x6e],       // rep outsb
    &[0xf3, 0x6d],       // rep insd
    &[0xf3, 0xa4],       // rep movsb
    &[0xf4],             // hlt
    &[0xfa],             // cli
    &[0xfb],             // sti
    &[0x0f, 0xa2],       // cpuid
    &[0x0f, 0x32],       // rdmsr
    &[0x0f, 0x30],       // wrmsr
    &[0x0f, 0x31],       // rdtsc
    &[0x0f, 0x01, 0xf9], // rdtscp
    &[0x0f, 0x0b],       // ud2
    &[0xcc],             // int3
    &[0xcd, 0x80],       // int 0x80
    &[0xce],             // into
    &[0x0f, 0x22, 0xc0], // mov cr0, eax
    &[0x0f, 0x20, 0xc0], // mov eax, cr0
    &[0x0f, 0x22, 0xd8], // mov cr3, eax
    // or eax, 0x20; mov cr4, eax: CR4.PAE is never cleared (module docs).
    &[0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0],
    &[0x0f, 0x20, 0xd0],       // mov eax, cr2
    &[0x0f, 0x23, 0xf8],       // mov dr7, eax
    &[0x0f, 0x21, 0xf0],       // mov eax, dr6
    &[0x0f, 0x23, 0xc0],       // mov dr0, eax
    &[0x0f, 0x09],             // wbinvd
    &[0x0f, 0x08],             // invd
    &[0x0f, 0x01, 0x38],       // invlpg [eax]
    &[0xf3, 0x90],             // pause
    &[0xeb, 0xfe],             // jmp $
    &[0xfa, 0xeb, 0xfe],       // cli; jmp $
    &[0x31, 0xc0, 0xf7, 0xf0], // xor eax, eax; div eax
    &[0x89, 0x00],             // mov [eax], eax
    &[0x8b, 0x00],             // mov eax, [eax]
    &[0x88, 0x03],             // mov [ebx], al
    &[0x0f, 0x01, 0x18],       // lidt [eax]
    &[0x0f, 0x01, 0x10],       // lgdt [eax]
    &[0x0f, 0x00, 0xd8],       // ltr ax
    &[0x0f, 0x00, 0xd0],       // lldt ax
    &[0x8e, 0xd8],             // mov ds, eax
    &[0x8e, 0xd0],             // mov ss, eax
    &[0xcf],                   // iret
    &[0x9c, 0x58],             // pushf; pop eax
    &[0x50, 0x9d],             // push eax; popf
    &[0x0f, 0x01, 0xd9],       // vmmcall
    &[0x0f, 0x01, 0xc1],       // vmcall
    &[0x0f, 0x01, 0xd8],       // vmrun
    &[0x0f, 0x01, 0xdd],       // clgi
    &[0x0f, 0x01, 0xdc],       // stgi
    &[0x0f, 0x01, 0xd1],       // xsetbv
    &[0x0f, 0x01, 0xc8],       // monitor
    &[0x0f, 0x01, 0xc9],       // mwait
    &[0x0f, 0x05],             // syscall
    &[0x0f, 0x34],             // sysenter
    &[0x0f, 0xaa],             // rsm
    &[0xf1],                   // icebp
    &[0x0f, 0x33],             // rdpmc
    &[0x9b],                   // fwait
    &[0xdb, 0xe3],             // fninit
    &[0x0f, 0xae, 0x10],       // ldmxcsr [eax]
    &[0xf0, 0x0f, 0xc7, 0x08], // lock cmpxchg8b [eax]
];

/// `len` bytes of random guest code.
pub(crate) fn code(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        match rng.below(10) {
            // Load a register with an interesting value (port, MSR, address).
            0..=2 => {
                let op = rng.pick(&[0xb8u8, 0xb9, 0xba, 0xbb]).unwrap_or(0xb8);
                out.push(op);
                let v = match rng.below(4) {
                    0 => rng
                        .pick(&[
                            0x3f8u64, 0xe9, 0x80, 0x20, 0xa0, 0x40, 0x61, 0xcf8, 0x64, 0x21, 0xa1,
                            0x4d0,
                        ])
                        .unwrap_or(0),
                    1 => rng
                        .pick(&[
                            0xc000_0081u64,
                            0x1b,
                            0x10,
                            0xc000_0100,
                            0x277,
                            0x3a,
                            0x48,
                            0xc001_0117,
                            // x2APIC TPR, EOI, ICR, timer initial count; TSC deadline.
                            0x808,
                            0x80b,
                            0x830,
                            0x838,
                            0x6e0,
                        ])
                        .unwrap_or(0),
                    2 => rng
                        .pick(&[
                            0xfee0_0000u64,
                            // The APIC's EOI, SVR, ICR, LVT timer, initial count.
                            0xfee0_00b0,
                            0xfee0_00f0,
                            0xfee0_0300,
                            0xfee0_0320,
                            0xfee0_0380,
                            0xfec0_0000,
                            0xfec0_0010,
                            0xd000_0000,
                            0xa0000,
                            0x20_0000,
                            0,
                        ])
                        .unwrap_or(0),
                    _ => rng.next(),
                };
                out.extend_from_slice(&(v as u32).to_le_bytes());
            }
            3 => out.push(rng.next() as u8),
            _ => {
                if let Some(s) = rng.pick(SNIPPETS) {
                    out.extend_from_slice(s);
                }
            }
        }
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_has_the_asked_length_and_is_reproducible() {
        let a = code(&mut Rng::new(5), 100);
        let b = code(&mut Rng::new(5), 100);
        assert_eq!(a.len(), 100);
        assert_eq!(a, b);
        assert_ne!(a, code(&mut Rng::new(6), 100));
    }
}
