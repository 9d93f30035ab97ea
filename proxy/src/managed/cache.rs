//! The last service list received from management, kept on disk so that a restart while
//! management is unreachable still serves it.

use std::path::Path;

use nb_api::ServicesUpdate;

pub fn load(path: &Path) -> Result<Option<ServicesUpdate>, String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| format!("{} is not a services cache: {e}", path.display()))
}

/// Replaces the file whole, so that a crash never leaves half of it.
pub fn save(path: &Path, update: &ServicesUpdate) -> Result<(), String> {
    let body = serde_json::to_vec_pretty(update).map_err(|e| e.to_string())?;
    crate::process::write_atomically(path, &body)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tells_missing_from_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("services.json");
        assert_eq!(load(&path).unwrap(), None);
        let update = ServicesUpdate {
            revision: 7,
            services: vec![],
            key_salt: Some("s".into()),
        };
        save(&path, &update).unwrap();
        assert_eq!(load(&path).unwrap(), Some(update));
        std::fs::write(&path, b"{").unwrap();
        assert!(load(&path).unwrap_err().contains("not a services cache"));
    }
}
