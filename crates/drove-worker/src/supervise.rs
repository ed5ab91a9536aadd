//! The per-job supervisor: a small process between `drove worker` and a job's command that
//! makes sure no descendant of the command outlives the job or the worker.
//!
//! A process group and `PR_SET_PDEATHSIG` reach only part of a job's tree: a grandchild that
//! calls `setsid` leaves the group, and the death signal reaches only the direct child. So the
//! worker runs each command under `drove __supervise`, which
//! - is a child subreaper (`PR_SET_CHILD_SUBREAPER`): every orphan of the job's tree, however
//!   it detached (background, double fork, `setsid`), becomes its child, so the whole tree is
//!   always "its descendants", found by walking `/proc`;
//! - gets SIGTERM when the worker dies (its own `PR_SET_PDEATHSIG`) and then kills the whole
//!   tree at once with SIGKILL;
//! - on a SIGTERM from a living worker (cancel, timeout, lost lease, shutdown), passes SIGTERM
//!   to the whole tree and SIGKILLs what is left after the grace;
//! - when the command exits, kills whatever it left running (the job is over) and exits with
//!   the command's status (dying by the same signal if the command was killed by one), so the
//!   worker sees exactly what it would have seen without it.
//!
//! It is synchronous and single-threaded: signals are blocked and taken one at a time with
//! `sigwait`, so there is no handler and no race between a signal and the loop.

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, raise, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Supervises `command` (program and arguments); `parent` is the worker's pid. Returns the exit
/// code to exit with (when the command was killed by a signal, it dies by that signal instead).
pub fn supervise(command: &[String], parent: i32, grace: Duration) -> i32 {
    match run(command, parent, grace) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("drove supervisor: {e}");
            127
        }
    }
}

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGCHLD, Signal::SIGALRM] {
        set.add(s);
    }
    set
}

#[allow(unsafe_code)]
fn run(command: &[String], parent: i32, grace: Duration) -> Result<i32, String> {
    let program = command.first().ok_or("no command")?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("cannot become a subreaper: {e}"))?;
    let set = signals();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(|e| format!("cannot block signals: {e}"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .map_err(|e| format!("cannot set the death signal: {e}"))?;
    let me = std::process::id() as i32;
    let mut cmd = std::process::Command::new(program);
    cmd.args(&command[1..]);
    // SAFETY: runs in the forked child before exec; it calls only sigprocmask(2), prctl(2) and
    // getppid(2), which are async-signal-safe, and allocates nothing.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // The blocked mask is inherited across exec: give the command a normal one.
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if nix::unistd::getppid().as_raw() != me {
                return Err(std::io::Error::other("the supervisor exited"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("could not start {program}: {e}"))?;
    let main = Pid::from_raw(child.id() as i32);
    drop(child); // reaped below with waitpid, like every other descendant
    let mut status: Option<WaitStatus> = None;
    // The worker may have died before the death signal was armed.
    let mut orphaned = nix::unistd::getppid().as_raw() != parent;
    if orphaned {
        kill_tree(Signal::SIGKILL);
    }
    loop {
        reap(main, &mut status);
        if status.is_some() {
            // The job is over: nothing it started may go on.
            sweep();
            return Ok(exit_code(status));
        }
        let sig = set.wait().map_err(|e| format!("sigwait: {e}"))?;
        match sig {
            Signal::SIGCHLD => {}
            Signal::SIGALRM => kill_tree(Signal::SIGKILL),
            _ if orphaned || nix::unistd::getppid().as_raw() != parent => {
                // The worker is gone (its death signal): the job runs elsewhere now.
                orphaned = true;
                kill_tree(Signal::SIGKILL);
            }
            _ => {
                // The worker asks the job to stop: SIGTERM to the whole tree, SIGKILL after
                // the grace.
                kill_tree(Signal::SIGTERM);
                let secs = grace.as_millis().div_ceil(1_000).clamp(1, u128::from(u32::MAX));
                nix::unistd::alarm::set(secs as u32);
            }
        }
    }
}

/// Reaps every exited child (orphans adopted by us included); records the command's status.
fn reap(main: Pid, status: &mut Option<WaitStatus>) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(s) => {
                if s.pid() == Some(main) && matches!(s, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                    *status = Some(s);
                }
            }
        }
    }
}

/// Kills every descendant with SIGKILL and reaps them, until none is left (a process forking
/// while we kill is found on the next pass; a killed one cannot fork).
fn sweep() {
    for _ in 0..1_000 {
        if descendants().is_empty() {
            return;
        }
        kill_tree(Signal::SIGKILL);
        // Wait for at least one to go, then reap whatever has.
        let _ = waitpid(None, None);
        while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if s == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

fn kill_tree(sig: Signal) {
    for pid in descendants() {
        let _ = kill(pid, sig);
    }
}

/// Every process whose chain of parents leads to us, read from `/proc`.
fn descendants() -> Vec<Pid> {
    let me = std::process::id() as i32;
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses: read after the last ')'.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut fields = after.split_whitespace();
        let state = fields.next();
        let Some(ppid) = fields.next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if state == Some("Z") {
            continue; // already dead, waiting to be reaped
        }
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![me];
    while let Some(p) = stack.pop() {
        if let Some(kids) = children.get(&p) {
            for &k in kids {
                out.push(Pid::from_raw(k));
                stack.push(k);
            }
        }
    }
    out
}

/// The code to exit with; dies by the command's signal when it was killed by one.
fn exit_code(status: Option<WaitStatus>) -> i32 {
    match status {
        Some(WaitStatus::Exited(_, code)) => code,
        Some(WaitStatus::Signaled(_, sig, _)) => {
            let mut one = SigSet::empty();
            one.add(sig);
            // Restore the default action and unblock, then take the same death.
            let _ = default_action(sig);
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&one), None);
            let _ = raise(sig);
            128 + sig as i32
        }
        _ => 1,
    }
}

/// Restores a signal's default action (we never installed handlers, but be exact).
#[allow(unsafe_code)]
fn default_action(sig: Signal) -> nix::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, sigaction};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_DFL runs no code of ours in signal context.
    unsafe { sigaction(sig, &dfl) }.map(|_| ())
}
