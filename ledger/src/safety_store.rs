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

pub struct SafetyStore {
    db: DB,
    path: PathBuf,
}

impl SafetyStore {
    pub fn open(path: &Path) -> Result<SafetyStore, StorageError> {
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

    /// Every record, for restoring the replica after a restart.
    pub fn records(&self) -> Result<Vec<KeyValue>, StorageError> {
        let mut records = Vec::new();
        for entry in self.db.iterator(IteratorMode::Start) {
            let (key, value) = entry.map_err(|source| self.rocks(source))?;
            records.push((key.to_vec(), value.to_vec()));
        }
        Ok(records)
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
}
