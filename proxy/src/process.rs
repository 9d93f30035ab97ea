//! Process-wide settings, made once at start.

/// Raises the soft open-file limit to the hard one (every connection needs descriptors; the
/// usual soft default of 1024 is far too low for a proxy). Returns the soft limit in effect.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// A write past a file-size limit (RLIMIT_FSIZE) fails with EFBIG instead of killing the
/// process with SIGXFSZ: the access log counts it as a failed write and carries on.
pub fn survive_file_size_limit() {
    // SAFETY: setting a signal's disposition to "ignore" has no other effect.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Files and directories this process creates are private to its user (mode 0600 / 0700):
/// caches, logs and databases hold tokens, client addresses and paths.
pub fn private_files() {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Written beside the file, then renamed over it: a reader or a crash never sees half of it.
pub(crate) fn write_atomically(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
