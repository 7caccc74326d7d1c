//! The consensus safety records of a validator, in their own small RocksDB.
//!
//! They are kept apart from the chain's database on purpose: an operator who deletes a node's
//! `data/` directory to resync it from its peers must not also delete the record of what the
//! validator signed, or it could sign a conflicting message after the resync (the same reason
//! CometBFT keeps `priv_validator_state.json` outside its data).

use std::path::{Path, PathBuf};

use rocksdb::{DB, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::storage::StorageError;

/// A raw key and value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Keys of the node's own notes about the store (who it belongs to) start with this byte;
/// consensus records never do (their keys start with an ASCII letter), and [`SafetyStore::records`]
/// leaves them out.
const NOTE_PREFIX: u8 = 0xff;

fn note_key(name: &str) -> Vec<u8> {
    let mut key = vec![NOTE_PREFIX];
    key.extend_from_slice(name.as_bytes());
    key
}

pub struct SafetyStore {
    db: DB,
    path: PathBuf,
}

impl SafetyStore {
    pub fn open(path: &Path) -> Result<SafetyStore, StorageError> {
        // RocksDB would create a missing directory without syncing its name (crate::dirs): a
        // power cut could then take every record of what this validator signed.
        crate::dirs::create_dir_synced(path)
            .map_err(|source| StorageError::Io { path: path.to_path_buf(), source })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_max_background_jobs(1);
        options.set_write_buffer_size(4 << 20);
        let db = DB::open(&options, path)
            .map_err(|source| StorageError::Rocks { path: path.to_path_buf(), source })?;
        Ok(SafetyStore { db, path: path.to_path_buf() })
    }

    fn rocks(&self, source: rocksdb::Error) -> StorageError {
        StorageError::Rocks { path: self.path.clone(), source }
    }

    /// Writes records in one synced batch: durable before the messages that depend on them
    /// leave the node. `puts` are key-value pairs; `deletes` are `[from, to)` ranges.
    pub fn write(&self, puts: &[KeyValue], deletes: &[KeyValue]) -> Result<(), StorageError> {
        if puts.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (from, to) in deletes {
            batch.delete_range(from, to);
        }
        for (key, value) in puts {
            batch.put(key, value);
        }
        let mut write = WriteOptions::default();
        write.set_sync(true);
        self.db.write_opt(batch, &write).map_err(|source| self.rocks(source))
    }

    /// Every consensus record, for restoring the replica after a restart (the node's notes are
    /// not among them).
    pub fn records(&self) -> Result<Vec<KeyValue>, StorageError> {
        let mut records = Vec::new();
        for entry in self.db.iterator(IteratorMode::Start) {
            let (key, value) = entry.map_err(|source| self.rocks(source))?;
            if key.first() == Some(&NOTE_PREFIX) {
                break;
            }
            records.push((key.to_vec(), value.to_vec()));
        }
        Ok(records)
    }

    /// Whether a safety store exists at `path` (a RocksDB database, not just a directory).
    pub fn exists(path: &Path) -> bool {
        path.join("CURRENT").is_file()
    }

    /// A note the node keeps beside the records (for example whose records these are).
    pub fn note(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get(note_key(name)).map_err(|source| self.rocks(source))
    }

    /// Writes a note, synced.
    pub fn set_note(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.write(&[(note_key(name), value.to_vec())], &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    #[test]
    fn records_survive_a_reopen_and_range_deletes_apply() {
        let dir = ScratchDir::new("safety-store").expect("scratch");
        let path = dir.join("safety");
        {
            let store = SafetyStore::open(&path).expect("open");
            let puts = vec![
                (b"a1".to_vec(), b"x".to_vec()),
                (b"a2".to_vec(), b"y".to_vec()),
                (b"b1".to_vec(), b"z".to_vec()),
            ];
            store.write(&puts, &[]).expect("write");
            store.write(&[], &[(b"a".to_vec(), b"a2".to_vec())]).expect("delete");
        }
        let store = SafetyStore::open(&path).expect("reopen");
        assert_eq!(
            store.records().expect("records"),
            vec![(b"a2".to_vec(), b"y".to_vec()), (b"b1".to_vec(), b"z".to_vec())]
        );
    }

    #[test]
    fn notes_are_kept_apart_from_the_records() {
        let dir = ScratchDir::new("safety-notes").expect("scratch");
        let path = dir.join("safety");
        assert!(!SafetyStore::exists(&path));
        {
            let store = SafetyStore::open(&path).expect("open");
            store.set_note("owner", b"v1").expect("note");
            store.write(&[(b"v".to_vec(), b"7".to_vec())], &[]).expect("write");
        }
        assert!(SafetyStore::exists(&path));
        let store = SafetyStore::open(&path).expect("reopen");
        assert_eq!(store.note("owner").expect("note"), Some(b"v1".to_vec()));
        assert_eq!(store.note("other").expect("note"), None);
        assert_eq!(store.records().expect("records"), vec![(b"v".to_vec(), b"7".to_vec())]);
    }
}
