//! Process hardening: no core dumps, so key material never lands on disk in a crash; the
//! free-space query behind failing closed on a full state directory; the effective user id.
//! The only unsafe code of the daemon lives here; it uses nothing of the crate, and every part
//! may use it.
#![allow(unsafe_code)]

/// A system call that failed, with the error the system gave.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {source}")]
pub struct SyscallError {
    /// The call, as `setrlimit(RLIMIT_CORE)`.
    pub call: &'static str,
    /// The error.
    pub source: std::io::Error,
}

fn last_error(call: &'static str) -> SyscallError {
    SyscallError { call, source: std::io::Error::last_os_error() }
}

/// Disables core dumps and ptrace attach by non-root (PR_SET_DUMPABLE 0, RLIMIT_CORE 0).
/// A failure is for a warning; the daemon still runs.
pub fn no_core_dumps() -> Result<(), SyscallError> {
    let limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &limit) } != 0 {
        return Err(last_error("setrlimit(RLIMIT_CORE)"));
    }
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes integer arguments only and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(last_error("prctl(PR_SET_DUMPABLE)"));
    }
    Ok(())
}

/// Detaches from the terminal like knockd's `-d` (fork, setsid, chdir /, stdio to /dev/null).
/// Must run before any thread starts.
pub fn daemonize() -> Result<(), SyscallError> {
    // SAFETY: daemon(3) forks and the parent exits; it is called before this process starts any
    // thread, so the child has no other thread whose locks or state a fork could tear.
    if unsafe { libc::daemon(0, 0) } != 0 {
        return Err(last_error("daemon(3)"));
    }
    Ok(())
}

/// The effective user id: admin commands run by root hand what they create to the daemon's
/// account (crate::state::handover).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Bytes free for a privileged writer (`f_bfree * f_frsize` of statvfs(3)) in the file system
/// that holds `path`.
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` points to writable memory of the
    // size of a statvfs struct; both outlive the call.
    if unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs is made of integers, for which all-zero bytes are valid, and it succeeded.
    let st = unsafe { st.assume_init() };
    // fsblkcnt_t and c_ulong are narrower than u64 on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(st.f_bfree), u64::from(st.f_frsize));
    Ok(blocks.saturating_mul(size))
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_bytes_of_a_real_and_a_missing_directory() {
        assert!(super::free_bytes(&std::env::temp_dir()).is_ok());
        assert!(super::free_bytes(std::path::Path::new("/nonexistent/knockd")).is_err());
    }
}
