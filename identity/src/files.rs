//! Files others watch (CRLs, certificates, keys) are replaced whole: a reader sees the old file
//! or the new one, never half of one, and a crash leaves one of the two.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::IdentityError;

/// Readable by the owner only: private keys, PINs.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Readable by all: certificates, CRLs.
pub const PUBLIC_FILE_MODE: u32 = 0o644;

/// Writes `data` to `path` atomically: a new temp file in the same directory created with
/// `mode` (so a key is never readable by others, not even briefly), fsync, rename over `path`,
/// fsync of the directory. On failure the temp file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), IdentityError> {
    use std::os::unix::fs::OpenOptionsExt;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| IdentityError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        })?;
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(IdentityError::io(&tmp))?;
        file.write_all(data).map_err(IdentityError::io(&tmp))?;
        file.sync_all().map_err(IdentityError::io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(IdentityError::io(path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    if let Ok(d) = std::fs::File::open(dir) {
        // Best effort: the rename is already visible; this makes it durable.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn replaces_whole_with_the_mode_asked() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        write_atomic(&key, b"one", PRIVATE_FILE_MODE).unwrap();
        write_atomic(&key, b"two", PRIVATE_FILE_MODE).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"two");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let crl = dir.path().join("crl.pem");
        write_atomic(&crl, b"crl", PUBLIC_FILE_MODE).unwrap();
        let mode = std::fs::metadata(&crl).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o600, 0o600);
        // Nothing left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn failure_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a directory fails.
        let target = dir.path().join("taken");
        std::fs::create_dir(target.join("x").parent().unwrap()).unwrap();
        std::fs::create_dir(target.join("x")).unwrap();
        let err = write_atomic(&target, b"data", PUBLIC_FILE_MODE).unwrap_err();
        assert!(matches!(err, IdentityError::Io { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/dir/file");
        assert!(write_atomic(&missing, b"data", PUBLIC_FILE_MODE).is_err());
    }
}
