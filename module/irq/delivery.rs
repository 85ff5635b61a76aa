// SPDX-License-Identifier: GPL-2.0

//! Interrupt messages: what travels between the interrupt controllers.
//!
//! Every source of an interrupt that reaches a local APIC, an IOAPIC
//! redirection entry, an MSI write, an IPI from another APIC's ICR, or an
//! APIC's own local vector table, produces the same thing: a vector, a
//! delivery mode, a trigger mode and a destination. On real hardware that
//! is a message on the APIC bus (or a memory write on the system bus);
//! here it is a [`Message`], and [`Destination::matches`] is each APIC's
//! decision whether the message is for it. SDM Vol. 3A 11.6 (ICR),
//! 11.6.2 (destinations), 11.11 (MSI format), 11.12.10 (x2APIC logical
//! destinations).
//!
//! Pure logic, unit-tested on the host.

/// How the receiving APIC handles a message (ICR, LVT and redirection
/// entries bits 10:8). SDM Vol. 3A 11.6.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeliveryMode {
    /// The vector, through IRR and ISR.
    Fixed,
    /// The vector, to the one destination APIC with the lowest priority.
    LowestPriority,
    /// System management interrupt: the processor enters SMM
    /// (run/smm.rs).
    Smi,
    /// Non-maskable interrupt; the vector is ignored.
    Nmi,
    /// INIT: the processor goes to its wait-for-SIPI state.
    Init,
    /// Start-up IPI: a processor waiting for SIPI starts at vector << 12.
    StartUp,
    /// External interrupt: the vector comes from the 8259 PIC.
    ExtInt,
}

impl DeliveryMode {
    /// Decodes bits 10:8 of an ICR, LVT entry or redirection entry.
    /// Mode 3 is reserved: `None`.
    pub(crate) fn from_bits(bits: u32) -> Option<Self> {
        Some(match bits & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            6 => Self::StartUp,
            7 => Self::ExtInt,
            _ => return None,
        })
    }

    /// The encoding in bits 10:8.
    pub(crate) fn bits(self) -> u32 {
        match self {
            Self::Fixed => 0,
            Self::LowestPriority => 1,
            Self::Smi => 2,
            Self::Nmi => 4,
            Self::Init => 5,
            Self::StartUp => 6,
            Self::ExtInt => 7,
        }
    }
}

/// The ICR's destination shorthand (bits 19:18). SDM Vol. 3A 11.6.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shorthand {
    /// The destination field decides.
    None,
    /// Only the sender.
    SelfOnly,
    /// Every APIC, the sender included.
    AllIncludingSelf,
    /// Every APIC but the sender.
    AllExcludingSelf,
}

/// Who a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Destination {
    /// The destination field: 8 bits in xAPIC messages (ICR2 bits 31:24,
    /// redirection entry bits 63:56, MSI address bits 19:12), 32 bits in
    /// x2APIC ones.
    pub(crate) id: u32,
    /// The destination is 32 bits wide: an IPI from an APIC in x2APIC
    /// mode, or an MSI with an extended destination. It decides which ID
    /// is the broadcast one.
    pub(crate) x2apic_format: bool,
    /// Logical (true) or physical (false) destination mode.
    pub(crate) logical: bool,
    pub(crate) shorthand: Shorthand,
    /// The APIC ID of the sender, for the shorthands (an IPI); `None` for
    /// messages from an IOAPIC, an MSI or the PIC.
    pub(crate) source: Option<u32>,
    /// An xAPIC-format broadcast (0xff) reaches APICs in x2APIC mode too:
    /// KVM's "broadcast quirk" for IOAPIC and MSI messages, on unless user
    /// space turns it off (`KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`); an
    /// IPI never has it (KVM's `kvm_apic_mda`). Without it, such an APIC
    /// compares 0xff with its own ID.
    pub(crate) x2apic_broadcast_quirk: bool,
}

/// One interrupt message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) vector: u8,
    pub(crate) mode: DeliveryMode,
    /// Level (true) or edge (false) triggered. A level-triggered fixed
    /// interrupt sets the TMR bit, so that its EOI is broadcast to the
    /// IOAPICs (SDM Vol. 3A 11.8.5).
    pub(crate) level: bool,
    /// For INIT: assert (true) or de-assert (false, "INIT level
    /// de-assert", ignored by every APIC since the Pentium 4).
    pub(crate) assert: bool,
    pub(crate) dest: Destination,
}

/// What a receiving APIC knows of itself when it decides whether a
/// message is for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Receiver {
    /// The APIC ID: 8 bits in xAPIC mode, 32 in x2APIC mode.
    pub(crate) apic_id: u32,
    pub(crate) x2apic: bool,
    /// The logical destination register (LDR) as read.
    pub(crate) ldr: u32,
    /// The destination format register's model (bits 31:28): 0xf flat,
    /// 0x0 cluster. Unused in x2APIC mode (always cluster).
    pub(crate) dfr_model: u32,
}

/// The physical broadcast destination in xAPIC messages.
pub(crate) const XAPIC_BROADCAST: u32 = 0xff;
/// The physical broadcast destination in x2APIC messages.
pub(crate) const X2APIC_BROADCAST: u32 = 0xffff_ffff;

impl Destination {
    /// Whether the APIC `to` takes this message. SDM Vol. 3A 11.6.2 and
    /// 11.12.10: physical mode compares IDs; logical mode compares the
    /// LDR, as a flat bit mask (8 processors) or as a cluster and a mask
    /// of 4 (xAPIC) or 16 (x2APIC) processors in it, as the receiver's
    /// mode says. The all-ones ID of the message's width is a broadcast in
    /// both modes.
    pub(crate) fn matches(&self, to: &Receiver) -> bool {
        match self.shorthand {
            Shorthand::SelfOnly => return self.source == Some(to.apic_id),
            Shorthand::AllIncludingSelf => return true,
            Shorthand::AllExcludingSelf => return self.source != Some(to.apic_id),
            Shorthand::None => {}
        }
        let broadcast = if self.x2apic_format {
            X2APIC_BROADCAST
        } else {
            XAPIC_BROADCAST
        };
        if self.id == broadcast && (self.x2apic_format || !to.x2apic || self.x2apic_broadcast_quirk)
        {
            return true;
        }
        if !self.logical {
            return self.id == to.apic_id;
        }
        if to.x2apic {
            // Bits 31:16 name the cluster, 15:0 the processors in it.
            return self.id >> 16 == to.ldr >> 16 && self.id & to.ldr & 0xffff != 0;
        }
        let dest = self.id & 0xff;
        let logical_id = to.ldr >> 24;
        if to.dfr_model == 0xf {
            dest & logical_id != 0
        } else {
            dest >> 4 == logical_id >> 4 && dest & logical_id & 0xf != 0
        }
    }
}

/// An MSI (or an IOAPIC-format interrupt written as one): address and
/// data as the device writes them. SDM Vol. 3A 11.11.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Msi {
    pub(crate) address: u64,
    pub(crate) data: u32,
}

/// The MSI address window: 0xFEEx_xxxx.
const MSI_ADDRESS_MASK: u64 = 0xfff0_0000;
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;

impl Msi {
    /// The message an MSI write sends, or `None` if the address is not
    /// in the interrupt window or the delivery mode is reserved. The
    /// destination is address bits 19:12 (the high address extends it
    /// only in `KVM_CAP_X2APIC_API`'s format, [`Msi::message_in`]; it is
    /// ignored here, as by KVM then); bit 2 selects logical mode; data bits
    /// 7:0 are the vector, 10:8 the delivery mode, 15 the trigger mode. An
    /// MSI is always an assert: KVM's `kvm_set_msi_irq` ignores the level
    /// bit (14), which IOAPICs that write their messages as MSIs (QEMU's,
    /// with a split irqchip) leave clear for level-triggered pins.
    pub(crate) fn message(&self) -> Option<Message> {
        self.message_in(false)
    }

    /// The message in KVM's format for `KVM_X2APIC_API_USE_32BIT_IDS`
    /// (`ids32`): the high address's bits 31:8 are the destination's bits
    /// 31:8 (KVM's `x86_msi_msg_get_destid`), and a destination above 0xff
    /// is an x2APIC one. `None` also for an address whose high bits 7:0
    /// are set then (KVM refuses such an MSI: [`Msi::valid_in`]).
    pub(crate) fn message_in(&self, ids32: bool) -> Option<Message> {
        if self.address & MSI_ADDRESS_MASK != MSI_ADDRESS_BASE || !self.valid_in(ids32) {
            return None;
        }
        let mut dest = ((self.address >> 12) & 0xff) as u32;
        if ids32 {
            dest |= ((self.address >> 32) as u32) & 0xffff_ff00;
        }
        Some(Message {
            vector: (self.data & 0xff) as u8,
            mode: DeliveryMode::from_bits(self.data >> 8)?,
            level: self.data & (1 << 15) != 0,
            assert: true,
            dest: Destination {
                id: dest,
                x2apic_format: dest > 0xff,
                logical: self.address & (1 << 2) != 0,
                shorthand: Shorthand::None,
                source: None,
                x2apic_broadcast_quirk: true,
            },
        })
    }

    /// With 32-bit IDs, the high address's bits 7:0 must be 0 (KVM's
    /// `kvm_msi_route_invalid`); without, the high address is ignored.
    pub(crate) fn valid_in(&self, ids32: bool) -> bool {
        !ids32 || (self.address >> 32) & 0xff == 0
    }
}
