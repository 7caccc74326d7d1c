//! The validator schedule shared by the node's tasks, and the node's own consensus keys across
//! a rotation.
//!
//! Key files in a home: `consensus_key.json` (the key in use) and, during a rotation,
//! `consensus_key.next.json` (written 0600 by `tetrad keys rotate` before it submits). The node
//! signs heights below the activation height with the current key and heights from it on with
//! the next one. Once no height the old key signs can still need a signature (the low watermark
//! passed the activation), the old file is overwritten with zeros and the next file renamed over
//! it: the old secret is gone from disk. A restart at any point in between finds the right keys
//! from the two files and the validator registry.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use tetrad_consensus::{Height, SecretKey, ValidatorIndex, ValidatorSchedule};
use tetrad_genesis::KeyFile;
use tetrad_ledger::ValidatorRegistry;

use crate::config::Home;

/// The current validator schedule (with its horizon), swapped whole when it changes.
#[derive(Clone)]
pub struct SharedSchedule(Arc<RwLock<Arc<ValidatorSchedule>>>);

impl SharedSchedule {
    pub fn new(schedule: ValidatorSchedule) -> SharedSchedule {
        SharedSchedule(Arc::new(RwLock::new(Arc::new(schedule))))
    }

    pub fn get(&self) -> Arc<ValidatorSchedule> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, schedule: Arc<ValidatorSchedule>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = schedule;
    }
}

/// This node's consensus keys: the current file and, during a rotation, the next one.
pub struct OwnKeys {
    pub current: KeyFile,
    pub next: Option<KeyFile>,
}

impl OwnKeys {
    pub fn load(home: &Home) -> Result<OwnKeys> {
        let current = KeyFile::read(&home.consensus_key())?;
        let next_path = home.next_consensus_key();
        let next = if next_path.exists() { Some(KeyFile::read(&next_path)?) } else { None };
        Ok(OwnKeys { current, next })
    }

    fn secrets(&self) -> impl Iterator<Item = &SecretKey> {
        std::iter::once(&self.current.secret).chain(self.next.iter().map(|key| &key.secret))
    }

    /// The validator these keys belong to, and the key of every epoch of it that this node
    /// holds: `(first height, key)`. `None`: a full node.
    pub fn keyring(
        &self,
        registry: &ValidatorRegistry,
    ) -> Option<(ValidatorIndex, Vec<(Height, SecretKey)>)> {
        let index = (0..registry.n()).find(|&index| {
            registry
                .epochs
                .iter()
                .any(|(_, keys)| self.secrets().any(|secret| secret.public_key() == keys[index]))
        })?;
        let mut keyring: Vec<(Height, SecretKey)> = Vec::new();
        for (first, keys) in &registry.epochs {
            if let Some(secret) = self.secrets().find(|secret| secret.public_key() == keys[index])
                && keyring.last().is_none_or(|(_, last)| last.public_key() != secret.public_key())
            {
                keyring.push((*first, secret.clone()));
            }
        }
        Some((ValidatorIndex(index as u16), keyring))
    }
}

/// The first height `next`'s key signs for `index`, if the registry has scheduled it.
pub fn activation_of(registry: &ValidatorRegistry, index: ValidatorIndex, next: &KeyFile) -> Option<Height> {
    registry
        .epochs
        .iter()
        .find(|(_, keys)| keys.get(index.as_usize()) == Some(&next.public_key()))
        .map(|(first, _)| *first)
}

/// Erases the old key: overwrites `consensus_key.json` with zeros (synced), then renames the
/// next key over it (atomic), then syncs the directory.
pub fn finish_rotation(home: &Home) -> Result<()> {
    let current = home.consensus_key();
    let next = home.next_consensus_key();
    if !next.exists() {
        return Ok(());
    }
    overwrite_with_zeros(&current).with_context(|| format!("{}: erasing the old key", current.display()))?;
    std::fs::rename(&next, &current)
        .with_context(|| format!("renaming {} to {}", next.display(), current.display()))?;
    std::fs::File::open(&home.dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("{}: sync", home.dir.display()))?;
    Ok(())
}

fn overwrite_with_zeros(path: &Path) -> std::io::Result<()> {
    let length = std::fs::metadata(path)?.len() as usize;
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(&vec![0u8; length])?;
    file.sync_all()
}
