//! Durable file writes for a node's home: a file is only ever created or replaced by writing a
//! temporary file beside it, syncing it, linking or renaming it into place and syncing the
//! directory. A crash at any instruction leaves either the old file or the new one, complete
//! (and possibly a stale temporary file, which the next write of that file removes); never a
//! torn file under the real name.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Whether [`write_file`] may replace an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Fail with `AlreadyExists` if the file exists (checked atomically by `link`).
    Refuse,
    /// Replace it atomically (`rename`).
    Replace,
}

/// The temporary file a write of `path` goes through: `path` with `.tmp` appended.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

pub use tetrad_ledger::dirs::sync_dir;

/// Writes `bytes` to `path` with permission `mode`: temporary file, fsync, link (or rename)
/// into place, fsync of the directory. When it returns `Ok`, the file is on disk under its name.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32, existing: Existing) -> std::io::Result<()> {
    let temporary = temporary_path(path);
    // A stale temporary file is what a crash during an earlier write of this file left: it was
    // never in place, so nothing depends on it.
    match std::fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    let placed = match existing {
        Existing::Replace => std::fs::rename(&temporary, path),
        // `link` fails if `path` exists: create-new semantics without a window in which a
        // half-written file carries the real name.
        Existing::Refuse => {
            std::fs::hard_link(&temporary, path).and_then(|()| std::fs::remove_file(&temporary))
        }
    };
    if let Err(error) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    sync_dir(parent_dir(path))
}

/// Creates a directory (and its parents) and syncs the directory that holds each of them.
pub fn create_dir(path: &Path) -> std::io::Result<()> {
    tetrad_ledger::dirs::create_dir_synced(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tetrad_ledger::scratch::ScratchDir;

    #[test]
    fn refuse_keeps_the_existing_file_and_replace_swaps_it_whole() {
        let dir = ScratchDir::new("durable").expect("scratch");
        let path = dir.join("file.json");
        write_file(&path, b"one", 0o600, Existing::Refuse).expect("write");
        let error = write_file(&path, b"two", 0o600, Existing::Refuse).expect_err("exists");
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
        assert!(!temporary_path(&path).exists(), "a refused write leaves its temporary file");
        write_file(&path, b"three", 0o600, Existing::Replace).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"three");
    }

    #[test]
    fn a_stale_temporary_file_from_a_crash_is_replaced() {
        let dir = ScratchDir::new("durable-stale").expect("scratch");
        let path = dir.join("file.json");
        std::fs::write(temporary_path(&path), b"torn").expect("stale");
        write_file(&path, b"whole", 0o600, Existing::Refuse).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"whole");
        assert!(!temporary_path(&path).exists());
    }

    #[test]
    fn the_mode_is_set_at_creation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = ScratchDir::new("durable-mode").expect("scratch");
        let path = dir.join("key.json");
        write_file(&path, b"secret", 0o600, Existing::Refuse).expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
