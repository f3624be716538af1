//! The scheduling priority (nice value) of the engine's threads.
//!
//! On a machine whose cores the HTTP and gRPC front end shares with the
//! engine, the front end's threads take turns with the instance threads, so a
//! batch computes in longer wall time than its CPU time, and under overload
//! the front end spends the cores refusing requests while the queue waits.
//! A lower nice value for the instance threads lets each keep a core while
//! it has work.
//!
//! Only the instance threads take it. ONNX Runtime's further intra-op
//! threads keep the server's priority: an engine that outranked the front
//! end on every core would leave it no core while a batch computes, and the
//! next batch would not be queued when this one ends. With a 2-thread heavy
//! MLP on 2 cores, serving ran at 13,500 rows/s with both engine threads at
//! nice -10, against 20,000 with both at 0 and 21,000 with the instance
//! thread alone at -10.
#![allow(unsafe_code)]

use std::io;

/// Sets the calling thread's nice value (-20 to 19). A value below the
/// current one needs CAP_SYS_NICE (or a permitting RLIMIT_NICE); without it
/// this fails with the system's permission error and changes nothing. There
/// is no way back down without that privilege, so callers set it on a thread
/// of its own that ends when its work is started.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: on Linux, PRIO_PROCESS with a thread id changes that one
    // thread; gettid has no preconditions and both calls take integers.
    let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if done == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The calling thread's nice value.
pub fn thread_nice() -> io::Result<i32> {
    // SAFETY: getpriority may legitimately return -1, so errno is cleared
    // first and read after, as its manual page prescribes; errno is
    // thread-local.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
        let error = io::Error::last_os_error();
        if nice == -1 && error.raw_os_error() != Some(0) { Err(error) } else { Ok(nice) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_and_the_threads_it_starts_take_the_value() {
        // A thread of its own: raising a nice value cannot be undone without
        // privilege, and the test runner's thread must keep its own.
        let before = thread_nice().unwrap();
        let (own, child) = std::thread::spawn(move || {
            let target = (before + 3).min(19);
            set_thread_nice(target).unwrap();
            let child = std::thread::spawn(|| thread_nice().unwrap()).join().unwrap();
            (thread_nice().unwrap(), child)
        })
        .join()
        .unwrap();
        assert_eq!(own, (before + 3).min(19));
        assert_eq!(child, own, "a thread started after the change inherits it");
        assert_eq!(thread_nice().unwrap(), before, "other threads keep theirs");
    }
}
