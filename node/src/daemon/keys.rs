//! The validator schedule shared by the node's tasks, and the node's own consensus keys across
//! a rotation.
//!
//! Key files in a home (all 0600, all written whole: see `tetrad_genesis::durable`):
//!
//! ```text
//! consensus_key.json           the key in use
//! consensus_key.next.json      during a rotation: the next key, made durable by `tetrad keys
//!                              rotate` before it submits the rotation
//! consensus_key.retired.json   during the swap only: the old key, until it is erased
//! consensus_key.json.tmp       during the swap only, when the next key is only in memory
//! ```
//!
//! The node signs heights below the activation height with the current key and heights from it
//! on with the next one. Once the replica no longer holds the old key (its low watermark passed
//! the activation: everything the old key signed is final), [`settle`] swaps the files:
//!
//! 1. link `consensus_key.json` as `consensus_key.retired.json`, sync the directory;
//! 2. rename `consensus_key.next.json` over `consensus_key.json` (or, if the next file is gone,
//!    write the key the replica signs with from memory: temporary file, sync, rename), sync the
//!    directory;
//! 3. overwrite the retired file with zeros, sync it, unlink it, sync the directory.
//!
//! The old key stays on disk until the new one is durably in place, and every state a crash
//! can leave is recognisable: [`OwnKeys::load`] takes every key it finds (current, next,
//! retired, temporary) and the validator registry picks the ones that sign; a file that is being
//! erased (zeros) is skipped; the next [`settle`] finishes the swap from wherever it stopped.
//! Nothing here deletes a key the registry schedules after the key in use.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use tetrad_consensus::{Height, PublicKey, SecretKey, ValidatorIndex, ValidatorSchedule};
use tetrad_genesis::{KeyFile, durable};
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

/// This node's consensus keys: every key file of the home that holds a key.
pub struct OwnKeys {
    /// Distinct keys, the one in `consensus_key.json` first (when it holds one).
    pub keys: Vec<KeyFile>,
    /// What loading found that the operator should hear of (an interrupted swap).
    pub notes: Vec<String>,
}

impl OwnKeys {
    /// Loads every key of the home. `consensus_key.json` and `consensus_key.next.json` must
    /// parse when they exist (they are only ever written whole); `consensus_key.json` may be
    /// missing or zeroed only when a next key stands in for it (an erase that an earlier
    /// version of this program began in place and a crash interrupted). The retired and
    /// temporary files of a swap are taken when they parse and skipped when they are being
    /// erased.
    pub fn load(home: &Home) -> Result<OwnKeys> {
        let mut notes = Vec::new();
        let next_path = home.next_consensus_key();
        let next = if next_path.exists() {
            Some(KeyFile::read(&next_path).with_context(|| {
                format!(
                    "{} holds the next key of a key rotation; it must not be deleted or edited \
                     (restore it from a backup if it was damaged)",
                    next_path.display()
                )
            })?)
        } else {
            None
        };
        let current_path = home.consensus_key();
        let current = match KeyFile::read(&current_path) {
            Ok(key) => Some(key),
            Err(_) if next.is_some() && is_erased(&current_path) => {
                notes.push(format!(
                    "{} was being erased when the node stopped; the next key takes its place",
                    current_path.display()
                ));
                None
            }
            Err(error) => return Err(error.into()),
        };
        let mut keys: Vec<KeyFile> = current.into_iter().chain(next).collect();
        for path in [home.retired_consensus_key(), durable::temporary_path(&current_path)] {
            if !path.exists() {
                continue;
            }
            match KeyFile::read(&path) {
                Ok(key) => {
                    notes.push(format!("{}: a key swap was interrupted; it resumes", path.display()));
                    keys.push(key);
                }
                Err(_) => notes.push(format!("{}: partly erased; it will be removed", path.display())),
            }
        }
        let mut distinct: Vec<KeyFile> = Vec::new();
        for key in keys {
            if distinct.iter().all(|kept| kept.public_key() != key.public_key()) {
                distinct.push(key);
            }
        }
        Ok(OwnKeys { keys: distinct, notes })
    }

    pub fn secrets(&self) -> impl Iterator<Item = &SecretKey> {
        self.keys.iter().map(|key| &key.secret)
    }

    /// The validator these keys belong to, and the key of every epoch of it that this node
    /// holds and still needs: `(first height, key)`. A key whose successor signs from
    /// `low + 1` on or earlier is not needed any more (everything it signed is final), as the
    /// replica forgets it at a stable checkpoint. `None`: no key of this home is in the registry.
    pub fn keyring(
        &self,
        registry: &ValidatorRegistry,
        low: Height,
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
        while keyring.len() > 1 && keyring[1].0 <= low.next() {
            keyring.remove(0);
        }
        Some((ValidatorIndex(index as u16), keyring))
    }
}

/// Whether `path` holds only zero bytes (an erase in place that was interrupted).
fn is_erased(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.iter().all(|&byte| byte == 0))
}

/// The first height `next`'s key signs for `index`, if the registry has scheduled it.
pub fn activation_of(registry: &ValidatorRegistry, index: ValidatorIndex, next: &KeyFile) -> Option<Height> {
    registry
        .epochs
        .iter()
        .find(|(_, keys)| keys.get(index.as_usize()) == Some(&next.public_key()))
        .map(|(first, _)| *first)
}

/// The keys of validator `index` in the epochs before `key`'s: once `key` is the only one the
/// replica holds, these are retired and may be erased. Empty if the registry does not know `key`.
pub fn earlier_keys(registry: &ValidatorRegistry, index: ValidatorIndex, key: &PublicKey) -> Vec<PublicKey> {
    let position = registry.epochs.iter().position(|(_, keys)| keys.get(index.as_usize()) == Some(key));
    let Some(position) = position else { return Vec::new() };
    registry.epochs[..position]
        .iter()
        .filter_map(|(_, keys)| keys.get(index.as_usize()).copied())
        .filter(|earlier| earlier != key)
        .collect()
}

/// A point in [`settle`] just before it changes something on disk; tests stop there to see what
/// a crash at that instruction leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapStep {
    LinkRetired,
    SyncAfterLink,
    RenameNext,
    WriteFromMemory,
    SyncAfterRename,
    RemoveNext,
    SyncAfterRemoveNext,
    ZeroOld,
    UnlinkOld,
    SyncAfterUnlink,
}

/// Whether the key files still need [`settle`] for a replica that signs with `keep` only.
pub fn needs_settle(home: &Home, keep: &SecretKey) -> bool {
    let keep = keep.public_key();
    holds(&home.consensus_key()) != Some(keep)
        || holds(&home.next_consensus_key()) == Some(keep)
        || holds(&durable::temporary_path(&home.next_consensus_key())) == Some(keep)
        || home.retired_consensus_key().exists()
        || durable::temporary_path(&home.consensus_key()).exists()
}

/// What [`settle`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// `consensus_key.json` holds the key in use; nothing else is left.
    Done,
    /// A file holds a key that the registry does not show as retired (yet): nothing was
    /// touched. It runs again when the registry knows more (for example after a resync).
    NotYet(String),
}

/// Finishes a rotation on disk for a replica that signs with `keep` only (everything its old
/// keys signed is final): `consensus_key.json` comes to hold `keep` durably, then the old key is
/// erased. Safe to run again after a crash at any instruction. Only keys in `earlier` (the
/// validator's keys of epochs before `keep`'s) are ever retired or erased: a file that holds
/// any other key is left alone.
pub fn settle(home: &Home, keep: &SecretKey, earlier: &[PublicKey]) -> Result<Settled> {
    settle_with(home, keep, earlier, &mut |_| Ok(()))
}

fn settle_with(
    home: &Home,
    keep: &SecretKey,
    earlier: &[PublicKey],
    before: &mut dyn FnMut(SwapStep) -> std::io::Result<()>,
) -> Result<Settled> {
    let current = home.consensus_key();
    let next = home.next_consensus_key();
    let retired = home.retired_consensus_key();
    let temporary = durable::temporary_path(&current);
    let keep_public = keep.public_key();
    let sync = |step, before: &mut dyn FnMut(SwapStep) -> std::io::Result<()>| -> Result<()> {
        before(step)?;
        durable::sync_dir(&home.dir).with_context(|| format!("{}: sync", home.dir.display()))
    };
    // What may go: the key in use (a copy) and retired keys; a file being erased holds none.
    let erasable = |path: &Path| match holds(path) {
        Some(key) => key == keep_public || earlier.contains(&key),
        None => true,
    };
    for path in [&current, &retired, &temporary] {
        if path.exists() && !erasable(path) && !(path == &retired && same_file(&retired, &current)) {
            let key = holds(path).map(|key| key.to_string()).unwrap_or_default();
            return Ok(Settled::NotYet(format!(
                "{} holds {key}, which the validator registry does not show as a retired key of this \
                 validator",
                path.display()
            )));
        }
    }
    if holds(&current) != Some(keep_public) {
        // 1. The old key stays reachable as the retired file while the new one moves in.
        if retired.exists() && !same_file(&retired, &current) {
            remove_copy(home, &retired, before)?;
        }
        if !retired.exists() && holds(&current).is_some() {
            before(SwapStep::LinkRetired)?;
            std::fs::hard_link(&current, &retired)
                .with_context(|| format!("linking {} as {}", current.display(), retired.display()))?;
            sync(SwapStep::SyncAfterLink, before)?;
        }
        // 2. The new key under the current name, in one atomic step.
        if holds(&next) == Some(keep_public) {
            before(SwapStep::RenameNext)?;
            std::fs::rename(&next, &current)
                .with_context(|| format!("renaming {} to {}", next.display(), current.display()))?;
        } else {
            before(SwapStep::WriteFromMemory)?;
            KeyFile { secret: keep.clone() }.write_replacing(&current)?;
        }
        sync(SwapStep::SyncAfterRename, before)?;
    }
    // 3. The new key is durable under its name: remove the copies, erase the old key.
    if holds(&next) == Some(keep_public) {
        before(SwapStep::RemoveNext)?;
        std::fs::remove_file(&next).with_context(|| format!("{}: remove", next.display()))?;
        sync(SwapStep::SyncAfterRemoveNext, before)?;
    }
    if retired.exists() {
        remove_copy(home, &retired, before)?;
    }
    if temporary.exists() {
        remove_copy(home, &temporary, before)?;
    }
    // A copy of the next key that `keys rotate` left when it was killed between linking the
    // next file and removing its temporary one: once that key or an older one, it goes (a
    // temporary file with another key is a rotation being written; it is not touched).
    let next_temporary = durable::temporary_path(&next);
    if holds(&next_temporary).is_some_and(|key| key == keep_public || earlier.contains(&key)) {
        remove_copy(home, &next_temporary, before)?;
    }
    Ok(Settled::Done)
}

/// Removes a leftover key file: only its name when it is another name of the current or the
/// next key file (a link: zeroing it would zero those), otherwise erased.
fn remove_copy(
    home: &Home,
    path: &Path,
    before: &mut dyn FnMut(SwapStep) -> std::io::Result<()>,
) -> Result<()> {
    if same_file(path, &home.consensus_key()) || same_file(path, &home.next_consensus_key()) {
        before(SwapStep::UnlinkOld)?;
        std::fs::remove_file(path).with_context(|| format!("{}: remove", path.display()))?;
        before(SwapStep::SyncAfterUnlink)?;
        return durable::sync_dir(&home.dir).with_context(|| format!("{}: sync", home.dir.display()));
    }
    erase(home, path, before)
}

/// Overwrites `path` with zeros (synced), then unlinks it and syncs the directory.
fn erase(home: &Home, path: &Path, before: &mut dyn FnMut(SwapStep) -> std::io::Result<()>) -> Result<()> {
    let context = || format!("{}: erasing an old key", path.display());
    before(SwapStep::ZeroOld)?;
    let length = std::fs::metadata(path).with_context(context)?.len() as usize;
    let mut file = std::fs::OpenOptions::new().write(true).open(path).with_context(context)?;
    file.write_all(&vec![0u8; length]).with_context(context)?;
    file.sync_all().with_context(context)?;
    drop(file);
    before(SwapStep::UnlinkOld)?;
    std::fs::remove_file(path).with_context(context)?;
    before(SwapStep::SyncAfterUnlink)?;
    durable::sync_dir(&home.dir).with_context(|| format!("{}: sync", home.dir.display()))
}

/// The public key `path` holds, if it is a readable key file.
fn holds(path: &Path) -> Option<PublicKey> {
    KeyFile::read(path).ok().map(|key| key.public_key())
}

/// Whether two paths name the same file (the same inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tetrad_ledger::scratch::ScratchDir;

    /// The previous binary erased the old key by zeroing `consensus_key.json` in place and then
    /// renaming the next key over it: a crash in between left a zeroed key file beside the next
    /// one. That home must load (with the next key), not refuse to start.
    #[test]
    fn a_zeroed_current_key_beside_the_next_key_loads_the_next_key() {
        let dir = ScratchDir::new("keys-zeroed").expect("scratch");
        let home = Home::new(&dir.join("home"));
        std::fs::create_dir_all(&home.dir).expect("home");
        let old = KeyFile::generate().expect("key");
        let new = KeyFile::generate().expect("key");
        old.write_new(&home.consensus_key()).expect("write");
        new.write_new(&home.next_consensus_key()).expect("write");
        let length = std::fs::metadata(home.consensus_key()).expect("meta").len() as usize;
        std::fs::write(home.consensus_key(), vec![0u8; length]).expect("zero");
        let keys = OwnKeys::load(&home).expect("a zeroed key file beside the next key must load");
        assert!(keys.secrets().any(|secret| secret.public_key() == new.public_key()));
        assert!(keys.secrets().all(|secret| secret.public_key() != old.public_key()));
        assert_eq!(settle(&home, &new.secret, &[old.public_key()]).expect("settle"), Settled::Done);
        assert_settled(&home, &new, &old);
    }

    struct Fixture {
        _dir: ScratchDir,
        home: Home,
        old: KeyFile,
        new: KeyFile,
    }

    /// A home in the middle of a rotation: the old key current, the new one next (or, with
    /// `next_file` false, only in the replica's memory).
    fn fixture(label: &str, next_file: bool) -> Fixture {
        let dir = ScratchDir::new(label).expect("scratch");
        let home = Home::new(&dir.join("home"));
        std::fs::create_dir_all(&home.dir).expect("home");
        let old = KeyFile::generate().expect("key");
        let new = KeyFile::generate().expect("key");
        old.write_new(&home.consensus_key()).expect("write");
        if next_file {
            new.write_new(&home.next_consensus_key()).expect("write");
        }
        Fixture { _dir: dir, home, old, new }
    }

    /// Runs the swap and "crashes" just before its `stop`-th change on disk (the files are left
    /// as a killed process leaves them). Returns whether it stopped early.
    fn settle_crashing_at(
        home: &Home,
        keep: &KeyFile,
        old: &PublicKey,
        stop: usize,
        steps: &mut Vec<SwapStep>,
    ) -> bool {
        let mut seen = 0;
        let result = settle_with(home, &keep.secret, &[*old], &mut |step| {
            if seen == stop {
                return Err(std::io::Error::other("crash"));
            }
            seen += 1;
            steps.push(step);
            Ok(())
        });
        result.is_err()
    }

    /// The home's key files are settled: `consensus_key.json` holds `new`, nothing else is
    /// left, and no file holds `old`'s secret.
    fn assert_settled(home: &Home, new: &KeyFile, old: &KeyFile) {
        assert_eq!(holds(&home.consensus_key()), Some(new.public_key()));
        assert!(!home.next_consensus_key().exists());
        assert!(!home.retired_consensus_key().exists());
        assert!(!durable::temporary_path(&home.consensus_key()).exists());
        assert!(!needs_settle(home, &new.secret));
        let secret = hex::encode(old.secret.seed());
        for entry in std::fs::read_dir(&home.dir).expect("dir") {
            let path = entry.expect("entry").path();
            let text = String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned();
            assert!(!text.contains(&secret), "{} holds the old secret", path.display());
        }
    }

    /// After a crash: the home loads and holds the new key; or, when the new key was only in
    /// memory (`next_file` false) and not written yet, still the old one: a key is never erased
    /// before its successor is on disk. A second swap finishes the job.
    fn assert_recovers(fixture: &Fixture, next_file: bool) {
        let keys = OwnKeys::load(&fixture.home).expect("the home loads after the crash");
        let has = |key: &KeyFile| keys.secrets().any(|secret| secret.public_key() == key.public_key());
        assert!(
            has(&fixture.new) || (!next_file && has(&fixture.old)),
            "no key left to sign with (new {}, old {})",
            has(&fixture.new),
            has(&fixture.old)
        );
        let earlier = [fixture.old.public_key()];
        assert_eq!(
            settle(&fixture.home, &fixture.new.secret, &earlier).expect("the swap resumes"),
            Settled::Done
        );
        assert_settled(&fixture.home, &fixture.new, &fixture.old);
    }

    #[test]
    fn a_crash_before_any_change_of_the_swap_recovers() {
        for next_file in [true, false] {
            let mut steps = Vec::new();
            for stop in 0.. {
                let fixture = fixture("keys-crash", next_file);
                let stopped = settle_crashing_at(
                    &fixture.home,
                    &fixture.new,
                    &fixture.old.public_key(),
                    stop,
                    &mut steps,
                );
                assert_recovers(&fixture, next_file);
                if !stopped {
                    break;
                }
                steps.clear();
            }
            // Link, sync, rename or write, sync, (remove next, sync,) zero, unlink, sync.
            assert!(steps.len() >= 7, "{steps:?}");
        }
    }

    #[test]
    fn two_crashes_in_a_row_recover() {
        for next_file in [true, false] {
            for first in 0..12 {
                for second in 0..12 {
                    let fixture = fixture("keys-crash-twice", next_file);
                    let mut steps = Vec::new();
                    settle_crashing_at(
                        &fixture.home,
                        &fixture.new,
                        &fixture.old.public_key(),
                        first,
                        &mut steps,
                    );
                    OwnKeys::load(&fixture.home).expect("loads after the first crash");
                    settle_crashing_at(
                        &fixture.home,
                        &fixture.new,
                        &fixture.old.public_key(),
                        second,
                        &mut steps,
                    );
                    assert_recovers(&fixture, next_file);
                }
            }
        }
    }

    #[test]
    fn a_copy_of_the_next_key_left_by_a_killed_client_is_erased() {
        let fixture = fixture("keys-next-copy", true);
        let Fixture { home, old, new, .. } = &fixture;
        // `keys rotate` was killed after linking the next file, before removing its temporary.
        std::fs::hard_link(home.next_consensus_key(), durable::temporary_path(&home.next_consensus_key()))
            .expect("link");
        OwnKeys::load(home).expect("loads");
        assert_eq!(settle(home, &new.secret, &[old.public_key()]).expect("settle"), Settled::Done);
        assert_settled(home, new, old);
        assert!(!durable::temporary_path(&home.next_consensus_key()).exists());
    }

    #[test]
    fn a_stale_temporary_link_of_the_current_key_is_unlinked_not_zeroed() {
        // `init` (or an earlier swap) was killed between linking consensus_key.json and
        // removing its temporary name: both names are one file.
        let fixture = fixture("keys-current-link", true);
        let Fixture { home, old, new, .. } = &fixture;
        assert_eq!(settle(home, &new.secret, &[old.public_key()]).expect("settle"), Settled::Done);
        std::fs::hard_link(home.consensus_key(), durable::temporary_path(&home.consensus_key()))
            .expect("link");
        assert!(needs_settle(home, &new.secret));
        assert_eq!(settle(home, &new.secret, &[old.public_key()]).expect("settle"), Settled::Done);
        assert_eq!(holds(&home.consensus_key()), Some(new.public_key()), "the key in use was zeroed");
        assert_settled(home, new, old);
    }

    #[test]
    fn a_torn_erase_is_skipped_and_finished() {
        let fixture = fixture("keys-torn", true);
        let Fixture { home, old, new, .. } = &fixture;
        // The swap's rename happened; the erase of the old key wrote half its zeros.
        std::fs::rename(home.next_consensus_key(), home.consensus_key()).expect("rename");
        old.write_new(&home.retired_consensus_key()).expect("retired");
        let mut bytes = std::fs::read(home.retired_consensus_key()).expect("read");
        let half = bytes.len() / 2;
        bytes[..half].fill(0);
        std::fs::write(home.retired_consensus_key(), &bytes).expect("torn");
        let keys = OwnKeys::load(home).expect("loads");
        assert_eq!(keys.keys.len(), 1);
        assert!(needs_settle(home, &new.secret));
        assert_eq!(settle(home, &new.secret, &[old.public_key()]).expect("settle"), Settled::Done);
        assert_settled(home, new, old);
    }

    #[test]
    fn a_key_the_registry_does_not_show_as_retired_is_never_touched() {
        // The registry is behind (a resync has not reached the rotation yet): it does not know
        // that the current file's key follows the key in use.
        let fixture = fixture("keys-unknown", false);
        let Fixture { home, old, new, .. } = &fixture;
        let outcome = settle(home, &new.secret, &[]).expect("settle");
        assert!(matches!(outcome, Settled::NotYet(_)), "{outcome:?}");
        assert_eq!(holds(&home.consensus_key()), Some(old.public_key()));
        assert!(!home.retired_consensus_key().exists());
        // A retired file with an unknown key is left alone as well.
        let stranger = KeyFile::generate().expect("key");
        stranger.write_new(&home.retired_consensus_key()).expect("write");
        let outcome = settle(home, &new.secret, &[old.public_key()]).expect("settle");
        assert!(matches!(outcome, Settled::NotYet(_)), "{outcome:?}");
        assert_eq!(holds(&home.retired_consensus_key()), Some(stranger.public_key()));
        std::fs::remove_file(home.retired_consensus_key()).expect("remove");
        // A rotation in progress after the swap: its next key stays.
        let later = KeyFile::generate().expect("key");
        later.write_new(&home.next_consensus_key()).expect("write");
        assert_eq!(settle(home, &new.secret, &[old.public_key()]).expect("settle"), Settled::Done);
        assert_eq!(holds(&home.next_consensus_key()), Some(later.public_key()));
        assert_eq!(holds(&home.consensus_key()), Some(new.public_key()));
    }

    #[test]
    fn the_keyring_takes_the_keys_of_the_registry_and_drops_the_final_ones() {
        let fixture = fixture("keys-ring", true);
        let Fixture { home, old, new, .. } = &fixture;
        let other = KeyFile::generate().expect("key").public_key();
        let mut registry = ValidatorRegistry::new(
            tetrad_consensus::Digest([7; 32]),
            4,
            vec![other, old.public_key(), KeyFile::generate().expect("key").public_key()],
        );
        let keys = OwnKeys::load(home).expect("load");
        let (index, ring) = keys.keyring(&registry, Height(0)).expect("a validator");
        assert_eq!(index, ValidatorIndex(1));
        assert_eq!(ring.len(), 1, "the next key is not scheduled yet");
        registry.rotate(Height(9), ValidatorIndex(1), new.public_key());
        let (_, ring) = keys.keyring(&registry, Height(4)).expect("a validator");
        assert_eq!(ring.iter().map(|(first, _)| *first).collect::<Vec<_>>(), vec![Height(0), Height(9)]);
        let (_, ring) = keys.keyring(&registry, Height(8)).expect("a validator");
        assert_eq!(ring.len(), 1, "everything the old key signed is final");
        assert_eq!(ring[0].1.public_key(), new.public_key());
        assert_eq!(earlier_keys(&registry, ValidatorIndex(1), &new.public_key()), vec![old.public_key()]);
        assert!(earlier_keys(&registry, ValidatorIndex(1), &old.public_key()).is_empty());
    }

    #[test]
    fn a_damaged_next_key_refuses_to_load() {
        let fixture = fixture("keys-damaged-next", true);
        std::fs::write(fixture.home.next_consensus_key(), b"{").expect("damage");
        let error = OwnKeys::load(&fixture.home).err().expect("refused");
        assert!(format!("{error:#}").contains("next key of a key rotation"), "{error:#}");
    }
}
