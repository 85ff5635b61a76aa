// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for rkvm's Rust code: kernel services that exist only as static
 * inline functions or macros, which Rust cannot call directly. Each is a
 * thin wrapper; the Rust side (module/sys/) documents how they are used.
 */
#include <linux/anon_inodes.h>
#include <linux/cc_platform.h>
#include <linux/cpuhotplug.h>
#include <linux/debugfs.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/syscore_ops.h>
#include <linux/mm.h>
#include <linux/pagemap.h>
#include <linux/fs.h>
#include <linux/sched/mm.h>
#include <linux/uaccess.h>
#include <linux/sched/signal.h>
#include <linux/sched.h>
#include <asm/fpu/api.h>
#include <asm/msr.h>
#include <asm/io.h>
#include <asm/cpu_entry_area.h>
#include <asm/desc.h>
#include <asm/debugreg.h>
#include <asm/segment.h>
#include <asm/gsseg.h>
#include <asm/special_insns.h>
#include <asm/tsc.h>
#include <asm/apic.h>
#include <asm/cpufeature.h>
#include <asm/mce.h>
#include <asm/nospec-branch.h>
#include <linux/cpu.h>

/* Prototypes, for -Wmissing-prototypes: these are called only from Rust. */
phys_addr_t rkvm_page_to_phys(struct page *page);
int rkvm_cpuhp_setup_multi(const char *name,
			   int (*online)(unsigned int cpu, struct hlist_node *node),
			   int (*offline)(unsigned int cpu, struct hlist_node *node));
int rkvm_cpuhp_add_instance(int state, struct hlist_node *node);
void rkvm_cpuhp_remove_instance(int state, struct hlist_node *node);
void rkvm_cpuhp_remove_multi(int state);
bool rkvm_access_ok(unsigned long addr, unsigned long size);
int rkvm_rdmsr_safe(u32 msr, u64 *value);
int rkvm_wrmsr_safe(u32 msr, u64 value);
unsigned long rkvm_local_irq_save(void);
void rkvm_local_irq_restore(unsigned long flags);
unsigned int rkvm_num_online_cpus(void);
unsigned int rkvm_tsc_khz(void);
bool rkvm_cpu_smt_possible(void);
vm_fault_t rkvm_fault_set_page(struct vm_fault *vmf, struct page *page);
void rkvm_file_set_size(struct file *file, loff_t size);
int rkvm_file_grab_page(struct file *file, pgoff_t index);
void rkvm_file_punch(struct file *file, loff_t start, loff_t end);
struct mm_struct *rkvm_current_mm_grab(void);
struct dentry *rkvm_debugfs_create_file(const char *name, umode_t mode, struct dentry *parent,
					void *data, const struct file_operations *fops);
void rkvm_on_each_cpu(void (*func)(void *info), void *info);
struct syscore *rkvm_syscore_register(int (*suspend)(void *data), void (*resume)(void *data),
				      void (*shutdown)(void *data), void *data);
void rkvm_syscore_unregister(struct syscore *syscore);
bool rkvm_current_mm_is(const struct mm_struct *mm);
void rkvm_mmdrop(struct mm_struct *mm);
phys_addr_t rkvm_virt_to_phys(const void *addr);
long rkvm_pin_user_page(unsigned long uaddr, bool write, struct page **page);
void rkvm_unpin_phys(phys_addr_t pa, unsigned long nr, bool dirty);
int rkvm_account_locked(struct mm_struct *mm, unsigned long pages, bool inc);
void rkvm_mmgrab(struct mm_struct *mm);
void *rkvm_page_address(struct page *page);
bool rkvm_phys_in_pmd_folio(phys_addr_t pa);
long rkvm_pin_user_contiguous(unsigned long uaddr, unsigned long nr, bool write, phys_addr_t *first);
void rkvm_kernel_fpu_begin(void);
void rkvm_kernel_fpu_end(void);
bool rkvm_signal_pending(void);
int rkvm_current_pid(void);
void rkvm_machine_check(void);
void rkvm_raise_nmi(void);
u32 rkvm_host_spec_bits(void);
void rkvm_ibpb_before_user(void);
bool rkvm_host_mem_encrypted(void);
bool rkvm_need_resched(void);
void rkvm_guest_enter_rcu_qs(void);
struct rkvm_vmx_host;
void rkvm_vmx_host_save(struct rkvm_vmx_host *h, bool per_cpu);
void rkvm_vmx_host_restore(const struct rkvm_vmx_host *h);
void rkvm_cond_resched(void);
void rkvm_yield(void);
int rkvm_smp_call_function_single(int cpu, void (*func)(void *info), void *info);
u64 rkvm_ktime_ns(void);
u64 rkvm_ktime_real_ns(void);
u64 rkvm_run_delay(void);
void rkvm_kick_cpu_async(int cpu);

phys_addr_t rkvm_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

int rkvm_cpuhp_setup_multi(const char *name,
			   int (*online)(unsigned int cpu, struct hlist_node *node),
			   int (*offline)(unsigned int cpu, struct hlist_node *node))
{
	return cpuhp_setup_state_multi(CPUHP_AP_ONLINE_DYN, name, online, offline);
}

int rkvm_cpuhp_add_instance(int state, struct hlist_node *node)
{
	return cpuhp_state_add_instance(state, node);
}

void rkvm_cpuhp_remove_instance(int state, struct hlist_node *node)
{
	cpuhp_state_remove_instance(state, node);
}

void rkvm_cpuhp_remove_multi(int state)
{
	cpuhp_remove_multi_state(state);
}

bool rkvm_access_ok(unsigned long addr, unsigned long size)
{
	return access_ok((void __user *)addr, size);
}

int rkvm_rdmsr_safe(u32 msr, u64 *value)
{
	return rdmsrq_safe(msr, value);
}

int rkvm_wrmsr_safe(u32 msr, u64 value)
{
	return wrmsrq_safe(msr, value);
}

unsigned long rkvm_local_irq_save(void)
{
	unsigned long flags;

	local_irq_save(flags);
	return flags;
}

void rkvm_local_irq_restore(unsigned long flags)
{
	local_irq_restore(flags);
}

unsigned int rkvm_num_online_cpus(void)
{
	return num_online_cpus();
}

unsigned int rkvm_tsc_khz(void)
{
	return tsc_khz;
}

bool rkvm_cpu_smt_possible(void)
{
	return cpu_smt_possible();
}

vm_fault_t rkvm_fault_set_page(struct vm_fault *vmf, struct page *page)
{
	get_page(page);
	vmf->page = page;
	return 0;
}

/*
 * A file on an inode of its own (anon_inode_create_getfile) made a regular
 * file of `size` bytes, as KVM's guest_memfd: fallocate() needs S_IFREG,
 * fstat() shows the size, and the pages fallocate() allocates are never
 * evicted (nothing could bring them back). The inode keeps the anonymous
 * inodes' operations, which belong to the kernel: an inode can outlive
 * its file (an O_PATH open of /proc/self/fd/N holds it without holding the
 * module), so it must not point into this module (docs/abi.md,
 * "guest_memfd": what fstat, ftruncate and fchmod show for it).
 */
void rkvm_file_set_size(struct file *file, loff_t size)
{
	struct inode *inode = file_inode(file);

	inode->i_mode |= S_IFREG;
	i_size_write(inode, size);
	mapping_set_unevictable(inode->i_mapping);
	file->f_flags |= O_LARGEFILE;
}

/* Page `index` of the file's page cache, allocated and zeroed if absent. */
int rkvm_file_grab_page(struct file *file, pgoff_t index)
{
	struct address_space *mapping = file_inode(file)->i_mapping;
	struct folio *folio;

	filemap_invalidate_lock_shared(mapping);
	folio = filemap_grab_folio(mapping, index);
	if (IS_ERR(folio)) {
		filemap_invalidate_unlock_shared(mapping);
		return PTR_ERR(folio);
	}
	if (!folio_test_uptodate(folio)) {
		folio_zero_range(folio, 0, folio_size(folio));
		folio_mark_uptodate(folio);
	}
	folio_unlock(folio);
	folio_put(folio);
	filemap_invalidate_unlock_shared(mapping);
	return 0;
}

/* Frees the file's pages in bytes [start, end). */
void rkvm_file_punch(struct file *file, loff_t start, loff_t end)
{
	struct address_space *mapping = file_inode(file)->i_mapping;

	filemap_invalidate_lock(mapping);
	truncate_inode_pages_range(mapping, start, end - 1);
	filemap_invalidate_unlock(mapping);
}

struct mm_struct *rkvm_current_mm_grab(void)
{
	struct mm_struct *mm = current->mm;

	if (mm)
		mmgrab(mm);
	return mm;
}

bool rkvm_current_mm_is(const struct mm_struct *mm)
{
	return current->mm == mm;
}

void rkvm_mmdrop(struct mm_struct *mm)
{
	mmdrop(mm);
}

struct dentry *rkvm_debugfs_create_file(const char *name, umode_t mode, struct dentry *parent,
					void *data, const struct file_operations *fops)
{
	return debugfs_create_file(name, mode, parent, data, fops);
}

void rkvm_on_each_cpu(void (*func)(void *info), void *info)
{
	on_each_cpu(func, info, 1);
}

/* A syscore registration and its ops, allocated together. */
struct rkvm_syscore {
	struct syscore syscore;
	struct syscore_ops ops;
};

struct syscore *rkvm_syscore_register(int (*suspend)(void *data), void (*resume)(void *data),
				      void (*shutdown)(void *data), void *data)
{
	struct rkvm_syscore *s = kzalloc(sizeof(*s), GFP_KERNEL);

	if (!s)
		return NULL;
	s->ops.suspend = suspend;
	s->ops.resume = resume;
	s->ops.shutdown = shutdown;
	s->syscore.ops = &s->ops;
	s->syscore.data = data;
	register_syscore(&s->syscore);
	return &s->syscore;
}

void rkvm_syscore_unregister(struct syscore *syscore)
{
	unregister_syscore(syscore);
	kfree(container_of(syscore, struct rkvm_syscore, syscore));
}

phys_addr_t rkvm_virt_to_phys(const void *addr)
{
	return virt_to_phys((void *)addr);
}

long rkvm_pin_user_page(unsigned long uaddr, bool write, struct page **page)
{
	return pin_user_pages_fast(uaddr, 1, FOLL_LONGTERM | (write ? FOLL_WRITE : 0), page);
}

void rkvm_unpin_phys(phys_addr_t pa, unsigned long nr, bool dirty)
{
	unpin_user_page_range_dirty_lock(pfn_to_page(PHYS_PFN(pa)), nr, dirty);
}

int rkvm_account_locked(struct mm_struct *mm, unsigned long pages, bool inc)
{
	return account_locked_vm(mm, pages, inc);
}

void rkvm_mmgrab(struct mm_struct *mm)
{
	mmgrab(mm);
}

void rkvm_kernel_fpu_begin(void)
{
	kernel_fpu_begin();
}

void rkvm_kernel_fpu_end(void)
{
	kernel_fpu_end();
}

bool rkvm_signal_pending(void)
{
	return signal_pending(current);
}

bool rkvm_need_resched(void)
{
	return need_resched();
}

/*
 * Running a guest is, for RCU, like running user space: the CPU holds no
 * read-side critical section, and may stay there for a whole time slice.
 * KVM's guest_context_enter_irqoff() says so at every entry; so do we.
 * Interrupts must be off.
 */
void rkvm_guest_enter_rcu_qs(void)
{
	rcu_virt_note_context_switch();
}

void rkvm_cond_resched(void)
{
	cond_resched();
}

/* Gives the CPU to another runnable task, if there is one (sched_yield). */
void rkvm_yield(void)
{
	yield();
}

int rkvm_smp_call_function_single(int cpu, void (*func)(void *info), void *info)
{
	return smp_call_function_single(cpu, func, info, 1);
}

bool rkvm_phys_in_pmd_folio(phys_addr_t pa)
{
	return folio_test_pmd_mappable(page_folio(pfn_to_page(PHYS_PFN(pa))));
}

long rkvm_pin_user_contiguous(unsigned long uaddr, unsigned long nr, bool write, phys_addr_t *first)
{
	struct page **pages = kvmalloc_array(nr, sizeof(*pages), GFP_KERNEL);
	unsigned int flags = FOLL_LONGTERM | (write ? FOLL_WRITE : 0);
	long n, i;

	if (!pages)
		return -ENOMEM;
	n = pin_user_pages_fast(uaddr, nr, flags, pages);
	if (n < 0) {
		kvfree(pages);
		return n;
	}
	for (i = 1; i < n; i++)
		if (page_to_pfn(pages[i]) != page_to_pfn(pages[0]) + i)
			break;
	if (n == nr && i == n) {
		*first = page_to_phys(pages[0]);
		kvfree(pages);
		return 0;
	}
	unpin_user_pages(pages, n);
	kvfree(pages);
	return -EAGAIN;
}

int rkvm_current_pid(void)
{
	return task_pid_nr(current);
}

bool rkvm_host_mem_encrypted(void)
{
	return cc_platform_has(CC_ATTR_HOST_MEM_ENCRYPT);
}

void *rkvm_page_address(struct page *page)
{
	return page_address(page);
}

/*
 * VMX host state (module/sys/vmx.rs, struct HostState, mirrors this layout).
 * A VM exit loads the host's control registers, selectors and bases from
 * the VMCS, but sets the GDT and IDT limits to 0xffff, the TR limit to
 * 0x67, LDTR to null, DR7 to 0x400 and DEBUGCTL to 0; and only null
 * selectors (or ones with RPL 0 and TI 0) can be host selectors. Like
 * KVM's vmx_prepare_switch_to_guest/_host, rkvm saves what the host had
 * and puts back what the exit did not. SDM Vol. 3C 28.5.
 */
struct rkvm_vmx_host {
	u64 cr0, cr3, cr4;
	u64 fs_base, gs_base, tr_base, gdt_base, idt_base;
	u64 sysenter_esp, sysenter_eip;
	u64 kernel_gs_base, debugctl, dr7, efer, pat;
	u64 star, lstar, cstar, sfmask;
	u32 sysenter_cs;
	u16 cs_sel, ss_sel, tr_sel, fs_sel, gs_sel, ds_sel, es_sel, ldt_sel;
};

/*
 * Saves the host state an entry needs. The MSRs that hold the same value
 * for as long as a CPU is up (SYSENTER, EFER, PAT, the syscall MSRs: set
 * once by cpu_init()) are read only with per_cpu; without it the caller
 * passes back what this function saved on this CPU before, as KVM keeps
 * them from one entry to the next.
 */
void rkvm_vmx_host_save(struct rkvm_vmx_host *h, bool per_cpu)
{
	int cpu = raw_smp_processor_id();
	struct desc_ptr idt;
	unsigned long dr7;
	u16 sel;

	lockdep_assert_irqs_disabled();
	h->cr0 = read_cr0();
	h->cr3 = __read_cr3();
	h->cr4 = __read_cr4();
	rdmsrq(MSR_FS_BASE, h->fs_base);
	rdmsrq(MSR_GS_BASE, h->gs_base);
	rdmsrq(MSR_KERNEL_GS_BASE, h->kernel_gs_base);
	h->tr_base = (unsigned long)&get_cpu_entry_area(cpu)->tss.x86_tss;
	h->gdt_base = (unsigned long)get_current_gdt_ro();
	store_idt(&idt);
	h->idt_base = idt.address;
	if (per_cpu) {
		rdmsrq(MSR_IA32_SYSENTER_CS, h->sysenter_esp);
		h->sysenter_cs = (u32)h->sysenter_esp;
		rdmsrq(MSR_IA32_SYSENTER_ESP, h->sysenter_esp);
		rdmsrq(MSR_IA32_SYSENTER_EIP, h->sysenter_eip);
		rdmsrq(MSR_EFER, h->efer);
		rdmsrq(MSR_IA32_CR_PAT, h->pat);
		rdmsrq(MSR_STAR, h->star);
		rdmsrq(MSR_LSTAR, h->lstar);
		rdmsrq(MSR_CSTAR, h->cstar);
		rdmsrq(MSR_SYSCALL_MASK, h->sfmask);
	}
	rdmsrq(MSR_IA32_DEBUGCTLMSR, h->debugctl);
	asm volatile("mov %%dr7, %0" : "=r"(dr7));
	h->dr7 = dr7;
	h->cs_sel = __KERNEL_CS;
	h->ss_sel = __KERNEL_DS;
	h->tr_sel = GDT_ENTRY_TSS * 8;
	savesegment(fs, sel);
	h->fs_sel = sel;
	savesegment(gs, sel);
	h->gs_sel = sel;
	savesegment(ds, sel);
	h->ds_sel = sel;
	savesegment(es, sel);
	h->es_sel = sel;
	asm volatile("sldt %0" : "=r"(sel));
	h->ldt_sel = sel;
}

void rkvm_vmx_host_restore(const struct rkvm_vmx_host *h)
{
	lockdep_assert_irqs_disabled();
	if (h->ldt_sel || (h->gs_sel & 7)) {
		if (h->ldt_sel)
			asm volatile("lldt %0" : : "r"(h->ldt_sel));
		load_gs_index(h->gs_sel);
		/*
		 * Loading GS (between two SWAPGS) replaced the user GS base,
		 * which the exit's MSR-load list had put back.
		 */
		wrmsrq(MSR_KERNEL_GS_BASE, h->kernel_gs_base);
	}
	if (h->fs_sel & 7)
		loadsegment(fs, h->fs_sel);
	if (h->ds_sel | h->es_sel) {
		loadsegment(ds, h->ds_sel);
		loadsegment(es, h->es_sel);
	}
	/*
	 * The exit left the TSS limit at 0x67, without the I/O bitmap: mark it
	 * stale, and the kernel reloads TR before a task with an I/O bitmap
	 * returns to user space (invalidate_tss_limit() without its immediate
	 * reload, which needs load_direct_gdt, exported to KVM only).
	 */
	this_cpu_write(__tss_limit_invalid, true);
	load_fixmap_gdt(raw_smp_processor_id());
	if (h->debugctl)
		wrmsrq(MSR_IA32_DEBUGCTLMSR, h->debugctl);
	/*
	 * The host uses breakpoints: a #DB the guest took in VMX non-root
	 * operation wrote DR6, and a stale B0-B3 would read as a hit of the
	 * host's at its next #DB (KVM's hw_breakpoint_restore resets it too).
	 */
	if (h->dr7 != DR7_FIXED_1) {
		asm volatile("mov %0, %%dr6" : : "r"((unsigned long)DR6_RESERVED));
		asm volatile("mov %0, %%dr7" : : "r"((unsigned long)h->dr7));
	}
}

/*
 * A machine check that made the guest exit is the host's: hand it to the
 * host's handler as if it hit user mode (the guest is not the kernel), as
 * KVM does. A call, not `int 18`: on a FRED host a software `int 18` is
 * not a machine check.
 */
void rkvm_machine_check(void)
{
#ifdef CONFIG_X86_MCE
	struct pt_regs regs = { .cs = 3, .flags = X86_EFLAGS_IF };

	do_machine_check(&regs);
#endif
}

/*
 * An NMI that a VMX exit consumed: the host must still take it. With IDT
 * event delivery `int 2` runs the NMI entry; on a FRED host it would be a
 * software interrupt, not an NMI, so the NMI is sent again to this CPU
 * through its local APIC (KVM's FRED path, fred_entry_from_kvm, is
 * exported to the KVM modules only).
 */
void rkvm_raise_nmi(void)
{
	if (cpu_feature_enabled(X86_FEATURE_FRED))
		/* Through the ICR, which has an NMI delivery mode (x2APIC's SELF_IPI register
		 * sends fixed interrupts only); send_IPI_mask is the call exported to modules. */
		__apic_send_IPI_mask(cpumask_of(smp_processor_id()), NMI_VECTOR);
	else
		asm volatile("int $2" ::: "memory");
}

/*
 * The host's speculation mitigations that concern guest entry and exit,
 * as the bits of module/spec.rs (`host`).
 */
u32 rkvm_host_spec_bits(void)
{
	bool on = !cpu_mitigations_off();
	u32 bits = 0;

	if (boot_cpu_has(X86_FEATURE_RSB_VMEXIT))
		bits |= 1 << 0;
	if (boot_cpu_has(X86_FEATURE_RSB_VMEXIT_LITE))
		bits |= 1 << 1;
	if (boot_cpu_has(X86_FEATURE_CLEAR_CPU_BUF_VM))
		bits |= 1 << 2;
	if (boot_cpu_has(X86_FEATURE_CLEAR_BHB_VMEXIT))
		bits |= 1 << 3;
	if (boot_cpu_has(X86_FEATURE_IBPB_ON_VMEXIT))
		bits |= 1 << 4;
	if (boot_cpu_has(X86_FEATURE_IBPB_EXIT_TO_USER))
		bits |= 1 << 5;
	if (on && boot_cpu_has_bug(X86_BUG_L1TF))
		bits |= 1 << 6;
	if (boot_cpu_has(X86_FEATURE_FLUSH_L1D))
		bits |= 1 << 7;
	if (on && boot_cpu_has(X86_FEATURE_IBPB))
		bits |= 1 << 8;
	if (boot_cpu_has(X86_FEATURE_UNRET) || boot_cpu_has(X86_FEATURE_SRSO_ALIAS))
		bits |= 1 << 9;
	if (boot_cpu_has(X86_FEATURE_CALL_DEPTH))
		bits |= 1 << 10;
	return bits;
}

/* VMSCAPE: flush branch predictions before this CPU returns to user space. */
void rkvm_ibpb_before_user(void)
{
	this_cpu_write(x86_ibpb_exit_to_user, true);
}

/* The host's monotonic clock, in nanoseconds: the in-kernel APIC timer's time base. */
u64 rkvm_ktime_ns(void)
{
	return ktime_get_ns();
}

/*
 * How long the current task has waited, runnable, for a CPU (ns): the
 * source of a vCPU's steal time, as KVM's record_steal_time. The test
 * kernel has CONFIG_SCHED_INFO; without it nothing is counted.
 */
u64 rkvm_run_delay(void)
{
#ifdef CONFIG_SCHED_INFO
	return current->sched_info.run_delay;
#else
	return 0;
#endif
}

/* The host's wall-clock time (CLOCK_REALTIME), in nanoseconds: kvmclock's epoch. */
u64 rkvm_ktime_real_ns(void)
{
	return ktime_get_real_ns();
}

/*
 * Kicking a vCPU out of guest mode: a reschedule IPI to the CPU it runs on
 * makes the guest exit (external interrupts always exit), as KVM's
 * kvm_vcpu_kick. It needs no request block, so any number of senders
 * (vCPU threads, ioctls, the APIC timer's callback in hard-interrupt
 * context) may kick the same CPU at once. A CPU that went offline since
 * the vCPU left it runs no guest, and gets nothing (the kernel warns about
 * a reschedule of an offline CPU).
 */
void rkvm_kick_cpu_async(int cpu)
{
	if (cpu_online(cpu))
		arch_smp_send_reschedule(cpu);
}
