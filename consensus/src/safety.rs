//! Safety rules: what an honest replica must never sign, and the durable record that keeps it
//! honest across a crash (the role CometBFT's double-sign protection plays).
//!
//! Rules (PBFT §4.2, §4.4):
//! - never accept (pre-prepare or prepare) two different digests for one (view, height);
//! - never commit-vote two different digests for one (view, height);
//! - never send two different view-changes for one view;
//! - views never go back.
//!
//! Every signature the replica makes is preceded by a [`SafetyRecord`] in the actions'
//! `persist` list; the driver makes it durable before it sends the message (the type keeps the
//! two apart). The records also hold the accepted batches and prepared certificates, which the
//! replica needs after a restart to send an honest view-change: a replica that forgot what it
//! prepared would be as dangerous as a Byzantine one.

use std::collections::BTreeMap;
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};

use crate::certificate::{CheckpointCertificate, Signed};
use crate::messages::{Batch, PrePrepare};
use crate::types::{Digest, Height, View};
use crate::view_messages::{PreparedCertificate, ViewChange};

/// A durable record, written before the message that depends on it is sent.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum SafetyRecord {
    /// The replica accepted (as a backup) or signed (as the primary) this pre-prepare; written
    /// before its prepare or pre-prepare goes out. The batch, when known, is kept with it.
    Accepted { pre_prepare: Signed<PrePrepare>, batch: Option<Arc<Batch>> },
    /// The replica prepared; written before its commit goes out.
    Prepared(PreparedCertificate),
    /// The replica signed this view-change; written before it goes out.
    ViewChange(Signed<ViewChange>),
    /// The replica entered this view.
    View(View),
    /// The last stable checkpoint.
    Stable(CheckpointCertificate),
}

/// A write to the safety column family, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SafetyWrite {
    Put(SafetyRecord),
    /// Records about heights at or below this one are no longer needed (a stable checkpoint).
    ForgetHeightsUpTo(Height),
    /// View-changes for views below this one are no longer needed (a new view is installed).
    ForgetViewChangesBelow(View),
}

/// A key-value operation for the store that holds safety records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyValueOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Deletes keys in `[from, to)`.
    DeleteRange {
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

const ACCEPTED: u8 = b'a';
const PREPARED: u8 = b'p';
const VIEW_CHANGE: u8 = b'c';
const VIEW: u8 = b'v';
const STABLE: u8 = b's';

fn height_view_key(prefix: u8, height: Height, view: View) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(prefix);
    key.extend_from_slice(&height.0.to_be_bytes());
    key.extend_from_slice(&view.0.to_be_bytes());
    key
}

impl SafetyRecord {
    /// The key under which this record is stored; a later record for the same key replaces it.
    pub fn key(&self) -> Vec<u8> {
        match self {
            SafetyRecord::Accepted { pre_prepare, .. } => {
                height_view_key(ACCEPTED, pre_prepare.body.height, pre_prepare.body.view)
            }
            SafetyRecord::Prepared(certificate) => {
                height_view_key(PREPARED, certificate.height(), certificate.view())
            }
            SafetyRecord::ViewChange(view_change) => {
                let mut key = vec![VIEW_CHANGE];
                key.extend_from_slice(&view_change.body.new_view.0.to_be_bytes());
                key
            }
            SafetyRecord::View(_) => vec![VIEW],
            SafetyRecord::Stable(_) => vec![STABLE],
        }
    }
}

impl SafetyWrite {
    /// The key-value operations that carry out this write.
    pub fn to_ops(&self) -> Vec<KeyValueOp> {
        match self {
            SafetyWrite::Put(record) => {
                vec![KeyValueOp::Put { key: record.key(), value: borsh::to_vec(record).unwrap_or_default() }]
            }
            SafetyWrite::ForgetHeightsUpTo(height) => [ACCEPTED, PREPARED]
                .iter()
                .map(|&prefix| KeyValueOp::DeleteRange {
                    from: vec![prefix],
                    to: height_view_key(prefix, height.next(), View(0)),
                })
                .collect(),
            SafetyWrite::ForgetViewChangesBelow(view) => {
                let mut to = vec![VIEW_CHANGE];
                to.extend_from_slice(&view.0.to_be_bytes());
                vec![KeyValueOp::DeleteRange { from: vec![VIEW_CHANGE], to }]
            }
        }
    }
}

/// A key and a value, or the two ends of a key range.
pub type KeyPair = (Vec<u8>, Vec<u8>);

/// The key-value operations of `writes`, split into puts `(key, value)` and range deletes
/// `(from, to)`, in order.
pub fn split_ops(writes: &[SafetyWrite]) -> (Vec<KeyPair>, Vec<KeyPair>) {
    let mut puts = Vec::new();
    let mut deletes = Vec::new();
    for op in writes.iter().flat_map(SafetyWrite::to_ops) {
        match op {
            KeyValueOp::Put { key, value } => puts.push((key, value)),
            KeyValueOp::DeleteRange { from, to } => deletes.push((from, to)),
        }
    }
    (puts, deletes)
}

/// Why the safety rules refused to sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetyError {
    #[error("already accepted {accepted:?} at view {view} height {height}, refusing {refused:?}")]
    ConflictingAccept { view: View, height: Height, accepted: Digest, refused: Digest },
    #[error("already commit-voted {voted:?} at view {view} height {height}, refusing {refused:?}")]
    ConflictingCommit { view: View, height: Height, voted: Digest, refused: Digest },
    #[error("already sent another view-change for view {view}")]
    ConflictingViewChange { view: View },
    #[error("already voted in view {voted} at height {height}; view {refused} is older")]
    ViewWentBack { height: Height, voted: View, refused: View },
}

/// What the replica has signed, per height above the last stable checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Safety {
    accepted: BTreeMap<Height, (View, Digest)>,
    committed: BTreeMap<Height, (View, Digest)>,
    view_change: Option<(View, Digest)>,
}

fn check_vote(
    votes: &BTreeMap<Height, (View, Digest)>,
    view: View,
    height: Height,
    digest: Digest,
    conflict: impl FnOnce(Digest) -> SafetyError,
) -> Result<(), SafetyError> {
    match votes.get(&height) {
        Some(&(voted, _)) if voted > view => Err(SafetyError::ViewWentBack { height, voted, refused: view }),
        Some(&(voted, previous)) if voted == view && previous != digest => Err(conflict(previous)),
        _ => Ok(()),
    }
}

impl Safety {
    /// May the replica accept (pre-prepare or prepare) `digest` at `(view, height)`?
    pub fn check_accept(&self, view: View, height: Height, digest: Digest) -> Result<(), SafetyError> {
        check_vote(&self.accepted, view, height, digest, |accepted| SafetyError::ConflictingAccept {
            view,
            height,
            accepted,
            refused: digest,
        })
    }

    pub fn record_accept(&mut self, view: View, height: Height, digest: Digest) {
        self.accepted.insert(height, (view, digest));
    }

    /// May the replica commit-vote `digest` at `(view, height)`?
    pub fn check_commit(&self, view: View, height: Height, digest: Digest) -> Result<(), SafetyError> {
        check_vote(&self.committed, view, height, digest, |voted| SafetyError::ConflictingCommit {
            view,
            height,
            voted,
            refused: digest,
        })
    }

    pub fn record_commit(&mut self, view: View, height: Height, digest: Digest) {
        self.committed.insert(height, (view, digest));
    }

    /// May the replica send a view-change for `view` whose body hashes to `body`?
    pub fn check_view_change(&self, view: View, body: Digest) -> Result<(), SafetyError> {
        match self.view_change {
            Some((voted, _)) if voted > view => {
                Err(SafetyError::ViewWentBack { height: Height(0), voted, refused: view })
            }
            Some((voted, previous)) if voted == view && previous != body => {
                Err(SafetyError::ConflictingViewChange { view })
            }
            _ => Ok(()),
        }
    }

    pub fn record_view_change(&mut self, view: View, body: Digest) {
        self.view_change = Some((view, body));
    }

    pub fn forget_up_to(&mut self, height: Height) {
        self.accepted = self.accepted.split_off(&height.next());
        self.committed = self.committed.split_off(&height.next());
    }
}

/// The digest that identifies a view-change body for the safety rule.
pub fn view_change_digest(body: &ViewChange) -> Digest {
    Digest::of(&borsh::to_vec(body).unwrap_or_default())
}

/// Everything a replica restores from its safety records after a restart.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub safety: Safety,
    pub view: View,
    pub stable: Option<CheckpointCertificate>,
    pub accepted: Vec<(Signed<PrePrepare>, Option<Arc<Batch>>)>,
    pub prepared: Vec<PreparedCertificate>,
    pub view_change: Option<Signed<ViewChange>>,
}

/// Rebuilds the safety state from stored `(key, value)` pairs (any order). Undecodable values
/// are an error: a replica must not guess what it signed.
pub fn restore<'a>(records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Result<Restored, String> {
    let mut restored = Restored::default();
    for (key, value) in records {
        let record: SafetyRecord = borsh::from_slice(value)
            .map_err(|error| format!("safety record {}: {error}", hex::encode(key)))?;
        match record {
            SafetyRecord::Accepted { pre_prepare, batch } => {
                let body = &pre_prepare.body;
                if restored.safety.check_accept(body.view, body.height, body.digest).is_ok() {
                    restored.safety.record_accept(body.view, body.height, body.digest);
                }
                restored.accepted.push((pre_prepare, batch));
            }
            SafetyRecord::Prepared(certificate) => {
                let (view, height, digest) = (certificate.view(), certificate.height(), certificate.digest());
                if restored.safety.check_commit(view, height, digest).is_ok() {
                    restored.safety.record_commit(view, height, digest);
                }
                restored.prepared.push(certificate);
            }
            SafetyRecord::ViewChange(view_change) => {
                let view = view_change.body.new_view;
                if restored.view_change.as_ref().is_none_or(|kept| kept.body.new_view < view) {
                    restored.safety.record_view_change(view, view_change_digest(&view_change.body));
                    restored.view_change = Some(view_change);
                }
            }
            SafetyRecord::View(view) => restored.view = restored.view.max(view),
            SafetyRecord::Stable(certificate) => {
                let newer = restored
                    .stable
                    .as_ref()
                    .is_none_or(|kept| kept.statement.height < certificate.statement.height);
                if newer {
                    restored.stable = Some(certificate);
                }
            }
        }
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> Digest {
        Digest([byte; 32])
    }

    #[test]
    fn accept_rules() {
        let mut safety = Safety::default();
        assert_eq!(safety.check_accept(View(1), Height(5), digest(1)), Ok(()));
        safety.record_accept(View(1), Height(5), digest(1));
        assert_eq!(safety.check_accept(View(1), Height(5), digest(1)), Ok(()));
        assert_eq!(
            safety.check_accept(View(1), Height(5), digest(2)),
            Err(SafetyError::ConflictingAccept {
                view: View(1),
                height: Height(5),
                accepted: digest(1),
                refused: digest(2)
            })
        );
        // A later view may accept another digest (the new view re-proposes what is safe).
        assert_eq!(safety.check_accept(View(2), Height(5), digest(2)), Ok(()));
        safety.record_accept(View(2), Height(5), digest(2));
        assert_eq!(
            safety.check_accept(View(1), Height(5), digest(1)),
            Err(SafetyError::ViewWentBack { height: Height(5), voted: View(2), refused: View(1) })
        );
        safety.forget_up_to(Height(5));
        assert_eq!(safety.check_accept(View(1), Height(5), digest(1)), Ok(()));
    }

    #[test]
    fn view_change_rules() {
        let mut safety = Safety::default();
        safety.record_view_change(View(3), digest(1));
        assert_eq!(safety.check_view_change(View(3), digest(1)), Ok(()));
        assert_eq!(
            safety.check_view_change(View(3), digest(2)),
            Err(SafetyError::ConflictingViewChange { view: View(3) })
        );
        assert!(safety.check_view_change(View(2), digest(2)).is_err());
        assert_eq!(safety.check_view_change(View(4), digest(2)), Ok(()));
    }

    #[test]
    fn forgetting_heights_deletes_exactly_the_records_at_or_below() {
        let ops = SafetyWrite::ForgetHeightsUpTo(Height(7)).to_ops();
        let kept = height_view_key(ACCEPTED, Height(8), View(0));
        let dropped = height_view_key(ACCEPTED, Height(7), View(u64::MAX));
        let KeyValueOp::DeleteRange { from, to } = &ops[0] else { panic!("a range delete") };
        assert!(from.as_slice() <= dropped.as_slice() && dropped.as_slice() < to.as_slice());
        assert!(kept.as_slice() >= to.as_slice());
    }
}
