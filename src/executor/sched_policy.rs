//! The scheduling policy a worker thread asks for at its start
//! ([`Builder::batch_scheduling`](crate::Builder::batch_scheduling)).
//!
//! On Linux, `SCHED_BATCH`: the thread is scheduled like any other by its
//! nice value, but a wake-up of it never preempts the thread running on
//! its core. A pool's workers are woken by the threads that feed them: a
//! server's I/O thread submits and goes on reading requests. Where the
//! kernel puts the woken worker on the submitter's core (on the VM
//! docs/BENCHMARKS.md measures, nearly always), a normal worker preempts
//! the submitter at once, runs its task, sleeps, and the submitter's next
//! submit wakes it again: issue 21 counted 147,000-258,000 involuntary
//! switches of the I/O thread in a 5 s `wrk` run in the slow runs, and
//! under 7,100 with batch workers. Elsewhere, a no-op.

/// Whether [`batch_this_thread`] asks for anything here: Linux, outside
/// loom and Miri. Where it does not, [`takes`] says no without starting a
/// thread, so the option leaves the pool's idle rules alone too
/// (`Config::batch_rules`), as it does where the policy is refused.
const AVAILABLE: bool = cfg!(all(target_os = "linux", not(loom), not(miri)));

/// Asks for `SCHED_BATCH` for the calling thread, if it runs under the
/// normal policy: a thread the process made real-time (or idle) keeps its
/// policy. Best effort: a refusal (a seccomp filter, say) leaves the thread
/// as it was. Returns whether the thread now runs under a policy whose
/// wake-ups never preempt (`SCHED_BATCH`, or `SCHED_IDLE`, which it kept).
#[cfg(all(target_os = "linux", not(loom), not(miri)))]
pub(crate) fn batch_this_thread() -> bool {
    let raw = raw_policy();
    let policy = policy_of(raw);
    if policy != libc::SCHED_OTHER {
        return is_quiet(policy);
    }
    // The thread's reset-on-fork flag, kept (asked for without it, the
    // kernel would clear it, or refuse an unprivileged thread).
    let reset_on_fork = raw.map_or(0, |p| p & SCHED_RESET_ON_FORK);
    set_policy(libc::SCHED_BATCH | reset_on_fork, 0)
}

/// The flag a policy may carry (`sched(7)`): children start under the
/// normal policy. Not a policy of its own; `libc` does not name it.
#[cfg(all(target_os = "linux", not(loom), not(miri)))]
const SCHED_RESET_ON_FORK: libc::c_int = 0x4000_0000;

/// The calling thread's policy as the kernel gives it (with
/// [`SCHED_RESET_ON_FORK`] if set); `None` if the call fails. Through the
/// system call itself: musl's wrapper is a stub that always fails
/// (`ENOSYS`), and glibc's is only the call.
#[cfg(all(target_os = "linux", not(loom), not(miri)))]
fn raw_policy() -> Option<libc::c_int> {
    // SAFETY: reads the calling thread's policy (pid 0); touches no memory
    // of ours.
    let raw = unsafe { libc::syscall(libc::c_long::from(libc::SYS_sched_getscheduler), 0) };
    libc::c_int::try_from(raw).ok().filter(|&p| p >= 0)
}

/// The policy in `raw` without [`SCHED_RESET_ON_FORK`]; -1 if unknown.
#[cfg(all(target_os = "linux", not(loom), not(miri)))]
fn policy_of(raw: Option<libc::c_int>) -> libc::c_int {
    raw.map_or(-1, |p| p & !SCHED_RESET_ON_FORK)
}

/// Puts the calling thread under `policy` at `priority`; whether that was
/// granted. Through the system call, as [`raw_policy`].
#[cfg(all(target_os = "linux", not(loom), not(miri)))]
pub(crate) fn set_policy(policy: libc::c_int, priority: libc::c_int) -> bool {
    // SAFETY: all zeros is a valid `sched_param` (integers and, on musl,
    // private padding, which is why it is not built field by field).
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = priority;
    // SAFETY: `param` is a valid `sched_param` that outlives the call,
    // which only reads it; pid 0 is the calling thread alone.
    let done = unsafe {
        libc::syscall(
            libc::c_long::from(libc::SYS_sched_setscheduler),
            0,
            policy,
            &raw const param,
        )
    };
    done == 0
}

/// Elsewhere (and under loom and Miri, which cannot make the call):
/// nothing to ask for, and no such policy.
#[cfg(not(all(target_os = "linux", not(loom), not(miri))))]
pub(crate) fn batch_this_thread() -> bool {
    false
}

/// Whether a worker the calling thread starts now would run under a policy
/// whose wake-ups never preempt, once it asked for `SCHED_BATCH`: asked by
/// a throwaway thread, which inherits the caller's policy as a worker does
/// and meets the same filters. False where there is no such policy (then
/// no thread is started). Where no thread can start just now, the caller's
/// own policy answers: the normal one or a quiet one, yes; real-time, no.
pub(crate) fn takes() -> bool {
    AVAILABLE
        && match std::thread::Builder::new()
            .name("sched-probe".into())
            .spawn(batch_this_thread)
        {
            Ok(probe) => probe.join().unwrap_or(false),
            Err(_) => callers_policy_allows(),
        }
}

/// Whether the calling thread's policy is one a worker started by it would
/// leave for `SCHED_BATCH` (the normal one) or keep as a quiet one.
#[cfg(all(target_os = "linux", not(loom), not(miri)))]
fn callers_policy_allows() -> bool {
    let policy = policy_of(raw_policy());
    policy == libc::SCHED_OTHER || is_quiet(policy)
}

/// Whether `policy`'s wake-ups never preempt: `SCHED_BATCH`, `SCHED_IDLE`.
#[cfg(all(target_os = "linux", not(loom), not(miri)))]
fn is_quiet(policy: libc::c_int) -> bool {
    policy == libc::SCHED_BATCH || policy == libc::SCHED_IDLE
}

/// Elsewhere: no such policy.
#[cfg(not(all(target_os = "linux", not(loom), not(miri))))]
fn callers_policy_allows() -> bool {
    false
}
