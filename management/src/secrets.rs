//! Secrets at rest: the data directory is private to nb-management's user (0700), its files
//! 0600, and a generated admin token goes to a private file, never to a terminal or a log.

use std::fs::Permissions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Files and directories this process creates are private to its user.
pub fn private_files() {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates the data directory if needed, and makes it 0700 (also one created by an older
/// version with the default mode).
pub fn private_data_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::set_permissions(dir, Permissions::from_mode(0o700)))
        .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))
}

/// The SQLite database and its journal files are 0600, whatever mode they were created with.
pub fn private_database_files(dir: &Path) {
    for name in [
        "management.db",
        "management.db-wal",
        "management.db-shm",
        "admin-token",
    ] {
        let path = dir.join(name);
        if path.exists() {
            if let Err(e) = std::fs::set_permissions(&path, Permissions::from_mode(0o600)) {
                tracing::warn!("cannot make {} private: {e}", path.display());
            }
        }
    }
}

/// Writes a generated admin token to `admin-token` in `dir`, mode 0600.
pub fn write_admin_token(dir: &Path, token: &str) -> Result<PathBuf, String> {
    let path = dir.join("admin-token");
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes()))
        .map_err(|e| format!("cannot write the admin token to {}: {e}", path.display()))?;
    Ok(path)
}

/// A secret kept in a file: its first line, trimmed.
pub fn read_secret(path: &Path, flag: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return Err(format!("{flag} {}: the file is empty", path.display()));
    }
    Ok(secret)
}
