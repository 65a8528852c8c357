//! Process hardening: no core dumps, so key material never lands on disk in a crash.
//! The only unsafe code of the daemon lives here.
#![allow(unsafe_code)]

/// Disables core dumps and ptrace attach by non-root (PR_SET_DUMPABLE 0, RLIMIT_CORE 0).
/// Failures are returned as text for a warning; the daemon still runs.
pub fn no_core_dumps() -> Result<(), String> {
    let limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &limit) } != 0 {
        return Err(format!("setrlimit(RLIMIT_CORE): {}", std::io::Error::last_os_error()));
    }
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes integer arguments only and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!("prctl(PR_SET_DUMPABLE): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Detaches from the terminal like knockd's `-d` (fork, setsid, chdir /, stdio to /dev/null).
/// Must run before any thread starts.
pub fn daemonize() -> Result<(), String> {
    // SAFETY: daemon(3) forks and the parent exits; it is called before this process starts any
    // thread, so the child has no other thread whose locks or state a fork could tear.
    if unsafe { libc::daemon(0, 0) } != 0 {
        return Err(format!("daemon(3): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
