//! kselftest-style tests: TAP 13 output, a runner, and assertion macros.
//!
//! The output follows `tools/testing/selftests/kselftest.h`:
//!
//! ```text
//! TAP version 13
//! 1..3
//! ok 1 api_version_is_12
//! # vcpu.rs:40: expected 0xfff0, got 0x0 (regs.rip)
//! not ok 2 regs_reset_state
//! ok 3 readonly_memslot # SKIP KVM_CAP_READONLY_MEM is 0
//! # Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0
//! ```
//!
//! The process exits with 0 when nothing failed, 1 when a test failed, and 4
//! when every test was skipped.
//!
//! A test is a `fn(&C) -> TestResult` for a context `C` of the program's
//! choosing. It fails by returning [`Status::Fail`] (the `check*` macros do
//! that and print expected and actual values), skips with [`Status::Skip`]
//! ([`skip!`]), and any error converts into a failure with `?`. A panic fails
//! only its test. After each test the runner checks that the test left no
//! file descriptor open and no child process behind.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::Once;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Exit status: every test passed (or some passed and the rest skipped).
pub const KSFT_PASS: u8 = 0;
/// Exit status: at least one test failed.
pub const KSFT_FAIL: u8 = 1;
/// Exit status: every test was skipped.
pub const KSFT_SKIP: u8 = 4;

/// Why a test did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The test failed; the message says what was expected and what was seen.
    Fail(String),
    /// The test could not run here; the message says why.
    Skip(String),
}

/// What a test returns.
pub type TestResult = Result<(), Status>;

impl<E: std::error::Error> From<E> for Status {
    fn from(e: E) -> Self {
        Status::Fail(e.to_string())
    }
}

/// One test: a name (what it proves) and the function.
pub struct Test<C> {
    /// Printed in the result line; by convention the function's name.
    pub name: &'static str,
    /// The test.
    pub run: fn(&C) -> TestResult,
}

impl<C> Clone for Test<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for Test<C> {}

impl<C> fmt::Debug for Test<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Test").field("name", &self.name).finish()
    }
}

/// `tests![a, b]` is `[Test { name: "a", run: a }, Test { name: "b", run: b }]`.
#[macro_export]
macro_rules! tests {
    ($($f:ident),* $(,)?) => {
        [$($crate::Test { name: stringify!($f), run: $f }),*]
    };
}

thread_local! {
    static DIAGNOSTICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
    static IN_TEST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Queues a diagnostic line, printed as `# ...` before the test's result.
pub fn diag(msg: impl fmt::Display) {
    let text = msg.to_string();
    DIAGNOSTICS.with(|d| d.borrow_mut().extend(text.lines().map(str::to_owned)));
}

/// `diag!("fmt", args)`: queues a `# ...` line for the current test.
#[macro_export]
macro_rules! diag {
    ($($arg:tt)*) => {
        $crate::diag(format_args!($($arg)*))
    };
}

fn take_diagnostics() -> Vec<String> {
    DIAGNOSTICS.with(|d| std::mem::take(&mut *d.borrow_mut()))
}

/// Returns `Err(Status::Skip(..))` from the enclosing test.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {
        return Err($crate::Status::Skip(format!($($arg)*)))
    };
}

/// Returns `Err(Status::Fail(..))` with the source location.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::Status::Fail(format!(
            "{}:{}: {}",
            $crate::file_name(file!()),
            line!(),
            format_args!($($arg)*)
        )))
    };
}

/// `check!(cond)` or `check!(cond, "fmt", args)`: fails the test if false.
#[macro_export]
macro_rules! check {
    ($cond:expr $(,)?) => {
        if !$cond {
            $crate::fail!("check failed: {}", stringify!($cond));
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::fail!("check failed: {}: {}", stringify!($cond), format_args!($($arg)+));
        }
    };
}

/// `check_eq!(actual, expected)`: fails with both values (`Debug`) if they differ.
#[macro_export]
macro_rules! check_eq {
    ($actual:expr, $expected:expr $(,)?) => {
        match (&$actual, &$expected) {
            (a, e) => {
                if a != e {
                    $crate::fail!("{}: expected {:?}, got {:?}", stringify!($actual), e, a);
                }
            }
        }
    };
    ($actual:expr, $expected:expr, $($arg:tt)+) => {
        match (&$actual, &$expected) {
            (a, e) => {
                if a != e {
                    $crate::fail!(
                        "{}: expected {:?}, got {:?} ({})",
                        stringify!($actual), e, a, format_args!($($arg)+)
                    );
                }
            }
        }
    };
}

/// `check_eq_hex!(actual, expected)`: like [`check_eq!`], printing `{:#x}`.
#[macro_export]
macro_rules! check_eq_hex {
    ($actual:expr, $expected:expr $(,)?) => {
        match (&$actual, &$expected) {
            (a, e) => {
                if a != e {
                    $crate::fail!("{}: expected {:#x}, got {:#x}", stringify!($actual), e, a);
                }
            }
        }
    };
    ($actual:expr, $expected:expr, $($arg:tt)+) => {
        match (&$actual, &$expected) {
            (a, e) => {
                if a != e {
                    $crate::fail!(
                        "{}: expected {:#x}, got {:#x} ({})",
                        stringify!($actual), e, a, format_args!($($arg)+)
                    );
                }
            }
        }
    };
}

/// `check_ok!(expr)`: the `Ok` value, or fails naming the expression and error.
#[macro_export]
macro_rules! check_ok {
    ($e:expr $(,)?) => {
        match $e {
            Ok(v) => v,
            Err(err) => $crate::fail!("{}: unexpected error: {}", stringify!($e), err),
        }
    };
}

/// `check_errno!(expr, libc::EINVAL)`: fails unless `expr` is an `Err` whose
/// errno (the error converts into `nix::errno::Errno`) is the one expected.
#[macro_export]
macro_rules! check_errno {
    ($e:expr, $errno:expr $(,)?) => {
        $crate::check_errno!($e, $errno, "")
    };
    ($e:expr, $errno:expr, $($arg:tt)+) => {
        match $e {
            Ok(v) => $crate::fail!(
                "{}: expected {}, but it succeeded with {:?}{}",
                stringify!($e),
                $crate::errno_name($errno),
                v,
                $crate::context(format_args!($($arg)+))
            ),
            Err(err) => {
                let got = $crate::errno_of(err);
                if got != $errno {
                    $crate::fail!(
                        "{}: expected {}, got {}{}",
                        stringify!($e),
                        $crate::errno_name($errno),
                        $crate::errno_name(got),
                        $crate::context(format_args!($($arg)+))
                    );
                }
            }
        }
    };
}

/// The last component of a source path, for short failure locations.
#[doc(hidden)]
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[doc(hidden)]
pub fn errno_of(e: impl Into<Errno>) -> i32 {
    e.into() as i32
}

#[doc(hidden)]
pub fn context(args: fmt::Arguments<'_>) -> String {
    let s = args.to_string();
    if s.is_empty() { s } else { format!(" ({s})") }
}

/// `"EINVAL (22)"` for 22.
pub fn errno_name(errno: i32) -> String {
    format!("{:?} ({errno})", Errno::from_raw(errno))
}

/// Tallies and prints TAP 13 to a writer.
#[derive(Debug)]
pub struct Tap<W: Write> {
    out: W,
    number: usize,
    pass: usize,
    fail: usize,
    skip: usize,
}

impl<W: Write> Tap<W> {
    /// Prints the header and the plan `1..planned`.
    pub fn new(mut out: W, planned: usize) -> Self {
        let _ = writeln!(out, "TAP version 13");
        let _ = writeln!(out, "1..{planned}");
        Self {
            out,
            number: 0,
            pass: 0,
            fail: 0,
            skip: 0,
        }
    }

    /// Prints `# msg`, one line per line of `msg`.
    pub fn diag(&mut self, msg: &str) {
        for line in msg.lines() {
            let _ = writeln!(self.out, "# {line}");
        }
    }

    /// Prints the result line of the next test.
    pub fn result(&mut self, name: &str, result: &TestResult) {
        self.number += 1;
        let n = self.number;
        match result {
            Ok(()) => {
                self.pass += 1;
                let _ = writeln!(self.out, "ok {n} {name}");
            }
            Err(Status::Fail(msg)) => {
                self.fail += 1;
                self.diag(msg);
                let _ = writeln!(self.out, "not ok {n} {name}");
            }
            Err(Status::Skip(reason)) => {
                self.skip += 1;
                let reason = reason.lines().collect::<Vec<_>>().join("; ");
                let _ = writeln!(self.out, "ok {n} {name} # SKIP {reason}");
            }
        }
        let _ = self.out.flush();
    }

    /// Prints the `# Totals:` line and returns the exit status.
    pub fn finish(mut self) -> u8 {
        let _ = writeln!(
            self.out,
            "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:0",
            self.pass, self.fail, self.skip
        );
        let _ = self.out.flush();
        self.exit_status()
    }

    /// 1 if a test failed, else 4 if every test (or none ran and some) was
    /// skipped, else 0.
    pub fn exit_status(&self) -> u8 {
        if self.fail > 0 {
            KSFT_FAIL
        } else if self.pass == 0 && self.skip > 0 {
            KSFT_SKIP
        } else {
            KSFT_PASS
        }
    }

    /// The writer (for tests of this crate).
    pub fn into_inner(self) -> W {
        self.out
    }
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !IN_TEST.with(std::cell::Cell::get) {
                previous(info);
                return;
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".to_owned());
            let loc = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            PANIC_MESSAGE.with(|m| *m.borrow_mut() = Some(format!("panicked{loc}: {msg}")));
        }));
    });
}

/// This process's open fds and what they point at.
fn open_fds() -> BTreeMap<String, String> {
    let own_dir = format!("/proc/{}/fd", std::process::id());
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return BTreeMap::new();
    };
    dir.filter_map(Result::ok)
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        // The directory being listed is itself an open fd.
        .filter(|(_, target)| *target != own_dir)
        .collect()
}

/// Kills and reaps every child of this process; describes what was found.
fn reap_children() -> Option<String> {
    let mut found = Vec::new();
    let pids: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    for pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        found.push(format!("running child {pid}"));
    }
    let start = std::time::Instant::now();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                // Killed above, or unknown (no /proc/.../children): give a
                // killed child time to die, but never block on one.
                if start.elapsed() > std::time::Duration::from_secs(2) {
                    found.push("a child that could not be killed".to_owned());
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(status) => found.push(format!("unreaped child {status:?}")),
            Err(_) => break,
        }
    }
    if found.is_empty() {
        None
    } else {
        Some(found.join(", "))
    }
}

/// Runs one test, catching panics, then checks for leaked fds and children.
pub fn run_one<C>(ctx: &C, test: &Test<C>) -> TestResult {
    install_panic_hook();
    let before = open_fds();
    IN_TEST.with(|t| t.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| (test.run)(ctx)));
    IN_TEST.with(|t| t.set(false));
    let result = result.unwrap_or_else(|_| {
        let msg = PANIC_MESSAGE
            .with(|m| m.borrow_mut().take())
            .unwrap_or_else(|| "panicked".to_owned());
        Err(Status::Fail(msg))
    });
    let mut problems = Vec::new();
    let after = open_fds();
    let leaked: Vec<String> = after
        .iter()
        .filter(|(fd, target)| before.get(*fd) != Some(*target))
        .map(|(fd, target)| format!("{fd} -> {target}"))
        .collect();
    if !leaked.is_empty() {
        problems.push(format!(
            "test left file descriptors open: {}",
            leaked.join(", ")
        ));
    }
    if let Some(children) = reap_children() {
        problems.push(format!("test left child processes: {children}"));
    }
    match (result, problems.is_empty()) {
        (r, true) => r,
        (Err(Status::Fail(msg)), false) => {
            Err(Status::Fail(format!("{msg}\n{}", problems.join("\n"))))
        }
        (_, false) => Err(Status::Fail(problems.join("\n"))),
    }
}

/// Runs `tests` with the context, printing TAP to `out`; returns the exit
/// status. If `ctx` is an error, every test is reported skipped with it.
/// With `KSFT_ONLY=NAME` in the environment, only tests whose name contains
/// NAME run; the others are reported skipped (a quick way to run one test
/// while working on it).
pub fn run_to<C, W: Write>(out: W, ctx: &Result<C, String>, tests: &[Test<C>]) -> u8 {
    let only = std::env::var("KSFT_ONLY").ok();
    let mut tap = Tap::new(out, tests.len());
    for test in tests {
        let selected = only.as_deref().is_none_or(|o| test.name.contains(o));
        let result = match ctx {
            _ if !selected => Err(Status::Skip("not selected by KSFT_ONLY".to_owned())),
            Ok(c) => run_one(c, test),
            Err(reason) => Err(Status::Skip(reason.clone())),
        };
        for line in take_diagnostics() {
            tap.diag(&line);
        }
        tap.result(test.name, &result);
    }
    tap.finish()
}

/// Runs `tests` printing TAP to stdout, and returns the exit code.
pub fn run<C>(ctx: &Result<C, String>, tests: &[Test<C>]) -> ExitCode {
    ExitCode::from(run_to(io::stdout().lock(), ctx, tests))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(_: &()) -> TestResult {
        Ok(())
    }

    fn fails(_: &()) -> TestResult {
        check_eq!(1 + 1, 3);
        Ok(())
    }

    fn skips(_: &()) -> TestResult {
        skip!("no {} here", "widget");
    }

    fn panics(_: &()) -> TestResult {
        let v: Vec<u8> = Vec::new();
        let _ = v[3];
        Ok(())
    }

    fn errno_ok(_: &()) -> TestResult {
        check_errno!(Err::<(), Errno>(Errno::EINVAL), libc::EINVAL);
        Ok(())
    }

    fn errno_wrong(_: &()) -> TestResult {
        check_errno!(Err::<(), Errno>(Errno::EFAULT), libc::EINVAL, "slot {}", 3);
        Ok(())
    }

    fn errno_succeeded(_: &()) -> TestResult {
        check_errno!(Ok::<u32, Errno>(7), libc::EEXIST);
        Ok(())
    }

    fn with_diag(_: &()) -> TestResult {
        diag!("value is {:#x}", 0x10);
        Ok(())
    }

    fn leaks_fd(_: &()) -> TestResult {
        let f = std::fs::File::open("/dev/null")?;
        std::mem::forget(f);
        Ok(())
    }

    /// The fd and child checks look at the whole process: run one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn leaves_child(_: &()) -> TestResult {
        let child = std::process::Command::new("sleep").arg("30").spawn()?;
        std::mem::forget(child);
        Ok(())
    }

    fn run_capture(ctx: &Result<(), String>, tests: &[Test<()>]) -> (u8, String) {
        let _guard = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        let code = run_to(&mut out, ctx, tests);
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn all_pass() {
        let (code, out) = run_capture(&Ok(()), &tests![pass, with_diag]);
        assert_eq!(code, KSFT_PASS);
        assert_eq!(
            out,
            "TAP version 13\n1..2\nok 1 pass\n# value is 0x10\nok 2 with_diag\n\
             # Totals: pass:2 fail:0 xfail:0 xpass:0 skip:0 error:0\n"
        );
    }

    #[test]
    fn failure_prints_expected_and_actual() {
        let (code, out) = run_capture(&Ok(()), &tests![pass, fails, skips]);
        assert_eq!(code, KSFT_FAIL);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[2], "ok 1 pass");
        assert!(lines[3].starts_with("# "), "{out}");
        assert!(lines[3].contains("1 + 1: expected 3, got 2"), "{out}");
        assert_eq!(lines[4], "not ok 2 fails");
        assert_eq!(lines[5], "ok 3 skips # SKIP no widget here");
        assert_eq!(
            lines[6],
            "# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0"
        );
    }

    #[test]
    fn all_skipped_exits_4() {
        let (code, out) = run_capture(&Ok(()), &tests![skips]);
        assert_eq!(code, KSFT_SKIP);
        assert!(out.contains("skip:1"));
        let (code, out) = run_capture(&Err("no device".into()), &tests![pass, fails]);
        assert_eq!(code, KSFT_SKIP);
        assert!(
            out.contains("ok 1 pass # SKIP no device\nok 2 fails # SKIP no device\n"),
            "{out}"
        );
    }

    #[test]
    fn panic_fails_only_that_test() {
        let (code, out) = run_capture(&Ok(()), &tests![panics, pass]);
        assert_eq!(code, KSFT_FAIL);
        assert!(out.contains("# panicked at "), "{out}");
        assert!(out.contains("not ok 1 panics\nok 2 pass\n"), "{out}");
    }

    #[test]
    fn errno_checks() {
        let (code, out) = run_capture(&Ok(()), &tests![errno_ok, errno_wrong, errno_succeeded]);
        assert_eq!(code, KSFT_FAIL);
        assert!(out.contains("ok 1 errno_ok\n"), "{out}");
        assert!(
            out.contains("expected EINVAL (22), got EFAULT (14) (slot 3)"),
            "{out}"
        );
        assert!(
            out.contains("expected EEXIST (17), but it succeeded with 7"),
            "{out}"
        );
    }

    #[test]
    fn leftover_child_fails_the_test_and_is_killed() {
        let (code, out) = run_capture(&Ok(()), &tests![leaves_child, pass]);
        assert_eq!(code, KSFT_FAIL);
        assert!(
            out.contains("test left child processes: running child"),
            "{out}"
        );
        assert!(out.contains("not ok 1 leaves_child\nok 2 pass\n"), "{out}");
    }

    #[test]
    fn leaked_fd_fails_the_test() {
        let (code, out) = run_capture(&Ok(()), &tests![leaks_fd]);
        assert_eq!(code, KSFT_FAIL);
        assert!(out.contains("test left file descriptors open"), "{out}");
        assert!(out.contains("/dev/null"), "{out}");
    }
}
