//! Reading and writing files so that errors name the file and a failure never leaves a
//! half-written one behind.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to a temporary file beside `path`, then renames it into place. On any failure
/// the temporary file is removed and `path` is untouched.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    check_writable(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    // A temporary file is private (0600); the finished file gets the mode any new file gets
    // (0666 less the umask), as a file written directly would.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut temp = builder
        .tempfile_in(dir)
        .map_err(|e| Error::file(path, format!("cannot create a file there: {e}")))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| Error::file(path, format!("write failed: {e}")))?;
    temp.persist(path).map_err(|e| {
        Error::file(
            path,
            format!("cannot move the finished file into place: {}", e.error),
        )
    })?;
    Ok(())
}

/// Fails early, naming the file, when `path` cannot be an output file: its directory does not
/// exist or it is a directory itself. Commands call this before any long computation.
pub fn check_writable(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::file(path, "the directory does not exist"));
    }
    if path.is_dir() {
        return Err(Error::file(path, "is a directory"));
    }
    Ok(())
}

/// Reads a whole file, with the error naming the file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    if path.is_dir() {
        return Err(Error::file(path, "is a directory, not a file"));
    }
    std::fs::read(path).map_err(|e| Error::file(path, e))
}
