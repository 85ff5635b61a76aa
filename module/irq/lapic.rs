// SPDX-License-Identifier: GPL-2.0

//! The local APIC of one vCPU, as a register model.
//!
//! The state is the register page itself: 256 32-bit words, of which every
//! fourth is a register at a 16-byte aligned offset (SDM Vol. 3A Table
//! 11-1), exactly the `regs` of `struct kvm_lapic_state` that
//! `KVM_GET_LAPIC` and `KVM_SET_LAPIC` copy. Around it, the rules:
//! - the xAPIC MMIO interface ([`Lapic::mmio_read`], [`Lapic::mmio_write`])
//!   and the x2APIC MSR interface ([`Lapic::msr_read`],
//!   [`Lapic::msr_write`]), which differ in what is readable, writable
//!   and how errors show (ignored writes versus #GP). SDM 11.4, 11.12;
//! - interrupt acceptance into IRR, priority (TPR, PPR), the
//!   acknowledgement that moves a vector from IRR to ISR, and EOI, which
//!   reports level-triggered vectors for the IOAPIC's remote IRR. SDM
//!   11.8;
//! - the interrupt command register, which turns into a [`Message`] for the
//!   other APICs (an IPI). SDM 11.6;
//! - the timer in one-shot, periodic and TSC-deadline modes, as
//!   deadlines in nanoseconds of host time that the kernel glue arms an
//!   hrtimer for. SDM 11.5.4.
//!
//! What a register write does beyond the page comes back as an
//! [`Effect`] for the glue to carry out (send an IPI, EOI an IOAPIC line,
//! re-arm the timer). Pure logic, unit-tested on the host.
//!
//! Like KVM's, this APIC's timer counts at 1 GHz before the divider (one
//! count per nanosecond) unless the VMM sets another bus clock
//! (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`), it has six LVT entries (no CMCI), and vCPU 0's
//! LINT0 starts as the PIC's virtual wire (KVM's `LINT0_REENABLED`
//! quirk). Directed EOI is not offered.

use super::delivery::{DeliveryMode, Destination, Message, Receiver, Shorthand};

/// Register offsets in the xAPIC page. SDM Vol. 3A Table 11-1.
pub(crate) mod reg {
    pub(crate) const ID: u32 = 0x20;
    pub(crate) const VERSION: u32 = 0x30;
    pub(crate) const TPR: u32 = 0x80;
    pub(crate) const APR: u32 = 0x90;
    pub(crate) const PPR: u32 = 0xa0;
    pub(crate) const EOI: u32 = 0xb0;
    pub(crate) const RRD: u32 = 0xc0;
    pub(crate) const LDR: u32 = 0xd0;
    pub(crate) const DFR: u32 = 0xe0;
    pub(crate) const SVR: u32 = 0xf0;
    pub(crate) const ISR: u32 = 0x100;
    pub(crate) const TMR: u32 = 0x180;
    pub(crate) const IRR: u32 = 0x200;
    pub(crate) const ESR: u32 = 0x280;
    pub(crate) const LVT_CMCI: u32 = 0x2f0;
    pub(crate) const ICR_LOW: u32 = 0x300;
    pub(crate) const ICR_HIGH: u32 = 0x310;
    pub(crate) const LVT_TIMER: u32 = 0x320;
    pub(crate) const LVT_THERMAL: u32 = 0x330;
    pub(crate) const LVT_PMC: u32 = 0x340;
    pub(crate) const LVT_LINT0: u32 = 0x350;
    pub(crate) const LVT_LINT1: u32 = 0x360;
    pub(crate) const LVT_ERROR: u32 = 0x370;
    pub(crate) const TIMER_INITIAL: u32 = 0x380;
    pub(crate) const TIMER_CURRENT: u32 = 0x390;
    pub(crate) const TIMER_DIVIDE: u32 = 0x3e0;
    /// x2APIC only.
    pub(crate) const SELF_IPI: u32 = 0x3f0;
}

/// The x2APIC MSRs: 0x800 + offset / 16. SDM Vol. 3A 11.12.1.
pub(crate) const X2APIC_MSR_FIRST: u32 = 0x800;
pub(crate) const X2APIC_MSR_LAST: u32 = 0x8ff;

/// The TSC-deadline MSR. SDM Vol. 3A 11.5.4.1.
pub(crate) const MSR_TSC_DEADLINE: u32 = 0x6e0;

/// The version register: an integrated APIC (0x14, as KVM reports) with
/// six LVT entries (bits 23:16 hold the highest index, 5).
pub(crate) const VERSION: u32 = 0x14 | (5 << 16);

/// SVR: the APIC software enable bit and the bits a guest may write
/// (vector, enable, focus processor checking).
const SVR_ENABLE: u32 = 1 << 8;
const SVR_WRITABLE: u32 = 0x3ff;

/// LVT bits. SDM Vol. 3A Figure 11-8.
pub(crate) mod lvt {
    pub(crate) const VECTOR: u32 = 0xff;
    pub(crate) const DELIVERY_MODE: u32 = 0x700;
    pub(crate) const INPUT_POLARITY: u32 = 1 << 13;
    pub(crate) const REMOTE_IRR: u32 = 1 << 14;
    pub(crate) const LEVEL: u32 = 1 << 15;
    pub(crate) const MASKED: u32 = 1 << 16;
    /// Timer mode, bits 18:17: 0 one-shot, 1 periodic, 2 TSC-deadline.
    pub(crate) const TIMER_MODE: u32 = 3 << 17;
    pub(crate) const TIMER_PERIODIC: u32 = 1 << 17;
    pub(crate) const TIMER_TSC_DEADLINE: u32 = 2 << 17;
}

/// ICR bits. SDM Vol. 3A Figure 11-12.
mod icr {
    pub(super) const DELIVERY_STATUS: u32 = 1 << 12;
    pub(super) const LOGICAL: u32 = 1 << 11;
    pub(super) const LEVEL_ASSERT: u32 = 1 << 14;
    pub(super) const TRIGGER_LEVEL: u32 = 1 << 15;
    pub(super) const SHORTHAND_SHIFT: u32 = 18;
    /// Bits of the x2APIC ICR's low half that must be 0 (31:20, 17:16, 13).
    pub(super) const X2APIC_RESERVED: u32 = 0xfff3_2000;
}

/// The shortest period the periodic timer may have: KVM's
/// `min_timer_period_us` (200 µs). A guest asking for less gets this, so
/// that it cannot keep a host CPU busy with timer interrupts.
pub(crate) const MIN_PERIOD_NS: u64 = 200_000;

/// The APIC bus cycle, in ns, unless the VMM sets another: 1 GHz, as
/// KVM's `APIC_BUS_CYCLE_NS_DEFAULT`.
pub(crate) const DEFAULT_BUS_CYCLE_NS: u64 = 1;

/// Whether `ns` may be the APIC bus cycle: not 0, and small enough that
/// the longest count (2^32 - 1 at divisor 128) is a number of ns a `u64`
/// holds, as KVM's check of `KVM_CAP_X86_APIC_BUS_CYCLES_NS`.
pub(crate) fn bus_cycle_ns_valid(ns: u64) -> bool {
    ns != 0 && (u64::from(u32::MAX) * 128).checked_mul(ns).is_some()
}

/// The six LVT registers, in the order of their offsets.
const LVTS: [u32; 6] = [
    reg::LVT_TIMER,
    reg::LVT_THERMAL,
    reg::LVT_PMC,
    reg::LVT_LINT0,
    reg::LVT_LINT1,
    reg::LVT_ERROR,
];

/// The bits of each LVT register software may write. SDM Vol. 3A 11.5.1:
/// the timer and error entries have no delivery mode; only LINT0/LINT1
/// have polarity and trigger mode (their remote IRR is read-only).
fn lvt_writable(offset: u32, tsc_deadline: bool) -> u32 {
    let common = lvt::VECTOR | lvt::MASKED;
    match offset {
        reg::LVT_TIMER => {
            common
                | if tsc_deadline {
                    lvt::TIMER_MODE
                } else {
                    lvt::TIMER_PERIODIC
                }
        }
        reg::LVT_THERMAL | reg::LVT_PMC => common | lvt::DELIVERY_MODE,
        reg::LVT_LINT0 | reg::LVT_LINT1 => {
            common | lvt::DELIVERY_MODE | lvt::INPUT_POLARITY | lvt::LEVEL
        }
        _ => common,
    }
}

/// The timer's mode, from LVT timer bits 18:17.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
}

/// What a register access asks of the rest of the irqchip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing beyond the register page.
    None,
    /// Send this message to the APICs it names (an ICR or SELF_IPI write).
    Ipi(Message),
    /// A level-triggered vector was EOIed: the IOAPIC clears the remote
    /// IRR of the pins routed to it (SDM Vol. 3A 11.8.5).
    LevelEoi(u8),
    /// An edge-triggered vector was EOIed: nothing for the IOAPIC's
    /// registers, but whoever waits for the acknowledgement of an
    /// edge-triggered pin with that vector (the PIT's tick reinjection)
    /// is told, as KVM routes such EOIs to its IOAPIC.
    EdgeEoi(u8),
    /// The timer's deadline changed: re-arm (or cancel) the host timer to
    /// [`Lapic::timer_deadline`].
    TimerChanged,
    /// The priority dropped or an interrupt became pending: the vCPU may
    /// now have an interrupt to take.
    Reevaluate,
}

/// Why an x2APIC MSR access takes #GP. SDM Vol. 3A 11.12.1.2: reads of
/// write-only or absent registers, writes of read-only or absent
/// registers, reserved bits set, and any access while not in x2APIC mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gp;

/// The timer's running state: when it was started and when it fires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Timer {
    /// Host time (ns) at which the running count started, or the last
    /// period began.
    start_ns: u64,
    /// Host time (ns) of the next expiry; `None` when not running.
    deadline_ns: Option<u64>,
    /// The period in ns (periodic mode; 0 otherwise).
    period_ns: u64,
}

/// The part of an APIC's state the run loop needs before every entry,
/// packed into a word that can be read without the APIC's lock: whether
/// any vector is requested (IRR not empty: without one nothing can be
/// pending), whether LINT0 takes the PIC's interrupts, and the TPR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) requests: bool,
    pub(crate) accepts_pic: bool,
    pub(crate) tpr: u8,
}

impl Summary {
    /// The word: TPR in bits 7:0, `requests` in bit 8, `accepts_pic` in 9.
    pub(crate) fn to_word(self) -> u32 {
        u32::from(self.tpr) | u32::from(self.requests) << 8 | u32::from(self.accepts_pic) << 9
    }

    pub(crate) fn from_word(w: u32) -> Self {
        Summary {
            requests: w & (1 << 8) != 0,
            accepts_pic: w & (1 << 9) != 0,
            tpr: w as u8,
        }
    }
}

/// One local APIC.
#[derive(Clone, Debug)]
pub(crate) struct Lapic {
    /// The register page, as `struct kvm_lapic_state`.
    regs: [u32; 256],
    /// IA32_APIC_BASE.EN: the APIC is globally enabled.
    enabled: bool,
    /// IA32_APIC_BASE.EXTD: x2APIC mode.
    x2apic: bool,
    /// The vCPU id: the initial APIC ID, and the x2APIC ID.
    vcpu_id: u32,
    /// The bootstrap processor's APIC: LINT0 starts as the PIC's virtual
    /// wire.
    bsp: bool,
    /// Whether the guest's CPUID offers the TSC-deadline timer mode.
    tsc_deadline_offered: bool,
    /// IA32_TSC_DEADLINE, in guest TSC ticks (0: disarmed).
    tsc_deadline: u64,
    timer: Timer,
    /// The bus cycle the timer counts, in ns, before the divider.
    bus_cycle_ns: u64,
}

/// Bit `vector` of a 256-bit register (ISR, TMR, IRR): the word at
/// `base + 0x10 * (vector / 32)`, bit `vector % 32`.
fn vector_word(base: u32, vector: u8) -> (usize, u32) {
    let v = u32::from(vector);
    (((base + 0x10 * (v / 32)) / 4) as usize, 1 << (v % 32))
}

impl Lapic {
    /// The APIC after RESET (SDM Vol. 3A 11.4.7.1, as KVM's
    /// `kvm_lapic_reset`): ID = vCPU id, every LVT masked, SVR 0xff (the
    /// APIC software-disabled), DFR flat, all else 0. The base MSR's
    /// enable bit is the caller's (`x86::regs` resets it to enabled).
    pub(crate) fn new(vcpu_id: u32, tsc_deadline_offered: bool) -> Self {
        Self::with_bsp(vcpu_id, vcpu_id == 0, tsc_deadline_offered)
    }

    /// The APIC of vCPU `vcpu_id`, which is the bootstrap processor if
    /// `bsp` (`KVM_SET_BOOT_CPU_ID`), after RESET.
    pub(crate) fn with_bsp(vcpu_id: u32, bsp: bool, tsc_deadline_offered: bool) -> Self {
        let mut apic = Lapic {
            regs: [0; 256],
            enabled: true,
            x2apic: false,
            vcpu_id,
            bsp,
            tsc_deadline_offered,
            tsc_deadline: 0,
            timer: Timer::default(),
            bus_cycle_ns: DEFAULT_BUS_CYCLE_NS,
        };
        apic.reset();
        apic
    }

    /// RESET of the APIC's registers: the ID goes back to the vCPU id.
    pub(crate) fn reset(&mut self) {
        let id = if self.x2apic {
            self.vcpu_id
        } else {
            self.vcpu_id << 24
        };
        self.clear_registers(id);
    }

    /// INIT: the same, but the APIC ID (and the base MSR, which is not
    /// here) is kept. SDM Vol. 3A 11.4.7.3.
    pub(crate) fn init(&mut self) {
        self.clear_registers(self.get(reg::ID));
    }

    fn clear_registers(&mut self, id: u32) {
        self.regs = [0; 256];
        self.set(reg::ID, id);
        self.set(reg::VERSION, VERSION);
        for offset in LVTS {
            self.set(offset, lvt::MASKED);
        }
        // KVM's LINT0_REENABLED quirk (on by default): the BSP's LINT0 starts
        // as an unmasked ExtINT entry, the PIC's virtual wire, as firmware
        // would leave it.
        if self.bsp {
            self.set(reg::LVT_LINT0, DeliveryMode::ExtInt.bits() << 8);
        }
        self.set(reg::DFR, 0xffff_ffff);
        self.set(reg::SVR, 0xff);
        if self.x2apic {
            self.set(reg::LDR, x2apic_ldr(self.vcpu_id));
        }
        self.tsc_deadline = 0;
        self.timer = Timer::default();
    }

    fn get(&self, offset: u32) -> u32 {
        self.regs[(offset / 4) as usize]
    }

    fn set(&mut self, offset: u32, value: u32) {
        self.regs[(offset / 4) as usize] = value;
    }

    /// The register page as `KVM_GET_LAPIC` returns it, with the timer's
    /// current count at `now_ns`. Without `KVM_CAP_X2APIC_API`'s
    /// 32-bit IDs, KVM reports an x2APIC's ID in the xAPIC position
    /// (bits 31:24); `x2apic_format` chooses.
    pub(crate) fn state(&self, now_ns: u64, x2apic_format: bool) -> [u32; 256] {
        let mut regs = self.regs;
        regs[(reg::TIMER_CURRENT / 4) as usize] = self.current_count(now_ns);
        if self.x2apic && !x2apic_format {
            regs[(reg::ID / 4) as usize] = self.vcpu_id << 24;
        }
        regs
    }

    /// `KVM_SET_LAPIC`: takes `regs` as the new register page, keeping the
    /// version and, in x2APIC mode, the ID and LDR the vCPU id decides
    /// (KVM refuses a different x2APIC ID with `x2apic_format`, and
    /// ignores it without). Restarts the timer from `now_ns` with the
    /// page's current count ([`Lapic::restore_timer`]), as KVM does.
    /// Returns false if the ID is refused.
    pub(crate) fn set_state(
        &mut self,
        regs: &[u32; 256],
        now_ns: u64,
        x2apic_format: bool,
    ) -> bool {
        if self.x2apic && x2apic_format && regs[(reg::ID / 4) as usize] != self.vcpu_id {
            return false;
        }
        self.regs = *regs;
        self.set(reg::VERSION, VERSION);
        if self.x2apic {
            self.set(reg::ID, self.vcpu_id);
            self.set(reg::LDR, x2apic_ldr(self.vcpu_id));
        }
        self.set(reg::PPR, 0);
        self.update_ppr();
        self.tsc_deadline = 0;
        self.restore_timer(now_ns);
        true
    }

    /// IA32_APIC_BASE changed to `enabled`/`x2apic` (the caller checked the
    /// transition is legal: `x86::regs::check_apic_base` and
    /// [`Lapic::base_transition_ok`]). Entering x2APIC mode makes the ID
    /// the vCPU id and derives the LDR; disabling the APIC resets it, so
    /// re-enabling starts from the reset state (SDM Vol. 3A 11.4.3).
    /// Leaving x2APIC mode for xAPIC mode, which only the VMM may do (a
    /// restore), puts the ID back in xAPIC format, as KVM's ABI has it
    /// (`__kvm_apic_set_base`; Linux's xapic_state_test checks it).
    pub(crate) fn set_base(&mut self, enabled: bool, x2apic: bool) {
        let was = (self.enabled, self.x2apic);
        self.enabled = enabled;
        self.x2apic = x2apic && enabled;
        if !enabled && was.0 {
            self.reset();
        } else if self.x2apic && !was.1 {
            self.set(reg::ID, self.vcpu_id);
            self.set(reg::LDR, x2apic_ldr(self.vcpu_id));
            self.set(reg::DFR, 0);
            self.set(reg::ICR_HIGH, 0);
        } else if enabled && !self.x2apic && was.1 {
            self.set(reg::ID, self.vcpu_id << 24);
        }
    }

    /// Whether a guest may move IA32_APIC_BASE from (`enabled`, `x2apic`)
    /// to the new pair: x2APIC may not go straight to xAPIC, nor
    /// disabled straight to x2APIC. SDM Vol. 3A Figure 11-27.
    pub(crate) fn base_transition_ok(&self, enabled: bool, x2apic: bool) -> bool {
        !matches!(
            ((self.enabled, self.x2apic), (enabled, x2apic)),
            ((true, true), (true, false)) | ((false, _), (true, true))
        )
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn x2apic(&self) -> bool {
        self.x2apic
    }

    /// SVR bit 8: the APIC is software-enabled.
    pub(crate) fn software_enabled(&self) -> bool {
        self.get(reg::SVR) & SVR_ENABLE != 0
    }

    /// The APIC ID as messages name it: 8 bits in xAPIC mode.
    pub(crate) fn apic_id(&self) -> u32 {
        if self.x2apic {
            self.get(reg::ID)
        } else {
            self.get(reg::ID) >> 24
        }
    }

    /// What this APIC knows when it decides whether a message is for it.
    pub(crate) fn receiver(&self) -> Receiver {
        Receiver {
            apic_id: self.apic_id(),
            x2apic: self.x2apic,
            ldr: self.get(reg::LDR),
            dfr_model: self.get(reg::DFR) >> 28,
        }
    }

    /// Whether this APIC takes `dest`: it must be globally enabled, and for
    /// logical destinations software-enabled too (a software-disabled
    /// APIC is in no logical group; KVM's map leaves it out alike).
    pub(crate) fn is_destination(&self, dest: &Destination) -> bool {
        if !self.enabled {
            return false;
        }
        if dest.logical && dest.shorthand == Shorthand::None && !self.software_enabled() {
            return false;
        }
        dest.matches(&self.receiver())
    }

    // ---- Priorities, IRR, ISR, EOI. SDM Vol. 3A 11.8.

    fn highest(&self, base: u32) -> Option<u8> {
        (0..8u32).rev().find_map(|i| {
            let word = self.get(base + 0x10 * i);
            (word != 0).then(|| (i * 32 + 31 - word.leading_zeros()) as u8)
        })
    }

    fn test(&self, base: u32, vector: u8) -> bool {
        let (i, bit) = vector_word(base, vector);
        self.regs[i] & bit != 0
    }

    fn assign(&mut self, base: u32, vector: u8, on: bool) {
        let (i, bit) = vector_word(base, vector);
        if on {
            self.regs[i] |= bit;
        } else {
            self.regs[i] &= !bit;
        }
    }

    /// PPR: the TPR, unless the highest in-service vector's class is at
    /// least the TPR's, in which case that class. SDM Vol. 3A 11.8.3.1.
    fn update_ppr(&mut self) -> u32 {
        let tpr = self.get(reg::TPR) & 0xff;
        let isrv = self.highest(reg::ISR).map_or(0, u32::from);
        let ppr = if tpr & 0xf0 >= isrv & 0xf0 {
            tpr
        } else {
            isrv & 0xf0
        };
        self.set(reg::PPR, ppr);
        ppr
    }

    /// Sets the TPR (a MOV to CR8 writes bits 3:0 of CR8 into TPR bits
    /// 7:4, SDM Vol. 3A 11.8.6). Returns [`Effect::Reevaluate`] if the
    /// priority dropped.
    pub(crate) fn set_tpr(&mut self, tpr: u8) -> Effect {
        let old = self.get(reg::PPR);
        self.set(reg::TPR, u32::from(tpr));
        if self.update_ppr() < old {
            Effect::Reevaluate
        } else {
            Effect::None
        }
    }

    pub(crate) fn tpr(&self) -> u8 {
        (self.get(reg::TPR) & 0xff) as u8
    }

    /// The word KVM's virtual-APIC page (`KVM_SET_VAPIC_ADDR`) shows the
    /// guest: TPR in bits 7:0, the in-service class in bits 15:12, the
    /// highest requested vector in bits 31:24 (`kvm_lapic_sync_to_vapic`).
    pub(crate) fn vapic_word(&self) -> u32 {
        let isr = self.highest(reg::ISR).unwrap_or(0);
        let irr = self.highest(reg::IRR).unwrap_or(0);
        u32::from(self.tpr()) | (u32::from(isr & 0xf0) << 8) | (u32::from(irr) << 24)
    }

    /// Accepts a fixed (or lowest-priority) interrupt into the IRR; a
    /// level-triggered one also sets its TMR bit, an edge one clears it.
    /// A globally or software-disabled APIC takes nothing. Vectors 0-15 are illegal: they set an error instead (SDM Vol. 3A
    /// 11.5.3), here dropped. Returns whether the vector is now pending.
    pub(crate) fn accept_fixed(&mut self, vector: u8, level: bool) -> bool {
        // A software-disabled APIC takes none either (KVM's `apic_enabled`).
        if !self.enabled || !self.software_enabled() || vector < 16 {
            return false;
        }
        self.assign(reg::IRR, vector, true);
        self.assign(reg::TMR, vector, level);
        true
    }

    /// What the run loop looks at before every entry, in one word that
    /// the vCPU's APIC keeps beside its lock ([`Summary`]).
    pub(crate) fn summary(&self) -> Summary {
        Summary {
            requests: self.highest(reg::IRR).is_some(),
            accepts_pic: self.accepts_pic_interrupts(),
            tpr: self.tpr(),
        }
    }

    /// The vector the APIC would deliver to the processor now: the highest
    /// in IRR whose priority class is above the PPR's. SDM Vol. 3A
    /// 11.8.3.
    pub(crate) fn pending(&self) -> Option<u8> {
        if !self.enabled {
            return None;
        }
        let irr = self.highest(reg::IRR)?;
        (u32::from(irr) & 0xf0 > self.get(reg::PPR) & 0xf0).then_some(irr)
    }

    /// The processor takes `vector` (the INTA cycle): IRR to ISR, PPR up.
    pub(crate) fn acknowledge(&mut self, vector: u8) {
        self.assign(reg::IRR, vector, false);
        self.assign(reg::ISR, vector, true);
        self.update_ppr();
    }

    /// Whether `vector` is pending in IRR (for tests and `KVM_GET_LAPIC`).
    pub(crate) fn in_irr(&self, vector: u8) -> bool {
        self.test(reg::IRR, vector)
    }

    pub(crate) fn in_isr(&self, vector: u8) -> bool {
        self.test(reg::ISR, vector)
    }

    /// EOI: the highest in-service vector is done. A level-triggered one
    /// is reported for the IOAPIC's EOI broadcast. SDM Vol. 3A 11.8.5.
    fn eoi(&mut self) -> Effect {
        let Some(vector) = self.highest(reg::ISR) else {
            return Effect::None;
        };
        self.assign(reg::ISR, vector, false);
        self.update_ppr();
        if self.test(reg::TMR, vector) {
            Effect::LevelEoi(vector)
        } else {
            Effect::EdgeEoi(vector)
        }
    }

    // ---- Register reads and writes.

    /// Reads the register at `offset` (16-byte aligned) as software sees
    /// it, in either mode; `None` for a register that does not exist or
    /// cannot be read (EOI, SELF_IPI).
    fn read_register(&self, offset: u32, now_ns: u64) -> Option<u32> {
        Some(match offset {
            reg::EOI | reg::SELF_IPI => return None,
            reg::TIMER_CURRENT => self.current_count(now_ns),
            reg::APR | reg::RRD => 0,
            reg::ID
            | reg::VERSION
            | reg::TPR
            | reg::PPR
            | reg::LDR
            | reg::DFR
            | reg::SVR
            | reg::ESR
            | reg::ICR_LOW
            | reg::ICR_HIGH
            | reg::TIMER_INITIAL
            | reg::TIMER_DIVIDE => self.get(offset),
            o if (reg::ISR..reg::ESR).contains(&o) => self.get(offset),
            o if LVTS.contains(&o) => self.get(offset),
            _ => return None,
        })
    }

    /// A read of the xAPIC page at `offset` (0..0x1000), `len` bytes. The
    /// registers are 32 bits at 16-byte aligned offsets; a read within
    /// them returns their bytes, anything else reads 0 (SDM Vol. 3A
    /// 11.4.1: accesses to reserved offsets are undefined; KVM returns
    /// 0). In x2APIC mode the page is not decoded: 0.
    pub(crate) fn mmio_read(&self, offset: u64, len: usize, now_ns: u64) -> u64 {
        let within = (offset & 0xf) as usize;
        if self.x2apic || !self.enabled || offset >= 0x1000 || within + len > 4 {
            return 0;
        }
        let value = self
            .read_register((offset & !0xf) as u32, now_ns)
            .unwrap_or(0);
        let bytes = value.to_le_bytes();
        let mut out = [0u8; 8];
        out[..len].copy_from_slice(&bytes[within..within + len]);
        u64::from_le_bytes(out)
    }

    /// A write to the xAPIC page: only 32-bit writes to a register's
    /// offset count; others, and writes to read-only or absent registers,
    /// are dropped (SDM Vol. 3A 11.4.1).
    pub(crate) fn mmio_write(
        &mut self,
        offset: u64,
        len: usize,
        value: u32,
        now_ns: u64,
    ) -> Effect {
        if self.x2apic || !self.enabled || len != 4 || offset & 0xf != 0 || offset >= 0x1000 {
            return Effect::None;
        }
        self.write_register(offset as u32, value, now_ns)
            .unwrap_or(Effect::None)
    }

    /// RDMSR of a Hyper-V APIC-access MSR (TLFS "Virtual Processor
    /// Management": `HV_X64_MSR_EOI`, `_ICR`, `_TPR`), register `offset`
    /// ([`reg::EOI`], [`reg::ICR_LOW`] or [`reg::TPR`]), in either mode:
    /// the ICR as one 64-bit value, the TPR; EOI is write-only (#GP). KVM's
    /// `kvm_lapic_msr_read`.
    pub(crate) fn hv_msr_read(&self, offset: u32, now_ns: u64) -> Result<u64, Gp> {
        match offset {
            reg::ICR_LOW => {
                Ok(u64::from(self.get(reg::ICR_HIGH)) << 32 | u64::from(self.get(reg::ICR_LOW)))
            }
            reg::TPR => self
                .read_register(reg::TPR, now_ns)
                .map(u64::from)
                .ok_or(Gp),
            _ => Err(Gp),
        }
    }

    /// WRMSR of a Hyper-V APIC-access MSR, in either mode: the ICR as one
    /// 64-bit value (its high half the destination in this mode's format,
    /// the x2APIC ICR's reserved bits #GP in both modes, as KVM's
    /// `kvm_x2apic_icr_write`), sending the IPI; the TPR and EOI take 32
    /// bits (set bits above are #GP), and an EOI's value is ignored. KVM's
    /// `kvm_lapic_msr_write`.
    pub(crate) fn hv_msr_write(
        &mut self,
        offset: u32,
        value: u64,
        now_ns: u64,
    ) -> Result<Effect, Gp> {
        match offset {
            reg::ICR_LOW if value as u32 & icr::X2APIC_RESERVED == 0 => {
                self.set(reg::ICR_HIGH, (value >> 32) as u32);
                self.write_register(reg::ICR_LOW, value as u32, now_ns)
            }
            reg::EOI | reg::TPR if value >> 32 == 0 => {
                self.write_register(offset, value as u32, now_ns)
            }
            _ => Err(Gp),
        }
    }

    /// RDMSR of an x2APIC register (0x800-0x8ff). SDM Vol. 3A 11.12.1.2:
    /// #GP unless in x2APIC mode, for write-only and absent registers, and
    /// for the xAPIC-only DFR, ICR high half and APR. The ICR reads as one
    /// 64-bit register.
    pub(crate) fn msr_read(&self, msr: u32, now_ns: u64) -> Result<u64, Gp> {
        let offset = self.x2apic_offset(msr)?;
        match offset {
            reg::DFR | reg::ICR_HIGH | reg::APR | reg::RRD => Err(Gp),
            reg::ICR_LOW => {
                Ok(u64::from(self.get(reg::ICR_HIGH)) << 32 | u64::from(self.get(reg::ICR_LOW)))
            }
            _ => self.read_register(offset, now_ns).map(u64::from).ok_or(Gp),
        }
    }

    /// WRMSR of an x2APIC register. #GP for read-only and absent
    /// registers, reserved bits in bits 63:32 (all but the ICR), a
    /// non-zero EOI or ESR write, and reserved ICR and SELF_IPI bits.
    pub(crate) fn msr_write(&mut self, msr: u32, value: u64, now_ns: u64) -> Result<Effect, Gp> {
        let offset = self.x2apic_offset(msr)?;
        if offset == reg::ICR_LOW {
            if value as u32 & icr::X2APIC_RESERVED != 0 {
                return Err(Gp);
            }
            self.set(reg::ICR_HIGH, (value >> 32) as u32);
            return self.write_register(reg::ICR_LOW, value as u32, now_ns);
        }
        if value >> 32 != 0 {
            return Err(Gp);
        }
        let value = value as u32;
        match offset {
            reg::ID | reg::LDR | reg::DFR | reg::ICR_HIGH | reg::APR | reg::RRD => Err(Gp),
            reg::EOI | reg::ESR if value != 0 => Err(Gp),
            reg::SELF_IPI => {
                if value & !0xff != 0 {
                    return Err(Gp);
                }
                Ok(Effect::Ipi(Message {
                    vector: value as u8,
                    mode: DeliveryMode::Fixed,
                    level: false,
                    assert: true,
                    dest: Destination {
                        id: 0,
                        x2apic_format: true,
                        logical: false,
                        shorthand: Shorthand::SelfOnly,
                        source: Some(self.apic_id()),
                        x2apic_broadcast_quirk: false,
                    },
                }))
            }
            _ => self.write_register(offset, value, now_ns),
        }
    }

    fn x2apic_offset(&self, msr: u32) -> Result<u32, Gp> {
        if !self.x2apic || !(X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr) {
            return Err(Gp);
        }
        Ok((msr - X2APIC_MSR_FIRST) << 4)
    }

    /// The common write path; `Err` for a register that cannot be
    /// written (the MMIO path ignores it, the MSR path raises #GP).
    fn write_register(&mut self, offset: u32, value: u32, now_ns: u64) -> Result<Effect, Gp> {
        match offset {
            reg::ID if !self.x2apic => {
                // Bits 31:24 hold the xAPIC ID. KVM lets software change it.
                self.set(reg::ID, value & 0xff00_0000);
                Ok(Effect::None)
            }
            reg::TPR => Ok(self.set_tpr((value & 0xff) as u8)),
            reg::EOI => Ok(self.eoi()),
            reg::LDR if !self.x2apic => {
                self.set(reg::LDR, value & 0xff00_0000);
                Ok(Effect::None)
            }
            reg::DFR if !self.x2apic => {
                self.set(reg::DFR, value | 0x0fff_ffff);
                Ok(Effect::None)
            }
            reg::SVR => {
                self.set(reg::SVR, value & SVR_WRITABLE);
                if value & SVR_ENABLE == 0 {
                    // Software-disabling masks every LVT entry. SDM Vol. 3A 11.4.7.2.
                    for o in LVTS {
                        self.set(o, self.get(o) | lvt::MASKED);
                    }
                }
                Ok(Effect::Reevaluate)
            }
            reg::ESR => Ok(Effect::None),
            reg::ICR_LOW => {
                // The register keeps what was written, reserved bits too,
                // but the delivery status, which always reads idle: KVM's
                // behaviour, which Linux's `xapic_state_test` checks (the
                // message sent uses only the defined fields).
                let value = value & !icr::DELIVERY_STATUS;
                self.set(reg::ICR_LOW, value);
                Ok(self.send_ipi(value, self.get(reg::ICR_HIGH)))
            }
            reg::ICR_HIGH if !self.x2apic => {
                self.set(reg::ICR_HIGH, value & 0xff00_0000);
                Ok(Effect::None)
            }
            reg::LVT_TIMER => Ok(self.write_lvt_timer(value)),
            o if LVTS.contains(&o) => {
                let mut value = value & lvt_writable(o, false);
                if !self.software_enabled() {
                    value |= lvt::MASKED;
                }
                // LINT0/LINT1's remote IRR is the APIC's, not software's.
                let keep = self.get(o) & lvt::REMOTE_IRR;
                self.set(o, value | keep);
                Ok(Effect::None)
            }
            reg::TIMER_INITIAL => {
                if self.timer_mode() == TimerMode::TscDeadline {
                    return Ok(Effect::None);
                }
                self.set(reg::TIMER_INITIAL, value);
                self.start_timer(now_ns);
                Ok(Effect::TimerChanged)
            }
            reg::TIMER_DIVIDE => {
                // Keep the remaining time in counts, at the new rate. KVM alike.
                let remaining = self.current_count(now_ns);
                self.set(reg::TIMER_DIVIDE, value & 0xb);
                if self.timer.deadline_ns.is_some() && self.timer_mode() != TimerMode::TscDeadline {
                    self.rearm_counts(remaining.into(), now_ns);
                    return Ok(Effect::TimerChanged);
                }
                Ok(Effect::None)
            }
            _ => Err(Gp),
        }
    }

    /// Decodes the ICR into the IPI it sends. SDM Vol. 3A 11.6.1. INIT
    /// de-asserts (level 0, level-triggered INIT) go out as messages the
    /// receivers ignore.
    fn send_ipi(&self, low: u32, high: u32) -> Effect {
        let Some(mode) = DeliveryMode::from_bits(low >> 8) else {
            return Effect::None;
        };
        let shorthand = match (low >> icr::SHORTHAND_SHIFT) & 3 {
            0 => Shorthand::None,
            1 => Shorthand::SelfOnly,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        };
        Effect::Ipi(Message {
            vector: (low & 0xff) as u8,
            mode,
            level: low & icr::TRIGGER_LEVEL != 0,
            assert: low & icr::LEVEL_ASSERT != 0 || low & icr::TRIGGER_LEVEL == 0,
            dest: Destination {
                id: if self.x2apic { high } else { high >> 24 },
                x2apic_format: self.x2apic,
                logical: low & icr::LOGICAL != 0,
                shorthand,
                source: Some(self.apic_id()),
                x2apic_broadcast_quirk: false,
            },
        })
    }

    // ---- LVT entries as interrupt sources.

    /// LINT0 or LINT1 (`pin` 0 or 1) was asserted: the message its LVT
    /// entry programs for this APIC, or `None` if the entry is masked.
    /// Used for the PIC's INTR on LINT0 (ExtINT) and NMI on LINT1.
    pub(crate) fn lint(&self, pin: u8) -> Option<DeliveryMode> {
        let entry = self.get(if pin == 0 {
            reg::LVT_LINT0
        } else {
            reg::LVT_LINT1
        });
        if !self.enabled || entry & lvt::MASKED != 0 {
            return None;
        }
        DeliveryMode::from_bits(entry >> 8)
    }

    /// The LINT0 entry accepts ExtINT interrupts from the PIC: the way a
    /// virtual wire is set up (SDM Vol. 3A 11.5.1, MP spec 3.6.2.2). With
    /// the APIC globally disabled, INTR goes to the processor directly.
    pub(crate) fn accepts_pic_interrupts(&self) -> bool {
        !self.enabled || self.lint(0) == Some(DeliveryMode::ExtInt)
    }

    // ---- The timer. SDM Vol. 3A 11.5.4.

    pub(crate) fn timer_mode(&self) -> TimerMode {
        match self.get(reg::LVT_TIMER) & lvt::TIMER_MODE {
            lvt::TIMER_PERIODIC => TimerMode::Periodic,
            lvt::TIMER_TSC_DEADLINE if self.tsc_deadline_offered => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    /// The divide configuration as a divisor: bits 3,1,0 of TDCR encode
    /// 2, 4, ..., 128 and 1 (0b111). SDM Vol. 3A Figure 11-10.
    pub(crate) fn divisor(&self) -> u64 {
        let v = self.get(reg::TIMER_DIVIDE);
        let code = (v & 3) | ((v & 8) >> 1);
        1 << ((code + 1) & 7)
    }

    /// Sets the bus cycle (a new vCPU's, from its VM; [`bus_cycle_ns_valid`]
    /// must hold).
    pub(crate) fn set_bus_cycle_ns(&mut self, ns: u64) {
        self.bus_cycle_ns = ns;
    }

    /// How long one count of the timer lasts, in ns: the divisor's bus
    /// cycles (at least 1 ns; [`bus_cycle_ns_valid`] keeps it from
    /// saturating).
    fn ns_per_count(&self) -> u64 {
        self.divisor().saturating_mul(self.bus_cycle_ns).max(1)
    }

    fn write_lvt_timer(&mut self, value: u32) -> Effect {
        let old_mode = self.timer_mode();
        let mut value = value & lvt_writable(reg::LVT_TIMER, self.tsc_deadline_offered);
        if !self.software_enabled() {
            value |= lvt::MASKED;
        }
        self.set(reg::LVT_TIMER, value);
        if self.timer_mode() != old_mode {
            // A mode change stops the timer. KVM: apic_update_lvtt.
            self.set(reg::TIMER_INITIAL, 0);
            self.tsc_deadline = 0;
            self.timer = Timer::default();
            return Effect::TimerChanged;
        }
        Effect::None
    }

    /// Starts the counter from the initial count at `now_ns` (a write of
    /// TMICT; 0 stops it).
    fn start_timer(&mut self, now_ns: u64) {
        let initial = u64::from(self.get(reg::TIMER_INITIAL));
        self.timer = Timer::default();
        if initial == 0 {
            return;
        }
        self.rearm_counts(initial, now_ns);
    }

    /// Starts the timer of a page `KVM_SET_LAPIC` gave where its current
    /// count (TMCCT) says, as KVM's `set_target_expiration`: a count above
    /// the initial one is the initial one, and 0 is a one-shot due at once
    /// or a periodic timer's whole period. The TSC-deadline mode waits for
    /// its MSR.
    fn restore_timer(&mut self, now_ns: u64) {
        let initial = u64::from(self.get(reg::TIMER_INITIAL));
        self.timer = Timer::default();
        if initial == 0 || self.timer_mode() == TimerMode::TscDeadline {
            return;
        }
        let counts = match u64::from(self.get(reg::TIMER_CURRENT)) {
            0 if self.timer_mode() == TimerMode::Periodic => initial,
            current => current.min(initial),
        };
        self.rearm_counts(counts, now_ns);
    }

    /// Arms the timer to fire after `counts` at the current divisor; a
    /// periodic timer's period is the initial count, at least
    /// [`MIN_PERIOD_NS`].
    fn rearm_counts(&mut self, counts: u64, now_ns: u64) {
        let count_ns = self.ns_per_count();
        let mut period = u64::from(self.get(reg::TIMER_INITIAL)).saturating_mul(count_ns);
        let mut first = counts.saturating_mul(count_ns);
        if self.timer_mode() == TimerMode::Periodic {
            period = period.max(MIN_PERIOD_NS);
            first = first.max(MIN_PERIOD_NS);
        } else {
            period = 0;
        }
        self.timer = Timer {
            start_ns: now_ns,
            deadline_ns: Some(now_ns.saturating_add(first)),
            period_ns: period,
        };
    }

    /// The current count (TMCCT) at `now_ns`: counts down from the
    /// initial count at the bus clock / divisor; 0 once a one-shot timer expired,
    /// and always 0 in TSC-deadline mode.
    pub(crate) fn current_count(&self, now_ns: u64) -> u32 {
        let Some(deadline) = self.timer.deadline_ns else {
            return 0;
        };
        if self.timer_mode() == TimerMode::TscDeadline || now_ns >= deadline {
            return 0;
        }
        let counts = (deadline - now_ns).checked_div(self.ns_per_count());
        counts.unwrap_or(0).min(u64::from(u32::MAX)) as u32
    }

    /// The period of a running periodic timer, in ns.
    pub(crate) fn timer_period_ns(&self) -> Option<u64> {
        (self.timer.deadline_ns.is_some() && self.timer.period_ns != 0)
            .then_some(self.timer.period_ns)
    }

    /// When the host timer must fire next (host ns), if the timer runs.
    pub(crate) fn timer_deadline(&self) -> Option<u64> {
        self.timer.deadline_ns
    }

    /// The host timer fired at `now_ns`. If the timer was due, its LVT
    /// entry's vector becomes pending (unless masked) and a periodic timer
    /// moves to its next period (skipping periods the host missed, as the
    /// count would have). Returns whether an interrupt was accepted.
    pub(crate) fn timer_expired(&mut self, now_ns: u64) -> bool {
        let Some(deadline) = self.timer.deadline_ns else {
            return false;
        };
        if now_ns < deadline {
            return false;
        }
        if self.timer_mode() == TimerMode::Periodic && self.timer.period_ns != 0 {
            let late = now_ns - deadline;
            let next = deadline + (late / self.timer.period_ns + 1) * self.timer.period_ns;
            self.timer.start_ns = next - self.timer.period_ns;
            self.timer.deadline_ns = Some(next);
        } else {
            self.timer.deadline_ns = None;
            if self.timer_mode() == TimerMode::TscDeadline {
                self.tsc_deadline = 0;
            }
        }
        let entry = self.get(reg::LVT_TIMER);
        if entry & lvt::MASKED != 0 {
            return false;
        }
        self.accept_fixed((entry & lvt::VECTOR) as u8, false)
    }

    /// IA32_TSC_DEADLINE as read: the armed deadline, 0 outside
    /// TSC-deadline mode (SDM Vol. 3A 11.5.4.1).
    pub(crate) fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TimerMode::TscDeadline {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// A write of IA32_TSC_DEADLINE: in TSC-deadline mode arms the timer
    /// for guest TSC `value`, which the caller converted to host time
    /// `deadline_ns` (a deadline in the past fires at once); 0 disarms.
    /// Ignored in the other modes.
    pub(crate) fn set_tsc_deadline(&mut self, value: u64, deadline_ns: u64) -> Effect {
        if self.timer_mode() != TimerMode::TscDeadline {
            return Effect::None;
        }
        self.tsc_deadline = value;
        self.timer = Timer {
            start_ns: 0,
            deadline_ns: (value != 0).then_some(deadline_ns),
            period_ns: 0,
        };
        Effect::TimerChanged
    }
}

/// The register page as `struct kvm_lapic_state`'s 1024 bytes
/// (little-endian words).
pub(crate) fn regs_to_bytes(regs: &[u32; 256]) -> [u8; 1024] {
    let mut b = [0u8; 1024];
    for (i, r) in regs.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&r.to_le_bytes());
    }
    b
}

/// The register page from `struct kvm_lapic_state`'s bytes.
pub(crate) fn regs_from_bytes(b: &[u8; 1024]) -> [u32; 256] {
    let mut regs = [0u32; 256];
    for (i, r) in regs.iter_mut().enumerate() {
        *r = u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    }
    regs
}

/// The x2APIC logical ID, derived from the x2APIC ID: cluster (ID bits
/// 19:4) in bits 31:16, one bit for ID bits 3:0 in bits 15:0. SDM Vol. 3A
/// 11.12.10.2.
pub(crate) fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xf))
}

/// Converts a guest TSC deadline into host nanoseconds: `now_ns` is the
/// host time at which the guest's TSC read `tsc_now`, and the guest's TSC
/// runs at `tsc_khz`. A deadline already passed gives `now_ns`.
pub(crate) fn tsc_deadline_ns(deadline: u64, tsc_now: u64, now_ns: u64, tsc_khz: u32) -> u64 {
    if deadline <= tsc_now || tsc_khz == 0 {
        return now_ns;
    }
    // ticks * 10^6 / kHz, in two parts so that nothing overflows (and no
    // 128-bit division, which the kernel does not link).
    let (ticks, khz) = (deadline - tsc_now, u64::from(tsc_khz));
    let ns = (ticks / khz)
        .saturating_mul(1_000_000)
        .saturating_add((ticks % khz) * 1_000_000 / khz);
    now_ns.saturating_add(ns)
}
