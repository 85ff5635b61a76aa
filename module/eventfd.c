// SPDX-License-Identifier: GPL-2.0
/*
 * Eventfd waiters for rkvm's irqfds (module/sys/eventfd.rs is the Rust
 * side and documents the contract).
 *
 * An irqfd must react to every signal of an eventfd without a thread
 * reading it: rkvm hooks a wait-queue entry with its own wake-up function
 * into the eventfd, the way poll(2) hooks a waiter, through vfs_poll() and
 * a poll_table whose queue function adds the entry. The wake-up function
 * runs inside eventfd_signal(), under the eventfd's wait-queue lock with
 * interrupts off, so it only consumes the count and schedules a work item;
 * the work item calls back into Rust in process context, where the
 * irqchip's locks may be taken.
 *
 * The entry is added as an exclusive priority waiter, as KVM adds its
 * irqfds: a priority waiter sees the signal before any reader, and only
 * one may exist per eventfd, so one eventfd feeds at most one irqfd (a
 * second gets -EBUSY, KVM's answer).
 *
 * These wrap static inlines and macros (CLASS(fd), init_poll_funcptr,
 * container_of, ...) that Rust cannot call.
 */
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

struct rkvm_eventfd_waiter {
	wait_queue_entry_t wait;
	poll_table pt;
	struct eventfd_ctx *eventfd;
	struct work_struct work;
	void (*fire)(void *owner);
	void *owner;
	int queue_error;
};

/* Prototypes, for -Wmissing-prototypes: these are called only from Rust. */
struct rkvm_eventfd_waiter *rkvm_eventfd_waiter_create(int fd, void (*fire)(void *owner),
						       void *owner);
void rkvm_eventfd_waiter_destroy(struct rkvm_eventfd_waiter *w);
void *rkvm_eventfd_waiter_ctx(struct rkvm_eventfd_waiter *w);
void *rkvm_eventfd_ctx_get(int fd);
void rkvm_eventfd_ctx_put(void *ctx);
void rkvm_eventfd_ctx_signal(void *ctx);

/* Under the eventfd's wait-queue lock, interrupts off. */
static int rkvm_eventfd_wakeup(wait_queue_entry_t *wait, unsigned int mode, int sync, void *key)
{
	struct rkvm_eventfd_waiter *w = container_of(wait, struct rkvm_eventfd_waiter, wait);
	u64 count;

	if (!(key_to_poll(key) & EPOLLIN))
		return 0;
	/* Consume the count: the next signal wakes us again. */
	eventfd_ctx_do_read(w->eventfd, &count);
	schedule_work(&w->work);
	return 1;
}

static void rkvm_eventfd_queue(struct file *file, wait_queue_head_t *wqh, poll_table *pt)
{
	struct rkvm_eventfd_waiter *w = container_of(pt, struct rkvm_eventfd_waiter, pt);

	init_waitqueue_func_entry(&w->wait, rkvm_eventfd_wakeup);
	w->queue_error = add_wait_queue_priority_exclusive(wqh, &w->wait);
}

static void rkvm_eventfd_work(struct work_struct *work)
{
	struct rkvm_eventfd_waiter *w = container_of(work, struct rkvm_eventfd_waiter, work);

	w->fire(w->owner);
}

/*
 * Hooks a waiter into the eventfd behind file descriptor @fd: from now on
 * each signal calls @fire(@owner) once, from a work item. A count already
 * pending fires at once. Returns the waiter or an ERR_PTR: -EBADF (no such
 * fd), -EINVAL (not an eventfd), -EBUSY (another irqfd has it), -ENOMEM.
 */
struct rkvm_eventfd_waiter *rkvm_eventfd_waiter_create(int fd, void (*fire)(void *owner),
						       void *owner)
{
	struct rkvm_eventfd_waiter *w;
	struct eventfd_ctx *ctx;
	__poll_t events;
	CLASS(fd, f)(fd);

	if (fd_empty(f))
		return ERR_PTR(-EBADF);
	ctx = eventfd_ctx_fileget(fd_file(f));
	if (IS_ERR(ctx))
		return ERR_CAST(ctx);
	w = kzalloc(sizeof(*w), GFP_KERNEL_ACCOUNT);
	if (!w) {
		eventfd_ctx_put(ctx);
		return ERR_PTR(-ENOMEM);
	}
	w->eventfd = ctx;
	w->fire = fire;
	w->owner = owner;
	INIT_WORK(&w->work, rkvm_eventfd_work);
	init_poll_funcptr(&w->pt, rkvm_eventfd_queue);
	events = vfs_poll(fd_file(f), &w->pt);
	if (w->queue_error) {
		int err = w->queue_error;

		eventfd_ctx_put(ctx);
		kfree(w);
		return ERR_PTR(err);
	}
	if (events & EPOLLIN)
		schedule_work(&w->work);
	return w;
}

/*
 * Unhooks the waiter and waits for a @fire call in flight: afterwards
 * @owner is never used again. Process context.
 */
void rkvm_eventfd_waiter_destroy(struct rkvm_eventfd_waiter *w)
{
	u64 count;

	eventfd_ctx_remove_wait_queue(w->eventfd, &w->wait, &count);
	cancel_work_sync(&w->work);
	eventfd_ctx_put(w->eventfd);
	kfree(w);
}

/* The eventfd the waiter is hooked into (to compare with another). */
void *rkvm_eventfd_waiter_ctx(struct rkvm_eventfd_waiter *w)
{
	return w->eventfd;
}

/* A reference to the eventfd behind @fd, or an ERR_PTR (-EBADF, -EINVAL). */
void *rkvm_eventfd_ctx_get(int fd)
{
	return eventfd_ctx_fdget(fd);
}

void rkvm_eventfd_ctx_put(void *ctx)
{
	eventfd_ctx_put(ctx);
}

/* Adds one to the eventfd's count; any context. */
void rkvm_eventfd_ctx_signal(void *ctx)
{
	eventfd_signal(ctx);
}
