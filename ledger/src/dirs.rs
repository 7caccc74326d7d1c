//! Directories whose names survive a power cut.
//!
//! Creating a directory writes its name into the directory that holds it; until that parent is
//! synced, a power cut can take the name away, and with it everything inside, however durably
//! each file in it was written. RocksDB creates its directory when it is missing but syncs only
//! the files inside it, so a node's `safety/` or `data/` could vanish whole at the first power
//! cut after `tetrad init` (found by the power-cut fault campaign, 2026-12-01).

use std::io;
use std::path::Path;

/// Syncs a directory, so the names created, renamed or removed in it survive a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn holder(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates `path` and any missing parents, and syncs the directory holding each of them (also
/// when `path` already existed: a directory left by a run that crashed before this sync, or
/// created by an older version, is made durable now). Returns when every name is on disk.
pub fn create_dir_synced(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut next = Some(path);
    while let Some(dir) = next {
        if dir.as_os_str().is_empty() || dir.exists() {
            break;
        }
        missing.push(dir);
        next = dir.parent();
    }
    for dir in missing.iter().rev() {
        match std::fs::create_dir(dir) {
            Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
            _ => {}
        }
        sync_dir(holder(dir))?;
    }
    if missing.is_empty() {
        sync_dir(holder(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    #[test]
    fn nested_missing_directories_are_created_and_an_existing_one_is_accepted() {
        let scratch = ScratchDir::new("dirs").expect("scratch");
        let deep = scratch.join("a").join("b").join("c");
        create_dir_synced(&deep).expect("create");
        assert!(deep.is_dir());
        create_dir_synced(&deep).expect("again");
        let file = scratch.join("file");
        std::fs::write(&file, b"x").expect("file");
        assert!(create_dir_synced(&file.join("d")).is_err(), "a file in the way is an error");
    }
}
