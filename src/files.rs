//! Writing files so that a failure never leaves a half-written one behind.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to a temporary file beside `path`, then renames it into place. On any failure
/// the temporary file is removed and `path` is untouched.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
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
    let mut temp = tempfile::NamedTempFile::new_in(dir)
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

/// Reads a whole file, with the error naming the file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    if path.is_dir() {
        return Err(Error::file(path, "is a directory, not a file"));
    }
    std::fs::read(path).map_err(|e| Error::file(path, e))
}
