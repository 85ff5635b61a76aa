// SPDX-License-Identifier: GPL-2.0

//! Hyper-V enlightenments: the part of Microsoft's paravirtual interface
//! (the Hypervisor Top-Level Functional Specification, "TLFS", chapters
//! "Feature and Interface Discovery", "Hypercall Interface", "Partition
//! Properties: Time") that KVM offers its guests and rkvm implements.
//!
//! Windows, and Linux when it finds itself on Hyper-V, look for CPUID leaf
//! 0x4000_0001 saying "Hv#1". A VMM that wants them to see Hyper-V puts
//! that leaf and its neighbours (`KVM_GET_SUPPORTED_HV_CPUID`, [`supported`])
//! in the guest's CPUID, in place of KVM's own leaves. From then on:
//!
//! - the partition-wide MSRs at 0x4000_0000 and up exist ([`Partition`]):
//!   the guest's OS identity, the hypercall page, the reference time
//!   counter and the reference TSC page, the TSC and APIC frequencies, and
//!   the re-enlightenment MSRs, which are kept but never act (rkvm never
//!   changes a running guest's TSC frequency, so no re-enlightenment is
//!   ever due);
//! - each vCPU has a VP index (`VP_INDEX`, its creation order unless the
//!   VMM sets another) and, with an in-kernel APIC, the APIC-access MSRs
//!   (`EOI`, `ICR`, `TPR`: the APIC's registers as MSRs in either mode);
//! - once the guest has written its OS identity, VMCALL/VMMCALL is a
//!   Hyper-V hypercall ([`Call`]) instead of a KVM one. The IPI
//!   ([`ipi`]) and TLB-flush ([`tlb`]) hypercalls are the kernel's; the
//!   extended ones (0x8001 and up) go to user space as `KVM_EXIT_HYPERV`,
//!   as KVM sends them.
//!
//! Everything else of Hyper-V that KVM has (SynIC, synthetic timers, the
//! VP assist page, the crash and debug MSRs) is not
//! offered: its feature bits stay clear. The APIC-access MSRs work without
//! their bit (0x4000_0003 EAX bit 4), which also promises the VP assist
//! page, as KVM's work for a VMM that does not enforce the guest's Hyper-V
//! CPUID. Kernel glue: run/hyperv.rs.

use crate::abi::kvm_cpuid_entry2;
use crate::x86::pvclock::TimeInfo;

pub(crate) mod ipi;
pub(crate) mod params;
pub(crate) mod tlb;

/// The Hyper-V MSRs rkvm implements (TLFS appendix "Hypervisor Synthetic
/// MSRs"; `include/hyperv/hvgdk_mini.h`).
pub(crate) mod msr {
    pub(crate) const GUEST_OS_ID: u32 = 0x4000_0000;
    pub(crate) const HYPERCALL: u32 = 0x4000_0001;
    /// The vCPU's virtual processor index (per vCPU; the others are
    /// partition-wide).
    pub(crate) const VP_INDEX: u32 = 0x4000_0002;
    pub(crate) const TIME_REF_COUNT: u32 = 0x4000_0020;
    pub(crate) const REFERENCE_TSC: u32 = 0x4000_0021;
    pub(crate) const TSC_FREQUENCY: u32 = 0x4000_0022;
    pub(crate) const APIC_FREQUENCY: u32 = 0x4000_0023;
    pub(crate) const REENLIGHTENMENT_CONTROL: u32 = 0x4000_0106;
    pub(crate) const TSC_EMULATION_CONTROL: u32 = 0x4000_0107;
    pub(crate) const TSC_EMULATION_STATUS: u32 = 0x4000_0108;
    /// The APIC-access MSRs (per vCPU): the local APIC's EOI, ICR and TPR
    /// registers as MSRs in either APIC mode.
    pub(crate) const EOI: u32 = 0x4000_0070;
    pub(crate) const ICR: u32 = 0x4000_0071;
    pub(crate) const TPR: u32 = 0x4000_0072;

    /// Whether `index` is one of them (x86/msr.rs lists those of them that
    /// `KVM_GET_MSR_INDEX_LIST` reports).
    pub(crate) fn is_hyperv(index: u32) -> bool {
        matches!(
            index,
            GUEST_OS_ID..=VP_INDEX
                | EOI..=TPR
                | TIME_REF_COUNT..=APIC_FREQUENCY
                | REENLIGHTENMENT_CONTROL..=TSC_EMULATION_STATUS
        )
    }

    /// Bit 0 of `HYPERCALL` and of `REFERENCE_TSC`: the page is enabled;
    /// bits 63:12 are its guest-physical address.
    pub(crate) const ENABLE: u64 = 1;
    pub(crate) const PAGE_MASK: u64 = !0xfff;
}

/// "Hv#1" in EAX of leaf 0x4000_0001 (`HV_INTERFACE_LEAF`): the guest may
/// use this interface.
pub(crate) const INTERFACE_SIGNATURE: u32 = 0x3123_7648;
pub(crate) const HV_INTERFACE_LEAF: u32 = 0x4000_0001;

/// The leaves `KVM_GET_SUPPORTED_HV_CPUID` reports, in order (TLFS
/// "Feature and Interface Discovery"). 0x4000_0080–82 are the synthetic
/// debugger's, reported empty: rkvm has no synthetic debugger, but KVM's
/// table always holds the ten leaves and VMMs count on it.
const LEAVES: [u32; 10] = [
    0x4000_0000,
    0x4000_0001,
    0x4000_0002,
    0x4000_0003,
    0x4000_0004,
    0x4000_0005,
    0x4000_0080,
    0x4000_0081,
    0x4000_0082,
    0x4000_000A,
];

/// The number of leaves: a smaller buffer is `E2BIG`.
pub(crate) const LEAF_COUNT: usize = LEAVES.len();

/// "Linux KVM Hv" in EBX, ECX, EDX: the vendor KVM names in the Hyper-V
/// leaves (a guest does not look at it; rkvm keeps KVM's, as it keeps
/// "KVMKVMKVM" in KVM's own leaf).
const VENDOR: [u32; 3] = [0x756e_694c, 0x564b_2078, 0x7648_204d];

/// Leaf 0x4000_0003 EAX: the partition privileges, that is, which MSRs the
/// guest may use. The reference counter (bit 1), the hypercall MSRs (bit
/// 5), the VP index (bit 6), the reference TSC page (bit 9), the frequency
/// MSRs (bit 11) and the re-enlightenment MSRs (bit 13).
const FEATURES_EAX: u32 = (1 << 1) | (1 << 5) | (1 << 6) | (1 << 9) | (1 << 11) | (1 << 13);
/// Leaf 0x4000_0003 EBX: extended hypercalls (bit 20), which go to user
/// space.
const FEATURES_EBX: u32 = 1 << 20;
/// Leaf 0x4000_0003 EDX: fast hypercalls may pass input in XMM registers
/// (bit 4; rkvm's one such call is `SEND_IPI_EX`), the frequency MSRs are
/// there (bit 8).
const FEATURES_EDX: u32 = (1 << 4) | (1 << 8);
/// Leaf 0x4000_0004 EAX bit 2: flush other processors' TLBs with the
/// TLB-flush hypercalls.
const REMOTE_TLB_FLUSH_RECOMMENDED: u32 = 1 << 2;
/// Leaf 0x4000_0004 EAX bit 10: send IPIs with the IPI hypercalls (only
/// with an in-kernel APIC); bit 11: name processors by sparse sets
/// (`SEND_IPI_EX`).
const CLUSTER_IPI_RECOMMENDED: u32 = 1 << 10;
const EX_PROCESSOR_MASKS_RECOMMENDED: u32 = 1 << 11;
/// Leaf 0x4000_0004 EAX bit 18: no core of the guest shares a physical core
/// with another guest's (true when the host has no SMT).
const NO_NONARCH_CORESHARING: u32 = 1 << 18;
/// Leaf 0x4000_0004 EBX: how many times a guest should spin on a lock before
/// notifying the hypervisor; all ones means never (rkvm does not implement
/// the notification hypercall).
const SPIN_NEVER: u32 = u32::MAX;
/// Leaf 0x4000_000A EAX bit 19: the enlightened MSR bitmap, a feature of
/// nested virtualization. KVM reports it whether or not nesting is
/// enabled; so does rkvm, whose guests cannot nest (no SVM or VMX in their
/// CPUID), so no guest can act on it. docs/abi.md says so.
const NESTED_MSR_BITMAP: u32 = 1 << 19;

/// Fills `out` with the Hyper-V leaves rkvm offers; `smt_possible` is
/// whether the host may run SMT siblings, `max_vcpus` the most vCPUs a VM
/// can have, `apic` whether the IPI hypercalls can work (the device's
/// answer, or a vCPU's with an in-kernel APIC). Returns the count, or
/// `None` (`E2BIG`) if `out` is too small.
pub(crate) fn supported(
    smt_possible: bool,
    max_vcpus: u32,
    apic: bool,
    out: &mut [kvm_cpuid_entry2],
) -> Option<usize> {
    let out = out.get_mut(..LEAF_COUNT)?;
    for (entry, function) in out.iter_mut().zip(LEAVES) {
        let [vendor_b, vendor_c, vendor_d] = VENDOR;
        let (eax, ebx, ecx, edx) = match function {
            0x4000_0000 => (0x4000_0082, vendor_b, vendor_c, vendor_d),
            0x4000_0001 => (INTERFACE_SIGNATURE, 0, 0, 0),
            // Hyper-V 2016's version, as KVM reports: 10.0 build 14393.
            0x4000_0002 => (0x3839, 0x000A_0000, 0, 0),
            0x4000_0003 => (FEATURES_EAX, FEATURES_EBX, 0, FEATURES_EDX),
            0x4000_0004 => {
                let mut eax = REMOTE_TLB_FLUSH_RECOMMENDED | EX_PROCESSOR_MASKS_RECOMMENDED;
                if apic {
                    eax |= CLUSTER_IPI_RECOMMENDED;
                }
                if !smt_possible {
                    eax |= NO_NONARCH_CORESHARING;
                }
                (eax, SPIN_NEVER, 0, 0)
            }
            // The most virtual processors, and logical processors, a
            // partition can have.
            0x4000_0005 => (max_vcpus, max_vcpus, 0, 0),
            0x4000_0080 => (0, vendor_b, vendor_c, vendor_d),
            0x4000_000A => (NESTED_MSR_BITMAP, 0, 0, 0),
            _ => (0, 0, 0, 0),
        };
        *entry = kvm_cpuid_entry2 {
            function,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        };
    }
    Some(LEAF_COUNT)
}

/// Hypercall result codes (TLFS "Hypercall Status Codes").
pub(crate) mod status {
    pub(crate) const SUCCESS: u64 = 0;
    pub(crate) const INVALID_HYPERCALL_CODE: u64 = 2;
    pub(crate) const INVALID_HYPERCALL_INPUT: u64 = 3;
    pub(crate) const INVALID_PARAMETER: u64 = 5;
}

/// The first and last extended hypercall (TLFS "Extended Hypercalls"; KVM
/// passes these 64 codes to user space).
const EXT_CALL_FIRST: u16 = 0x8001;
const EXT_CALL_LAST: u16 = EXT_CALL_FIRST + 64;

/// A hypercall's input value (TLFS "Hypercall Inputs"): the call code
/// (bits 15:0), the fast flag (16: arguments in registers, not memory),
/// the variable header size (26:17), the rep count (43:32) and the rep
/// start index (59:48). Bits 31:27, 47:44 and 63:60 are reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) control: u64,
    /// The input and output parameters' guest-physical addresses (for a
    /// fast call, the parameters themselves).
    pub(crate) input: u64,
    pub(crate) output: u64,
}

const RESERVED: u64 = (0x1f << 27) | (0xf << 44) | (0xf << 60);

/// What a hypercall comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done: this status goes back to the guest.
    Done(u64),
    /// User space answers (`KVM_EXIT_HYPERV` with `KVM_EXIT_HYPERV_HCALL`).
    User,
    /// An IPI to send ([`ipi::decode`] has the rest of the checks).
    SendIpi,
    /// A TLB flush ([`tlb::decode`] has the rest of the checks).
    FlushTlb,
}

impl Call {
    pub(crate) fn code(&self) -> u16 {
        self.control as u16
    }

    pub(crate) fn fast(&self) -> bool {
        self.control & (1 << 16) != 0
    }

    /// The variable header's size, in 8-byte units (bits 26:17).
    pub(crate) fn var_count(&self) -> u64 {
        (self.control >> 17) & 0x3ff
    }

    /// The rep count (bits 43:32).
    pub(crate) fn rep_count(&self) -> u64 {
        (self.control >> 32) & 0xfff
    }

    /// The rep start index (bits 59:48).
    fn rep_index(&self) -> u64 {
        (self.control >> 48) & 0xfff
    }

    /// Whether the call is a rep call: a rep count or a start index.
    fn rep(&self) -> bool {
        self.rep_count() != 0 || self.rep_index() != 0
    }

    /// Whether a fast call's parameters go on into the XMM registers
    /// (KVM's `is_xmm_fast_hypercall`, for the calls rkvm has).
    pub(crate) fn reads_xmm(&self) -> bool {
        self.fast() && (self.code() == ipi::SEND_IPI_EX || tlb::is_flush(self.code()))
    }

    /// What rkvm does with this call: reserved bits set is an invalid
    /// input; the IPI calls are the kernel's, as long as they are not rep
    /// calls and `SEND_IPI` has no variable header; so are the TLB
    /// flushes, the list flushes as rep calls from rep 0, the space
    /// flushes not as rep calls, the plain forms without a variable
    /// header; the extended calls go
    /// to user space, except fast ones (their parameters are in memory by
    /// definition); everything else is an unknown code. KVM's order of
    /// checks (`kvm_hv_hypercall`).
    pub(crate) fn outcome(&self) -> Outcome {
        if self.control & RESERVED != 0 {
            return Outcome::Done(status::INVALID_HYPERCALL_INPUT);
        }
        match self.code() {
            ipi::SEND_IPI if self.var_count() != 0 => {
                Outcome::Done(status::INVALID_HYPERCALL_INPUT)
            }
            ipi::SEND_IPI | ipi::SEND_IPI_EX if self.rep() => {
                Outcome::Done(status::INVALID_HYPERCALL_INPUT)
            }
            ipi::SEND_IPI | ipi::SEND_IPI_EX => Outcome::SendIpi,
            tlb::FLUSH_SPACE | tlb::FLUSH_LIST if self.var_count() != 0 => {
                Outcome::Done(status::INVALID_HYPERCALL_INPUT)
            }
            tlb::FLUSH_LIST | tlb::FLUSH_LIST_EX
                if self.rep_count() == 0 || self.rep_index() != 0 =>
            {
                Outcome::Done(status::INVALID_HYPERCALL_INPUT)
            }
            tlb::FLUSH_SPACE | tlb::FLUSH_SPACE_EX if self.rep() => {
                Outcome::Done(status::INVALID_HYPERCALL_INPUT)
            }
            tlb::FLUSH_SPACE | tlb::FLUSH_LIST | tlb::FLUSH_SPACE_EX | tlb::FLUSH_LIST_EX => {
                Outcome::FlushTlb
            }
            EXT_CALL_FIRST..=EXT_CALL_LAST if self.fast() => {
                Outcome::Done(status::INVALID_PARAMETER)
            }
            EXT_CALL_FIRST..=EXT_CALL_LAST => Outcome::User,
            _ => Outcome::Done(status::INVALID_HYPERCALL_CODE),
        }
    }
}

/// The reference TSC page's contents (TLFS "Reference TSC Page"): a guest
/// computes the partition's reference time, in 100 ns units, as
/// `(tsc * scale) >> 64) + offset`, while `sequence` is not 0 (0 tells it
/// to read `TIME_REF_COUNT` instead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TscPage {
    pub(crate) sequence: u32,
    pub(crate) scale: u64,
    pub(crate) offset: i64,
}

/// The page's size in guest memory: sequence, reserved, scale, offset.
pub(crate) const TSC_PAGE_SIZE: usize = 24;

impl TscPage {
    /// The reference time the page gives at guest TSC `tsc`.
    pub(crate) fn read(&self, tsc: u64) -> u64 {
        let scaled = ((u128::from(tsc) * u128::from(self.scale)) >> 64) as u64;
        scaled.wrapping_add(self.offset as u64)
    }

    pub(crate) fn to_bytes(self) -> [u8; TSC_PAGE_SIZE] {
        let mut b = [0u8; TSC_PAGE_SIZE];
        b[0..4].copy_from_slice(&self.sequence.to_le_bytes());
        b[8..16].copy_from_slice(&self.scale.to_le_bytes());
        b[16..24].copy_from_slice(&self.offset.to_le_bytes());
        b
    }

    pub(crate) fn from_bytes(b: &[u8; TSC_PAGE_SIZE]) -> Self {
        let word = |r: core::ops::Range<usize>| {
            let mut w = [0u8; 8];
            w[..r.len()].copy_from_slice(&b[r]);
            u64::from_le_bytes(w)
        };
        Self {
            sequence: word(0..4) as u32,
            scale: word(8..16),
            offset: word(16..24) as i64,
        }
    }

    /// The scale and offset that make the page read what the kvmclock
    /// structure `clock` reads, divided by 100: the clock counts
    /// `mul * 2^shift / 2^32` ns per tick, so the page's scale is that
    /// divided by 100, times 2^64; the offset makes both agree at the
    /// clock's own TSC timestamp. `None` when the scale does not fit in 64
    /// bits (a TSC slower than 10 MHz) or the clock is not stable: the
    /// guest then reads the counter MSR. `sequence` follows `previous`,
    /// skipping 0 and all ones (the values the TLFS reserves).
    pub(crate) fn from_clock(clock: &TimeInfo, previous: u32) -> Option<Self> {
        if clock.flags & crate::x86::pvclock::FLAG_TSC_STABLE == 0 {
            return None;
        }
        let shift = 32 + i32::from(clock.shift);
        if !(0..=64).contains(&shift) {
            return None;
        }
        let scale = div_small(u128::from(clock.mul) << shift, 100);
        let scale = u64::try_from(scale).ok()?;
        // The timestamp is the guest's TSC at the clock's reference, which
        // comes before the vCPU existed (its TSC started near 0 later):
        // negative as a signed number, and scaled as one, so that the
        // page's reading at any later TSC is the clock's.
        let base = (i128::from(clock.tsc_timestamp as i64) * i128::from(scale)) >> 64;
        let offset = (clock.system_time / 100).wrapping_sub(base as u64);
        let mut sequence = previous.wrapping_add(1);
        if sequence == 0 || sequence == u32::MAX {
            sequence = 1;
        }
        Some(Self {
            sequence,
            scale,
            offset: offset as i64,
        })
    }
}

/// `n / d` by 32-bit limbs with 64-bit divisions: the kernel has no
/// 128-bit division (`__udivti3`).
fn div_small(n: u128, d: u32) -> u128 {
    let d = u64::from(d);
    let mut quotient = 0u128;
    let mut rest = 0u64;
    for limb in (0..4).rev() {
        let part = (rest << 32) | ((n >> (limb * 32)) as u64 & 0xffff_ffff);
        quotient |= u128::from(part / d) << (limb * 32);
        rest = part % d;
    }
    quotient
}

/// Where the reference TSC page stands (KVM's `hv_tsc_page_status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum TscStatus {
    /// Not enabled.
    #[default]
    Unset,
    /// To be written before the next entry: enabled by the guest (or the
    /// host), or the VM's clock moved.
    Stale { by_guest: bool },
    /// Written, from a vCPU whose TSC offset was `tsc_offset`; the reference
    /// time counter reads the page's values.
    Set { page: TscPage, tsc_offset: u64 },
    /// Could not be written (no memory there, or no stable clock): the
    /// guest reads the counter MSR, and rkvm tries again only when the MSR
    /// is written.
    Broken,
}

/// The partition-wide Hyper-V state (one per VM); all zero, the page unset,
/// at creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Partition {
    pub(crate) guest_os_id: u64,
    pub(crate) hypercall: u64,
    pub(crate) reference_tsc: u64,
    pub(crate) tsc: TscStatus,
    pub(crate) reenlightenment_control: u64,
    pub(crate) tsc_emulation_control: u64,
    pub(crate) tsc_emulation_status: u64,
}

/// What a write of a partition MSR asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// Done.
    Done,
    /// Refused: #GP for the guest, an error for the host.
    Refused,
    /// Fill the hypercall page at this address, then call
    /// [`Partition::hypercall_page_written`] with the value if that
    /// worked (#GP if not, and nothing changes).
    HypercallPage(u64),
}

impl Partition {
    /// Whether VMCALL is a Hyper-V hypercall: the guest has said who it
    /// is. (The hypercall page's enable bit is only where the page is; a
    /// guest may issue VMCALL itself, and KVM accepts it.)
    pub(crate) fn hypercalls_enabled(&self) -> bool {
        self.guest_os_id != 0
    }

    /// Whether a guest's view of the reference TSC page is frozen: it turned
    /// on TSC emulation (as a guest does after a migration, until it has
    /// re-enlightened itself), so a clock change does not rewrite the page,
    /// as KVM's `tsc_page_update_unsafe`.
    fn tsc_page_frozen(&self) -> bool {
        self.tsc_emulation_control != 0 && self.tsc != (TscStatus::Stale { by_guest: true })
    }

    /// The VM's clock moved (`KVM_SET_CLOCK`): a written page is rewritten
    /// at the next entry, unless the guest froze it.
    pub(crate) fn clock_moved(&mut self) {
        if matches!(self.tsc, TscStatus::Set { .. }) && !self.tsc_page_frozen() {
            self.tsc = TscStatus::Stale { by_guest: false };
        }
    }

    /// A vCPU enters with TSC offset `tsc_offset`: if the page was written
    /// for another, the guest's TSC moved (a write of IA32_TSC or
    /// TSC_ADJUST, or the VMM's) and the page is rewritten at this entry,
    /// unless the guest froze it (then the new offset is taken as it is,
    /// as KVM's TSC change leaves a frozen page alone).
    pub(crate) fn tsc_offset_seen(&mut self, tsc_offset: u64) {
        if let TscStatus::Set {
            page,
            tsc_offset: old,
        } = self.tsc
        {
            if old != tsc_offset {
                self.tsc = if self.tsc_page_frozen() {
                    TscStatus::Set { page, tsc_offset }
                } else {
                    TscStatus::Stale { by_guest: false }
                };
            }
        }
    }

    /// The TSC offset the page was written for, while it is set.
    pub(crate) fn tsc_page_offset(&self) -> Option<u64> {
        match self.tsc {
            TscStatus::Set { tsc_offset, .. } => Some(tsc_offset),
            _ => None,
        }
    }

    /// Writes a partition MSR; `host` is a write by the VMM
    /// (`KVM_SET_MSRS`), which may set what the guest may not. Reads and
    /// writes of MSRs that depend on time and memory (`TIME_REF_COUNT`, the
    /// frequencies) are the caller's.
    pub(crate) fn write(&mut self, index: u32, value: u64, host: bool) -> Write {
        match index {
            msr::GUEST_OS_ID => {
                self.guest_os_id = value;
                // An OS identity of 0 turns the hypercall page off.
                if value == 0 {
                    self.hypercall &= !msr::ENABLE;
                }
            }
            // Without an OS identity the write is dropped (TLFS: the
            // hypercall page cannot be enabled before it).
            msr::HYPERCALL if self.guest_os_id == 0 => {}
            msr::HYPERCALL if value & msr::ENABLE == 0 => self.hypercall = value,
            msr::HYPERCALL => return Write::HypercallPage(value & msr::PAGE_MASK),
            msr::REFERENCE_TSC => {
                self.reference_tsc = value;
                self.tsc = if value & msr::ENABLE != 0 {
                    TscStatus::Stale { by_guest: !host }
                } else {
                    TscStatus::Unset
                };
            }
            msr::REENLIGHTENMENT_CONTROL => self.reenlightenment_control = value,
            msr::TSC_EMULATION_CONTROL => self.tsc_emulation_control = value,
            // The guest may only clear it.
            msr::TSC_EMULATION_STATUS if value != 0 && !host => return Write::Refused,
            msr::TSC_EMULATION_STATUS => self.tsc_emulation_status = value,
            // Read-only: the host's write is ignored (so that a VMM may
            // restore every listed MSR), the guest's refused.
            msr::TIME_REF_COUNT | msr::TSC_FREQUENCY | msr::APIC_FREQUENCY if host => {}
            _ => return Write::Refused,
        }
        Write::Done
    }

    /// The hypercall page at `value`'s address was written.
    pub(crate) fn hypercall_page_written(&mut self, value: u64) {
        self.hypercall = value;
    }

    /// Reads a partition MSR that holds what was written (`None` for the
    /// others).
    pub(crate) fn read(&self, index: u32) -> Option<u64> {
        Some(match index {
            msr::GUEST_OS_ID => self.guest_os_id,
            msr::HYPERCALL => self.hypercall,
            msr::REFERENCE_TSC => self.reference_tsc,
            msr::REENLIGHTENMENT_CONTROL => self.reenlightenment_control,
            msr::TSC_EMULATION_CONTROL => self.tsc_emulation_control,
            msr::TSC_EMULATION_STATUS => self.tsc_emulation_status,
            _ => return None,
        })
    }

    /// What to do about the reference TSC page before an entry: `Some`
    /// when it must be written, with the page's address.
    pub(crate) fn tsc_page_due(&self) -> Option<u64> {
        matches!(self.tsc, TscStatus::Stale { .. }).then_some(self.reference_tsc & msr::PAGE_MASK)
    }

    /// The page the guest already has, `current`, read back from its
    /// memory: if the guest froze it and it is valid, rkvm adopts it as
    /// it is (KVM's behaviour across a migration), for a vCPU with TSC
    /// offset `tsc_offset`; returns whether it did.
    pub(crate) fn adopt_frozen(&mut self, current: TscPage, tsc_offset: u64) -> bool {
        if current.sequence != 0 && self.tsc_page_frozen() {
            self.tsc = TscStatus::Set {
                page: current,
                tsc_offset,
            };
            return true;
        }
        false
    }

    /// The reference time counter (in 100 ns units) at guest TSC `tsc`,
    /// with `clock_100ns` the VM's kvmclock divided by 100: the page's
    /// reading while it is set, so that the two never disagree, the clock
    /// otherwise.
    pub(crate) fn reference_time(&self, tsc: u64, clock_100ns: u64) -> u64 {
        match self.tsc {
            TscStatus::Set { page, .. } => page.read(tsc),
            _ => clock_100ns,
        }
    }
}

/// A write of a vCPU's VP index: only the VMM's (`host`), and only an index
/// below `max_vcpus`, of the value's low 32 bits, as KVM's
/// `kvm_hv_set_msr`; `None` is refused (#GP for the guest). The index is
/// the vCPU's creation order until the VMM sets it (KVM's `vcpu_idx`).
pub(crate) fn vp_index_write(value: u64, host: bool, max_vcpus: u32) -> Option<u32> {
    let index = value as u32;
    (host && index < max_vcpus).then_some(index)
}

/// The hypercall page's code: the vendor's hypercall instruction
/// (`insn`, 3 bytes) and RET. The guest calls into the page.
pub(crate) fn hypercall_page(insn: [u8; 3]) -> [u8; 4] {
    [insn[0], insn[1], insn[2], 0xc3]
}
