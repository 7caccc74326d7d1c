//! The statements of PBFT's view change (§4.4): prepared certificates, view-change and new-view.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::certificate::{CheckpointCertificate, SignatureError, Signed, Statement};
use crate::crypto::{self, Domain, Signature};
use crate::messages::{Batch, PrePrepare, Prepare};
use crate::types::{Digest, Height, ValidatorIndex, View};
use crate::validators::{ValidatorSchedule, ValidatorSet};

/// PBFT §4.4 "P_m": a pre-prepare and 2f matching prepares from distinct backups: proof that
/// `digest` was prepared at `(view, height)` by a quorum.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct PreparedCertificate {
    pub pre_prepare: Signed<PrePrepare>,
    /// Signatures over `Prepare { view, height, digest }` of the pre-prepare, by distinct
    /// validators other than the primary, sorted by signer.
    pub prepares: Vec<(ValidatorIndex, Signature)>,
}

impl PreparedCertificate {
    pub fn view(&self) -> View {
        self.pre_prepare.body.view
    }

    pub fn height(&self) -> Height {
        self.pre_prepare.body.height
    }

    pub fn digest(&self) -> Digest {
        self.pre_prepare.body.digest
    }

    /// The pre-prepare is the primary's of its view; the prepares are `quorum - 1` distinct
    /// backups' signatures over the same (view, height, digest).
    pub fn verify(&self, set: &ValidatorSet) -> Result<(), CertificateError> {
        let body = &self.pre_prepare.body;
        let primary = set.primary(body.view);
        if self.pre_prepare.signer != primary {
            return Err(CertificateError::NotThePrimary { signer: self.pre_prepare.signer, primary });
        }
        self.pre_prepare.verify(set)?;
        let needed = set.quorum() - 1;
        if self.prepares.len() < needed || self.prepares.len() > set.n() {
            return Err(SignatureError::TooFewSignatures { found: self.prepares.len(), needed }.into());
        }
        let statement = Prepare { view: body.view, height: body.height, digest: body.digest };
        let digest = statement.signing_digest(set);
        let mut seen = vec![false; set.n()];
        let mut items = Vec::with_capacity(self.prepares.len());
        for (signer, signature) in &self.prepares {
            let Some(key) = set.verifying_key(*signer) else {
                return Err(SignatureError::NotAMember { signer: *signer, n: set.n() }.into());
            };
            if *signer == primary {
                return Err(CertificateError::PrimaryPrepared { signer: *signer });
            }
            if std::mem::replace(&mut seen[signer.as_usize()], true) {
                return Err(SignatureError::DuplicateSigner { signer: *signer }.into());
            }
            items.push((digest, *key, *signature));
        }
        if crypto::verify_batch(&items).is_err() {
            return Err(SignatureError::BadSignature { signer: self.prepares[0].0 }.into());
        }
        Ok(())
    }
}

/// Why a prepared certificate, view-change or new-view was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("pre-prepare signed by {signer}, but the primary is {primary}")]
    NotThePrimary { signer: ValidatorIndex, primary: ValidatorIndex },
    #[error("the primary {signer} cannot also prepare")]
    PrimaryPrepared { signer: ValidatorIndex },
    #[error("view-change for view {found}, expected {expected}")]
    WrongView { expected: View, found: View },
    #[error("prepared certificate at height {height} is outside ({low}, {high}]")]
    OutsideWindow { height: Height, low: Height, high: Height },
    #[error("prepared certificate from view {found} is not below the new view {new_view}")]
    FutureCertificate { found: View, new_view: View },
    #[error("two prepared certificates for height {height} in one view-change")]
    DuplicateHeight { height: Height },
    #[error("{found} view-changes from distinct validators, a quorum needs {needed}")]
    TooFewViewChanges { found: usize, needed: usize },
    #[error("view-change of validator {signer} appears twice")]
    DuplicateViewChange { signer: ValidatorIndex },
    #[error("new-view pre-prepares differ from the ones the view-changes prescribe")]
    WrongReProposals,
    #[error("new-view carries {found} batches, none or more than prescribed")]
    Oversized { found: usize },
}

/// PBFT §4.4: `VIEW-CHANGE(v+1, n, C, P, i)`: the sender's stable checkpoint (`C`, absent at
/// genesis) and the prepared certificates above it (`P`).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ViewChange {
    pub new_view: View,
    pub checkpoint: Option<CheckpointCertificate>,
    pub prepared: Vec<PreparedCertificate>,
}

impl ViewChange {
    /// The height of the sender's stable checkpoint (0 at genesis).
    pub fn stable_height(&self) -> Height {
        self.checkpoint.as_ref().map(|certificate| certificate.statement.height).unwrap_or(Height::GENESIS)
    }

    /// Checks the checkpoint and every prepared certificate against the schedule, and that each
    /// certificate is above the checkpoint, within the window, from an earlier view, and the
    /// only one for its height.
    pub fn verify_contents(&self, schedule: &ValidatorSchedule, window: u64) -> Result<(), CertificateError> {
        let low = self.stable_height();
        if let Some(certificate) = &self.checkpoint {
            certificate.verify(schedule.at(low))?;
        }
        let high = Height(low.0.saturating_add(window));
        let mut heights = std::collections::BTreeSet::new();
        for certificate in &self.prepared {
            let height = certificate.height();
            if height <= low || height > high {
                return Err(CertificateError::OutsideWindow { height, low, high });
            }
            if certificate.view() >= self.new_view {
                return Err(CertificateError::FutureCertificate {
                    found: certificate.view(),
                    new_view: self.new_view,
                });
            }
            if !heights.insert(height) {
                return Err(CertificateError::DuplicateHeight { height });
            }
            certificate.verify(schedule.at(height))?;
        }
        Ok(())
    }
}

impl Statement for ViewChange {
    const DOMAIN: Domain = Domain::ViewChange;
    /// Signed with the sender's key of the first height above its stable checkpoint.
    fn key_height(&self) -> Height {
        self.stable_height().next()
    }
}

/// PBFT §4.4: `NEW-VIEW(v+1, V, O)`: 2f+1 view-changes and the pre-prepares they prescribe.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct NewView {
    pub view: View,
    pub view_changes: Vec<Signed<ViewChange>>,
    pub pre_prepares: Vec<Signed<PrePrepare>>,
}

impl Statement for NewView {
    const DOMAIN: Domain = Domain::NewView;
    fn key_height(&self) -> Height {
        reproposal_range(&self.view_changes).0.next()
    }
}

/// `(min_s, max_s)` of PBFT §4.4: the highest stable checkpoint among the view-changes and the
/// highest height of any prepared certificate (at least `min_s`).
pub fn reproposal_range(view_changes: &[Signed<ViewChange>]) -> (Height, Height) {
    let min_s = view_changes.iter().map(|vc| vc.body.stable_height()).max().unwrap_or(Height::GENESIS);
    let max_s = view_changes
        .iter()
        .flat_map(|vc| vc.body.prepared.iter().map(PreparedCertificate::height))
        .max()
        .unwrap_or(min_s)
        .max(min_s);
    (min_s, max_s)
}

/// The checkpoint certificate of the highest stable checkpoint among the view-changes.
pub fn highest_checkpoint(view_changes: &[Signed<ViewChange>]) -> Option<&CheckpointCertificate> {
    view_changes
        .iter()
        .filter_map(|vc| vc.body.checkpoint.as_ref())
        .max_by_key(|certificate| certificate.statement.height)
}

/// PBFT §4.4: the digests the new primary must re-propose for `(min_s, max_s]`: at each height
/// the digest of the prepared certificate with the highest view (ties broken by the smaller
/// digest, so every replica computes the same set), or the empty batch of the new view.
pub fn reproposals(
    view: View,
    primary: ValidatorIndex,
    view_changes: &[Signed<ViewChange>],
) -> Vec<(Height, Digest)> {
    let (min_s, max_s) = reproposal_range(view_changes);
    let empty = Batch::empty(view, primary).digest();
    let mut best: std::collections::BTreeMap<Height, (View, std::cmp::Reverse<Digest>)> = Default::default();
    for certificate in view_changes.iter().flat_map(|vc| vc.body.prepared.iter()) {
        if certificate.height() <= min_s {
            continue;
        }
        let candidate = (certificate.view(), std::cmp::Reverse(certificate.digest()));
        let entry = best.entry(certificate.height()).or_insert(candidate);
        if candidate > *entry {
            *entry = candidate;
        }
    }
    (min_s.0 + 1..=max_s.0)
        .map(Height)
        .map(|height| (height, best.get(&height).map(|(_, digest)| digest.0).unwrap_or(empty)))
        .collect()
}

/// The encoded size of the largest new-view honest replicas can produce with `n` validators and
/// a watermark window of `window` heights: a quorum of view-changes, each with a checkpoint
/// certificate signed by all `n` and a prepared certificate at every height of the window
/// (each with the `n - 1` backups' prepares), and a re-proposal at every height. Genesis refuses
/// parameters whose new-view would not fit in one message ([`crate::wire::MESSAGE_BYTES_MAX`]):
/// a view change that cannot be sent can never complete.
pub fn new_view_bytes_max(n: usize, window: u64) -> u64 {
    const SIGNATURE: u64 = 2 + 64; // signer index and signature
    const VEC: u64 = 4; // borsh length prefix
    let n = n.max(1) as u64;
    let f = (n - 1) / 3;
    let quorum = (n + f) / 2 + 1;
    let pre_prepare = 48 + SIGNATURE; // view, height, digest; signed
    let prepared = pre_prepare + VEC + (n - 1) * SIGNATURE;
    let checkpoint = 72 + VEC + n * SIGNATURE; // height, header hash, state root; signatures
    let view_change = 8 + 1 + checkpoint + VEC + window.saturating_mul(prepared) + SIGNATURE;
    let new_view =
        8 + VEC + quorum.saturating_mul(view_change) + VEC + window.saturating_mul(pre_prepare) + SIGNATURE;
    1 + new_view // the message's enum tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::Certificate;
    use crate::crypto::SecretKey;
    use crate::messages::{Checkpoint, Prepare};
    use crate::validators::ValidatorSet;
    use crate::wire::Message;

    /// The bound is exact for a full-window new-view built from real signed parts.
    #[test]
    fn the_largest_new_view_has_the_computed_size() {
        for (n, window) in [(4usize, 8u64), (7, 5)] {
            let keys: Vec<SecretKey> = (0..n).map(|i| SecretKey::from_seed([i as u8 + 1; 32])).collect();
            let set =
                ValidatorSet::new(Digest::of(b"size"), keys.iter().map(SecretKey::public_key).collect())
                    .expect("valid set");
            let sign =
                |signer: usize, body| Signed::sign(body, ValidatorIndex(signer as u16), &keys[signer], &set);
            let statement =
                Checkpoint { height: Height(10), header_hash: Digest::ZERO, state_root: Digest::ZERO };
            let votes: Vec<_> = (0..n)
                .map(|i| Signed::sign(statement.clone(), ValidatorIndex(i as u16), &keys[i], &set))
                .collect();
            let checkpoint = Certificate::from_votes(statement, &votes);
            let view = View(1);
            let prepared: Vec<PreparedCertificate> = (11..11 + window)
                .map(|height| {
                    let body = PrePrepare { view: View(0), height: Height(height), digest: Digest::ZERO };
                    let prepares = (1..n)
                        .map(|i| {
                            let vote =
                                Prepare { view: View(0), height: Height(height), digest: Digest::ZERO };
                            let signed = Signed::sign(vote, ValidatorIndex(i as u16), &keys[i], &set);
                            (signed.signer, signed.signature)
                        })
                        .collect();
                    PreparedCertificate { pre_prepare: sign(0, body), prepares }
                })
                .collect();
            let view_changes: Vec<Signed<ViewChange>> = (0..set.quorum())
                .map(|i| {
                    let body = ViewChange {
                        new_view: view,
                        checkpoint: Some(checkpoint.clone()),
                        prepared: prepared.clone(),
                    };
                    Signed::sign(body, ValidatorIndex(i as u16), &keys[i], &set)
                })
                .collect();
            let pre_prepares = (11..11 + window)
                .map(|height| {
                    let body = PrePrepare { view, height: Height(height), digest: Digest::ZERO };
                    Signed::sign(body, ValidatorIndex(1), &keys[1], &set)
                })
                .collect();
            let new_view =
                Signed::sign(NewView { view, view_changes, pre_prepares }, ValidatorIndex(1), &keys[1], &set);
            let size = Message::NewView(new_view).encode().len() as u64;
            assert_eq!(size, new_view_bytes_max(n, window), "n = {n}, window = {window}");
        }
        // The example: a window of 100,000 with 4 validators is about 75 MB.
        assert!(new_view_bytes_max(4, 100_000) > 70_000_000);
    }
}
