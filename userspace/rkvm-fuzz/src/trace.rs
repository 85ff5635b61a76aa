//! The trace: what each worker thread is doing, in memory shared with the
//! supervisor process, so that the last actions can be printed even when the
//! worker process is stuck in the kernel for good.
//!
//! Each worker writes a line *before* it makes the system call the line
//! names, so a thread stuck in a call shows that call last.

use core::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;

use crate::sys;

/// How many worker threads the trace has room for.
pub(crate) const MAX_THREADS: usize = 16;
/// How many lines each thread keeps.
const RING: usize = 64;
/// Bytes per line (longer lines are cut).
const LINE_BYTES: usize = 128;
const LINE_WORDS: usize = LINE_BYTES / 8;
/// Header words: completed actions, stop flag, current epoch, then one
/// counter per action kind.
const HEADER: usize = 3 + MAX_ACTIONS;
/// How many action kinds the counters have room for.
pub(crate) const MAX_ACTIONS: usize = 32;
/// Words per thread: the count of lines written, then the ring.
const SLOT: usize = 1 + RING * LINE_WORDS;

/// The shared trace and progress counters.
#[derive(Clone, Copy)]
pub(crate) struct Trace(&'static [AtomicU64]);

impl Trace {
    /// A new trace, shared with processes forked from now on.
    pub(crate) fn new() -> Result<Self, Errno> {
        sys::shared_words(HEADER + MAX_THREADS * SLOT).map(Self)
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // The index is always computed below from in-range constants.
        &self.0[i.min(self.0.len() - 1)]
    }

    /// Actions completed so far, by every worker of every epoch.
    pub(crate) fn progress(&self) -> u64 {
        self.word(0).load(Ordering::Relaxed)
    }

    /// Counts one completed action.
    pub(crate) fn step_done(&self) {
        self.word(0).fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one action of kind `kind`.
    pub(crate) fn count_action(&self, kind: usize) {
        self.word(3 + kind.min(MAX_ACTIONS - 1))
            .fetch_add(1, Ordering::Relaxed);
    }

    /// How many actions of kind `kind` ran, over every epoch.
    pub(crate) fn action_count(&self, kind: usize) -> u64 {
        self.word(3 + kind.min(MAX_ACTIONS - 1))
            .load(Ordering::Relaxed)
    }

    /// Asks every worker to stop after its current action.
    pub(crate) fn request_stop(&self) {
        self.word(1).store(1, Ordering::Relaxed);
    }

    /// Whether the workers should stop.
    pub(crate) fn stopping(&self) -> bool {
        self.word(1).load(Ordering::Relaxed) != 0
    }

    /// Records that `epoch` is running and clears every thread's lines.
    pub(crate) fn begin_epoch(&self, epoch: u64) {
        self.word(2).store(epoch, Ordering::Relaxed);
        for t in 0..MAX_THREADS {
            self.word(HEADER + t * SLOT).store(0, Ordering::Relaxed);
        }
    }

    /// Records `line` as thread `thread`'s latest action.
    pub(crate) fn record(&self, thread: usize, line: &str) {
        let thread = thread.min(MAX_THREADS - 1);
        let base = HEADER + thread * SLOT;
        let count = self.word(base).load(Ordering::Relaxed);
        let slot = base + 1 + (count as usize % RING) * LINE_WORDS;
        let mut bytes = [0u8; LINE_BYTES];
        let n = line.len().min(LINE_BYTES);
        bytes[..n].copy_from_slice(&line.as_bytes()[..n]);
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.word(slot + i)
                .store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
        self.word(base).store(count + 1, Ordering::Release);
    }

    /// How many lines thread `thread` has written in this epoch.
    pub(crate) fn lines_written(&self, thread: usize) -> u64 {
        self.word(HEADER + thread.min(MAX_THREADS - 1) * SLOT)
            .load(Ordering::Acquire)
    }

    /// The last `n` lines of thread `thread`, oldest first.
    pub(crate) fn last_lines(&self, thread: usize, n: usize) -> Vec<String> {
        let base = HEADER + thread.min(MAX_THREADS - 1) * SLOT;
        let count = self.word(base).load(Ordering::Acquire) as usize;
        let first = count.saturating_sub(n.min(RING));
        (first..count)
            .map(|k| {
                let slot = base + 1 + (k % RING) * LINE_WORDS;
                let bytes: Vec<u8> = (0..LINE_WORDS)
                    .flat_map(|i| self.word(slot + i).load(Ordering::Relaxed).to_le_bytes())
                    .take_while(|&b| b != 0)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect()
    }
}
