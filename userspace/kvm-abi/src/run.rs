//! The shared `kvm_run` page: why KVM_RUN returned, and the requests and
//! data userspace passes back through it.
//!
//! [`RunMapping::exit`] decodes `exit_reason` and its union member into a
//! [`VcpuExit`] that borrows the mapping (the shape of rust-vmm's
//! `kvm-ioctls`), so the port-I/O data or the MMIO read value can be written
//! back before the next KVM_RUN. Every access to the page is a volatile
//! access of one field through a raw pointer: the kernel writes the page
//! during KVM_RUN (possibly from another thread's KVM_RUN on the same vCPU),
//! so no Rust reference to it is ever made.

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::mem::RunMapping;
use crate::sys::{
    KVM_EXIT_DEBUG, KVM_EXIT_EXCEPTION, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_EXIT_IOAPIC_EOI,
    KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KVM_EXIT_UNKNOWN, kvm_run,
    kvm_sync_regs,
};

/// `read_field!(run, a.b)`: a volatile read of one field of the mapped
/// `kvm_run` at `run`, by value.
macro_rules! read_field {
    ($run:expr, $($field:ident).+) => {{
        let run: *mut kvm_run = $run;
        // SAFETY: `run` points to the whole mapped kvm_run (RunMapping
        // invariant); the field's address is computed without a reference.
        let field = unsafe { &raw const (*run).$($field).+ };
        // SAFETY: the field is inside the readable mapping and aligned (the
        // page is, and kvm_run has its C layout); it is plain integers,
        // valid for any bits; volatile because the kernel shares it.
        unsafe { field.read_volatile() }
    }};
}

/// `write_field!(run, a.b, value)`: a volatile write of one field of the
/// mapped `kvm_run` at `run`.
macro_rules! write_field {
    ($run:expr, $($field:ident).+, $value:expr) => {{
        let run: *mut kvm_run = $run;
        // SAFETY: as in `read_field!`.
        let field = unsafe { &raw mut (*run).$($field).+ };
        // SAFETY: as in `read_field!`; the mapping is writable.
        unsafe { field.write_volatile($value) }
    }};
}

/// The direction of a port-I/O exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDirection {
    /// `IN`/`INS`: userspace supplies the data (`KVM_EXIT_IO_IN`).
    In,
    /// `OUT`/`OUTS`: the guest's data is in the page (`KVM_EXIT_IO_OUT`).
    Out,
}

/// Why KVM_RUN returned, decoded from `kvm_run.exit_reason` and the union
/// member that goes with it.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    /// `KVM_EXIT_IO`: the guest executed `IN`, `OUT`, `INS` or `OUTS`.
    Io(IoExit<'a>),
    /// `KVM_EXIT_MMIO`: the guest accessed a guest-physical address that no
    /// memory slot covers.
    Mmio(MmioExit<'a>),
    /// `KVM_EXIT_HLT`: the guest executed `HLT` (no in-kernel APIC).
    Hlt,
    /// `KVM_EXIT_SHUTDOWN`: the guest triple-faulted.
    Shutdown,
    /// `KVM_EXIT_IRQ_WINDOW_OPEN`: the guest can take an interrupt now
    /// (after `request_interrupt_window`).
    IrqWindowOpen,
    /// `KVM_EXIT_IOAPIC_EOI`: with a split irqchip, the guest EOIed a
    /// level-triggered interrupt of user space's IOAPIC.
    IoapicEoi {
        /// The EOIed vector.
        vector: u8,
    },
    /// `KVM_EXIT_INTR`: a signal interrupted KVM_RUN (which failed with
    /// `EINTR`), or `immediate_exit` was set.
    Intr,
    /// `KVM_EXIT_FAIL_ENTRY`: the hardware refused to enter the guest.
    FailEntry {
        /// The vendor's reason: on SVM the VMCB exit code
        /// (`VMEXIT_INVALID` is -1), on VMX the exit reason.
        hardware_entry_failure_reason: u64,
        /// The host CPU that tried.
        cpu: u32,
    },
    /// `KVM_EXIT_INTERNAL_ERROR`: KVM could not go on (e.g. it cannot
    /// emulate an instruction).
    InternalError {
        /// `KVM_INTERNAL_ERROR_*`.
        suberror: u32,
        /// The `ndata` valid words of `data`.
        data: Vec<u64>,
    },
    /// `KVM_EXIT_EXCEPTION`.
    Exception {
        /// The vector.
        exception: u32,
        /// The error code.
        error_code: u32,
    },
    /// `KVM_EXIT_DEBUG`: a debug event the VMM asked for with
    /// `KVM_SET_GUEST_DEBUG` (a single step, a software breakpoint).
    Debug {
        /// The vector: 1 (#DB) or 3 (#BP).
        exception: u32,
        /// The linear address of the guest's RIP.
        pc: u64,
        /// DR6: why the #DB came (B0-B3, BS...).
        dr6: u64,
        /// DR7.
        dr7: u64,
    },
    /// `KVM_EXIT_UNKNOWN`: an exit the kernel does not know how to report.
    Unknown {
        /// The vendor's exit code.
        hardware_exit_reason: u64,
    },
    /// Any other `KVM_EXIT_*`, undecoded.
    Other(u32),
}

/// A `KVM_EXIT_IO` exit: `count` accesses of `size` bytes to `port`, whose
/// data is `size * count` bytes at `data_offset` in the mapping.
#[derive(Debug)]
pub struct IoExit<'a> {
    run: &'a mut RunMapping,
    /// The direction.
    pub direction: IoDirection,
    /// The access size in bytes: 1, 2 or 4.
    pub size: u8,
    /// The port.
    pub port: u16,
    /// The number of accesses (more than 1 only for `INS`/`OUTS` with `REP`).
    pub count: u32,
    /// Where the data is, in bytes from the start of the mapping.
    pub data_offset: u64,
}

impl IoExit<'_> {
    /// The data's length, `size * count`.
    pub fn len(&self) -> usize {
        usize::from(self.size) * self.count as usize
    }

    /// Whether there is no data (never for an exit KVM produced).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the data: what the guest wrote for `OUT`, or what is in
    /// the page for `IN`.
    pub fn data(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len()];
        self.run.read_bytes(self.data_offset, &mut buf)?;
        Ok(buf)
    }

    /// The data of a single access as a little-endian integer (the value
    /// of `AL`, `AX` or `EAX` for an `OUT`).
    pub fn value(&self) -> Result<u32> {
        let mut buf = [0u8; 4];
        let n = usize::from(self.size).min(4);
        self.run.read_bytes(self.data_offset, &mut buf[..n])?;
        Ok(u32::from_le_bytes(buf))
    }

    /// Supplies the data of an `IN`: exactly `size * count` bytes, which
    /// the guest receives on the next KVM_RUN. `EINVAL` for an `OUT` or a
    /// wrong length.
    pub fn set_data(&mut self, data: &[u8]) -> Result<()> {
        if self.direction != IoDirection::In || data.len() != self.len() {
            return Err(Error::new("write kvm_run I/O data", Errno::EINVAL));
        }
        self.run.write_bytes(self.data_offset, data)
    }

    /// Supplies the value of a single `IN` (its low `size` bytes).
    pub fn set_value(&mut self, value: u32) -> Result<()> {
        let n = usize::from(self.size).min(4);
        if self.count != 1 {
            return Err(Error::new("write kvm_run I/O data", Errno::EINVAL));
        }
        self.set_data(&value.to_le_bytes()[..n])
    }
}

/// A `KVM_EXIT_MMIO` exit: an access of `len` bytes at `phys_addr`.
#[derive(Debug)]
pub struct MmioExit<'a> {
    run: &'a mut RunMapping,
    /// The guest-physical address.
    pub phys_addr: u64,
    /// The access size in bytes (1 to 8).
    pub len: u32,
    /// Whether the guest writes (the data is in [`MmioExit::data`]) or
    /// reads (userspace supplies it with [`MmioExit::set_data`]).
    pub is_write: bool,
    /// `kvm_run.mmio.data` as it was at the exit.
    data: [u8; 8],
}

impl MmioExit<'_> {
    /// The bytes the guest writes (the first `len` of `mmio.data`).
    pub fn data(&self) -> &[u8] {
        &self.data[..(self.len as usize).min(8)]
    }

    /// The written bytes as a little-endian integer.
    pub fn value(&self) -> u64 {
        let mut buf = [0u8; 8];
        let d = self.data();
        buf[..d.len()].copy_from_slice(d);
        u64::from_le_bytes(buf)
    }

    /// Supplies the value of a read: exactly `len` bytes, which the guest
    /// receives on the next KVM_RUN. `EINVAL` for a write or a wrong length.
    pub fn set_data(&mut self, data: &[u8]) -> Result<()> {
        if self.is_write || data.len() != (self.len as usize).min(8) {
            return Err(Error::new("write kvm_run MMIO data", Errno::EINVAL));
        }
        self.run.set_mmio_data(data)
    }

    /// Supplies the low `len` bytes of `value` as the value of a read.
    pub fn set_value(&mut self, value: u64) -> Result<()> {
        let n = (self.len as usize).min(8);
        self.set_data(&value.to_le_bytes()[..n])
    }
}

impl RunMapping {
    /// The raw pointer to the mapped `kvm_run`.
    fn run_ptr(&self) -> *mut kvm_run {
        self.mapping().as_ptr().cast::<kvm_run>()
    }

    /// `kvm_run.exit_reason` (`KVM_EXIT_*`).
    pub fn exit_reason(&self) -> u32 {
        read_field!(self.run_ptr(), exit_reason)
    }

    /// `kvm_run.flags` (`KVM_RUN_X86_SMM`: the vCPU is in system
    /// management mode).
    pub fn flags(&self) -> u16 {
        read_field!(self.run_ptr(), flags)
    }

    /// `kvm_run.ready_for_interrupt_injection`: whether KVM_INTERRUPT would
    /// be delivered at once on the next KVM_RUN.
    pub fn ready_for_interrupt_injection(&self) -> bool {
        read_field!(self.run_ptr(), ready_for_interrupt_injection) != 0
    }

    /// `kvm_run.if_flag`: the guest's RFLAGS.IF at the exit.
    pub fn if_flag(&self) -> bool {
        read_field!(self.run_ptr(), if_flag) != 0
    }

    /// `kvm_run.immediate_exit`.
    pub fn immediate_exit(&self) -> bool {
        read_field!(self.run_ptr(), immediate_exit) != 0
    }

    /// Sets `kvm_run.immediate_exit`: KVM_RUN then returns `EINTR` at once,
    /// without entering the guest.
    pub fn set_immediate_exit(&mut self, on: bool) {
        write_field!(self.run_ptr(), immediate_exit, u8::from(on));
    }

    /// `kvm_run.request_interrupt_window`.
    pub fn request_interrupt_window(&self) -> bool {
        read_field!(self.run_ptr(), request_interrupt_window) != 0
    }

    /// Sets `kvm_run.request_interrupt_window`: KVM_RUN returns with
    /// `KVM_EXIT_IRQ_WINDOW_OPEN` as soon as the guest can take an interrupt.
    pub fn set_request_interrupt_window(&mut self, on: bool) {
        write_field!(self.run_ptr(), request_interrupt_window, u8::from(on));
    }

    /// `kvm_run.msr` after `KVM_EXIT_X86_RDMSR` or `KVM_EXIT_X86_WRMSR`:
    /// (reason, MSR index, the value written).
    pub fn msr(&self) -> (u32, u32, u64) {
        let m = read_field!(self.run_ptr(), __bindgen_anon_1.msr);
        (m.reason, m.index, m.data)
    }

    /// Answers such an exit for the next KVM_RUN: `error` makes it #GP for
    /// the guest, else a read gets `data`.
    pub fn set_msr_reply(&mut self, error: bool, data: u64) {
        write_field!(self.run_ptr(), __bindgen_anon_1.msr.error, u8::from(error));
        write_field!(self.run_ptr(), __bindgen_anon_1.msr.data, data);
    }

    /// `kvm_run.hyperv` after `KVM_EXIT_HYPERV`: for a hypercall
    /// (`KVM_EXIT_HYPERV_HCALL`), its input value and its two parameters
    /// (the input and output guest-physical addresses); `None` for another
    /// type.
    pub fn hyperv_hcall(&self) -> Option<(u64, [u64; 2])> {
        let kind = read_field!(self.run_ptr(), __bindgen_anon_1.hyperv.type_);
        if kind != crate::sys::KVM_EXIT_HYPERV_HCALL {
            return None;
        }
        let call = read_field!(self.run_ptr(), __bindgen_anon_1.hyperv.u.hcall);
        Some((call.input, call.params))
    }

    /// Answers a hypercall exit for the next KVM_RUN: the status the guest
    /// gets.
    pub fn set_hyperv_result(&mut self, result: u64) {
        write_field!(
            self.run_ptr(),
            __bindgen_anon_1.hyperv.u.hcall.result,
            result
        );
    }

    /// `kvm_run.kvm_valid_regs`: the register sets (`KVM_SYNC_X86_*`) KVM_RUN
    /// stores in `kvm_run.s.regs` when it returns (`KVM_CAP_SYNC_REGS`).
    pub fn valid_regs(&self) -> u64 {
        read_field!(self.run_ptr(), kvm_valid_regs)
    }

    /// Sets `kvm_run.kvm_valid_regs`.
    pub fn set_valid_regs(&mut self, sets: u64) {
        write_field!(self.run_ptr(), kvm_valid_regs, sets);
    }

    /// `kvm_run.kvm_dirty_regs`: the sets KVM_RUN loads from `kvm_run.s.regs`
    /// before entering (and clears here once loaded).
    pub fn dirty_regs(&self) -> u64 {
        read_field!(self.run_ptr(), kvm_dirty_regs)
    }

    /// Sets `kvm_run.kvm_dirty_regs`.
    pub fn set_dirty_regs(&mut self, sets: u64) {
        write_field!(self.run_ptr(), kvm_dirty_regs, sets);
    }

    /// `kvm_run.s.regs`: registers, special registers and events.
    pub fn sync_regs(&self) -> kvm_sync_regs {
        read_field!(self.run_ptr(), s.regs)
    }

    /// Writes `kvm_run.s.regs`.
    pub fn set_sync_regs(&mut self, regs: &kvm_sync_regs) {
        write_field!(self.run_ptr(), s.regs, *regs);
    }

    /// Reads `buf.len()` bytes at `offset` from the start of the mapping;
    /// `EFAULT` if they are not all inside it.
    fn read_bytes(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let base = self.bytes_at(offset, buf.len(), "read kvm_run data")?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `bytes_at` checked that `buf.len()` bytes from `base`
            // are inside the mapping; volatile, as the kernel shares them.
            *b = unsafe { base.wrapping_add(i).read_volatile() };
        }
        Ok(())
    }

    /// Writes `data` at `offset` from the start of the mapping; `EFAULT`
    /// if it does not fit inside it.
    fn write_bytes(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let base = self.bytes_at(offset, data.len(), "write kvm_run data")?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as in `read_bytes`; the mapping is writable.
            unsafe { base.wrapping_add(i).write_volatile(*b) };
        }
        Ok(())
    }

    /// The address of `len` bytes at `offset`, checked to be in the mapping.
    fn bytes_at(&self, offset: u64, len: usize, op: &'static str) -> Result<*mut u8> {
        let end = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(len).map(|e| (o, e)));
        match end {
            Some((start, end)) if end <= self.mapping().len() => {
                Ok(self.mapping().as_ptr().cast::<u8>().wrapping_add(start))
            }
            _ => Err(Error::new(op, Errno::EFAULT)),
        }
    }

    /// Writes the first bytes of `kvm_run.mmio.data`.
    fn set_mmio_data(&mut self, data: &[u8]) -> Result<()> {
        let run = self.run_ptr();
        // SAFETY: `run` points to the whole mapped kvm_run (type invariant);
        // the field's address is computed without making a reference.
        let field = unsafe { &raw mut (*run).__bindgen_anon_1.mmio.data };
        if data.len() > 8 {
            return Err(Error::new("write kvm_run MMIO data", Errno::EINVAL));
        }
        let base = field.cast::<u8>();
        for (i, b) in data.iter().enumerate() {
            // SAFETY: `i < 8`, inside the 8-byte `data` array of the mapped
            // kvm_run; volatile, as the kernel shares it.
            unsafe { base.wrapping_add(i).write_volatile(*b) };
        }
        Ok(())
    }

    /// Decodes the last exit. It borrows the mapping, so that the data of
    /// an `IN` or an MMIO read can be supplied through it.
    pub fn exit(&mut self) -> VcpuExit<'_> {
        let reason = self.exit_reason();
        let run = self.run_ptr();
        match reason {
            KVM_EXIT_IO => {
                let io = read_field!(run, __bindgen_anon_1.io);
                let direction = match u32::from(io.direction) {
                    KVM_EXIT_IO_IN => IoDirection::In,
                    KVM_EXIT_IO_OUT => IoDirection::Out,
                    _ => return VcpuExit::Other(reason),
                };
                VcpuExit::Io(IoExit {
                    run: self,
                    direction,
                    size: io.size,
                    port: io.port,
                    count: io.count,
                    data_offset: io.data_offset,
                })
            }
            KVM_EXIT_MMIO => {
                let mmio = read_field!(run, __bindgen_anon_1.mmio);
                VcpuExit::Mmio(MmioExit {
                    run: self,
                    phys_addr: mmio.phys_addr,
                    len: mmio.len,
                    is_write: mmio.is_write != 0,
                    data: mmio.data,
                })
            }
            KVM_EXIT_HLT => VcpuExit::Hlt,
            KVM_EXIT_SHUTDOWN => VcpuExit::Shutdown,
            KVM_EXIT_IRQ_WINDOW_OPEN => VcpuExit::IrqWindowOpen,
            KVM_EXIT_IOAPIC_EOI => VcpuExit::IoapicEoi {
                vector: read_field!(run, __bindgen_anon_1.eoi).vector,
            },
            KVM_EXIT_INTR => VcpuExit::Intr,
            KVM_EXIT_FAIL_ENTRY => {
                let f = read_field!(run, __bindgen_anon_1.fail_entry);
                VcpuExit::FailEntry {
                    hardware_entry_failure_reason: f.hardware_entry_failure_reason,
                    cpu: f.cpu,
                }
            }
            KVM_EXIT_INTERNAL_ERROR => {
                let e = read_field!(run, __bindgen_anon_1.internal);
                let n = (e.ndata as usize).min(e.data.len());
                VcpuExit::InternalError {
                    suberror: e.suberror,
                    data: e.data[..n].to_vec(),
                }
            }
            KVM_EXIT_EXCEPTION => {
                let ex = read_field!(run, __bindgen_anon_1.ex);
                VcpuExit::Exception {
                    exception: ex.exception,
                    error_code: ex.error_code,
                }
            }
            KVM_EXIT_DEBUG => {
                let d = read_field!(run, __bindgen_anon_1.debug).arch;
                VcpuExit::Debug {
                    exception: d.exception,
                    pc: d.pc,
                    dr6: d.dr6,
                    dr7: d.dr7,
                }
            }
            KVM_EXIT_UNKNOWN => {
                let hw = read_field!(run, __bindgen_anon_1.hw);
                VcpuExit::Unknown {
                    hardware_exit_reason: hw.hardware_exit_reason,
                }
            }
            other => VcpuExit::Other(other),
        }
    }
}
