//! `--stats`: exits counted by reason, with the time spent in KVM_RUN
//! before each (the guest running, the exit, and the hypervisor's work)
//! and the time rkvm took to handle it in userspace.

use std::collections::BTreeMap;
use std::time::Duration;

/// Counts and times by exit reason.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    by_reason: BTreeMap<&'static str, Entry>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    count: u64,
    in_run: Duration,
    in_rkvm: Duration,
}

/// A duration in the unit that suits it.
pub(crate) fn human_time(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} us", d.as_secs_f64() * 1e6)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

impl Stats {
    /// Records one exit.
    pub(crate) fn add(&mut self, reason: &'static str, in_run: Duration, in_rkvm: Duration) {
        let e = self.by_reason.entry(reason).or_default();
        e.count += 1;
        e.in_run += in_run;
        e.in_rkvm += in_rkvm;
    }

    /// Adds another vCPU's statistics.
    pub(crate) fn merge(&mut self, other: &Stats) {
        for (reason, o) in &other.by_reason {
            let e = self.by_reason.entry(reason).or_default();
            e.count += o.count;
            e.in_run += o.in_run;
            e.in_rkvm += o.in_rkvm;
        }
    }

    /// How many exits of `reason` there were.
    #[cfg(test)]
    pub(crate) fn count(&self, reason: &str) -> u64 {
        self.by_reason.get(reason).map_or(0, |e| e.count)
    }

    /// The table `--stats` prints.
    pub(crate) fn table(&self, vcpus: u32, wall: Duration) -> String {
        let mut s = format!(
            "rkvm: exits of {vcpus} vCPU{} in {} of wall time\n",
            if vcpus == 1 { "" } else { "s" },
            human_time(wall)
        );
        s += &format!(
            "  {:<26} {:>8}  {:>11} {:>11}  {:>11} {:>11}\n",
            "exit reason", "count", "in KVM_RUN", "per exit", "in rkvm", "per exit"
        );
        let mut total = Entry::default();
        let per = |d: Duration, n: u64| d / u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        for (reason, e) in &self.by_reason {
            s += &format!(
                "  {:<26} {:>8}  {:>11} {:>11}  {:>11} {:>11}\n",
                reason,
                e.count,
                human_time(e.in_run),
                human_time(per(e.in_run, e.count)),
                human_time(e.in_rkvm),
                human_time(per(e.in_rkvm, e.count)),
            );
            total.count += e.count;
            total.in_run += e.in_run;
            total.in_rkvm += e.in_rkvm;
        }
        s += &format!(
            "  {:<26} {:>8}  {:>11} {:>11}  {:>11} {:>11}\n",
            "total",
            total.count,
            human_time(total.in_run),
            human_time(per(total.in_run, total.count)),
            human_time(total.in_rkvm),
            human_time(per(total.in_rkvm, total.count)),
        );
        s += "  (in KVM_RUN: the guest running plus the exit and the kernel's work before it;\n";
        s += "   in rkvm: this program emulating the device and setting up the next entry)\n";
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_and_print() {
        let mut a = Stats::default();
        a.add(
            "KVM_EXIT_IO",
            Duration::from_micros(100),
            Duration::from_micros(10),
        );
        a.add(
            "KVM_EXIT_IO",
            Duration::from_micros(300),
            Duration::from_micros(30),
        );
        let mut b = Stats::default();
        b.add("KVM_EXIT_HLT", Duration::from_millis(2), Duration::ZERO);
        a.merge(&b);
        assert_eq!(a.count("KVM_EXIT_IO"), 2);
        assert_eq!(a.count("KVM_EXIT_HLT"), 1);
        let t = a.table(2, Duration::from_millis(5));
        assert!(t.contains("2 vCPUs"), "{t}");
        let io = t.lines().find(|l| l.contains("KVM_EXIT_IO")).unwrap();
        assert!(io.contains("400.0 us") && io.contains("200.0 us"), "{io}");
        assert!(t.contains("2.0 ms"), "{t}");
        let total = t
            .lines()
            .find(|l| l.trim_start().starts_with("total"))
            .unwrap();
        assert!(total.contains(" 3 "), "{total}");
    }

    #[test]
    fn times_in_their_unit() {
        assert_eq!(human_time(Duration::from_nanos(950)), "950 ns");
        assert_eq!(human_time(Duration::from_micros(95)), "95.0 us");
        assert_eq!(human_time(Duration::from_millis(95)), "95.0 ms");
        assert_eq!(human_time(Duration::from_secs(95)), "95.00 s");
        assert_eq!(human_time(Duration::from_micros(9500)), "9.5 ms");
    }
}
