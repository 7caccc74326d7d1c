//! Messages between replicas, and their verification.
//!
//! Everything a replica acts on arrives as a [`Message`] from a known validator (the transport
//! authenticates the sender's network identity). Before a message reaches [`crate::Replica`],
//! [`verify`] checks every signature in it against the validator set of the heights it speaks
//! of, checks batch digests, and recomputes what a new-view must contain. Only a
//! [`VerifiedMessage`] can be handed to the replica, so the replica never sees a forged
//! signature. Verification is pure and may run on any thread, in parallel.

use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};

use crate::certificate::{CommitCertificate, SignatureError, Signed};
use crate::messages::{Batch, Checkpoint, Commit, PrePrepare, Prepare};
use crate::types::{Digest, Height, ValidatorIndex, View};
use crate::validators::ValidatorSchedule;
use crate::view_messages::{CertificateError, NewView, ViewChange, reproposals};

/// Largest encoded message accepted from the network (a new-view with a full window of
/// prepared certificates, or a pre-prepare with the largest batch, fit well within it).
pub const MESSAGE_BYTES_MAX: usize = 32 << 20;

/// What replicas send each other.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Message {
    /// PBFT §4.2, with the batch it orders.
    PrePrepare {
        pre_prepare: Signed<PrePrepare>,
        batch: Arc<Batch>,
    },
    Prepare(Signed<Prepare>),
    Commit(Signed<Commit>),
    /// PBFT §4.3.
    Checkpoint(Signed<Checkpoint>),
    /// PBFT §4.4.
    ViewChange(Signed<ViewChange>),
    NewView(Signed<NewView>),
    /// Where the sender is; lets peers retransmit, resend a new-view, or serve blocks.
    /// Unsigned: acting on a lie costs a bounded resend at most.
    Status(Status),
    /// Asks for the batch with `digest` (re-proposed by a new view, or otherwise missing).
    FetchBatch {
        height: Height,
        digest: Digest,
    },
    /// A batch; authenticated by its digest, which the receiver asked for.
    Batch {
        height: Height,
        batch: Arc<Batch>,
    },
}

/// A replica's position, sent periodically.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Status {
    pub view: View,
    pub view_active: bool,
    /// Highest height whose batch the sender has committed (and handed to execution).
    pub committed: Height,
    /// Height of the sender's last stable checkpoint.
    pub stable: Height,
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).unwrap_or_default()
    }

    /// Decodes a message from the network, refusing oversized input and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Message, VerifyError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(VerifyError::TooLarge { size: bytes.len(), max: MESSAGE_BYTES_MAX });
        }
        borsh::from_slice(bytes).map_err(|error| VerifyError::Malformed(error.to_string()))
    }

    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PrePrepare { .. } => "pre_prepare",
            Message::Prepare(_) => "prepare",
            Message::Commit(_) => "commit",
            Message::Checkpoint(_) => "checkpoint",
            Message::ViewChange(_) => "view_change",
            Message::NewView(_) => "new_view",
            Message::Status(_) => "status",
            Message::FetchBatch { .. } => "fetch_batch",
            Message::Batch { .. } => "batch",
        }
    }
}

/// Why a message was dropped before it reached the replica.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("message of {size} bytes exceeds {max}")]
    TooLarge { size: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("pre-prepare for view {view} signed by {signer}, but its primary is {primary}")]
    NotThePrimary { view: View, signer: ValidatorIndex, primary: ValidatorIndex },
    #[error("batch digest {found:?} does not match {expected:?}")]
    DigestMismatch { expected: Digest, found: Digest },
    #[error("new-view for view {view} holds a view-change for view {found}")]
    MixedViews { view: View, found: View },
    #[error("height 0 is genesis; nothing is ordered there")]
    GenesisHeight,
    #[error(
        "height {height} is above the validator schedule's horizon {horizon} (this node has not executed far enough to know its validators)"
    )]
    BeyondHorizon { height: Height, horizon: Height },
}

impl VerifyError {
    /// The drop reason counted in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::TooLarge { .. } => "oversized_message",
            VerifyError::Malformed(_) => "malformed_message",
            VerifyError::Signature(_) => "bad_message_signature",
            VerifyError::Certificate(_) => "bad_certificate",
            VerifyError::NotThePrimary { .. } => "pre_prepare_not_from_primary",
            VerifyError::DigestMismatch { .. } => "batch_digest_mismatch",
            VerifyError::MixedViews { .. } => "new_view_mixed_views",
            VerifyError::GenesisHeight => "genesis_height",
            VerifyError::BeyondHorizon { .. } => "beyond_schedule_horizon",
        }
    }
}

/// A message whose signatures and digests have been checked. Only [`verify`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedMessage(Message);

impl VerifiedMessage {
    pub fn message(&self) -> &Message {
        &self.0
    }

    pub fn into_message(self) -> Message {
        self.0
    }
}

/// A block fetched from a peer during state transfer, whose certificate has been verified.
#[derive(Clone, Debug)]
pub struct VerifiedBlock {
    batch: Arc<Batch>,
    certificate: CommitCertificate,
}

impl VerifiedBlock {
    /// Checks that `certificate` is a quorum's commit over `batch`'s digest, signed by the
    /// validators of its height.
    pub fn verify(
        batch: Arc<Batch>,
        certificate: CommitCertificate,
        schedule: &ValidatorSchedule,
    ) -> Result<VerifiedBlock, VerifyError> {
        let height = certificate.statement.height;
        if height == Height::GENESIS {
            return Err(VerifyError::GenesisHeight);
        }
        known(schedule, height)?;
        let digest = batch.digest();
        if digest != certificate.statement.digest {
            return Err(VerifyError::DigestMismatch {
                expected: certificate.statement.digest,
                found: digest,
            });
        }
        certificate.verify(schedule.at(height))?;
        Ok(VerifiedBlock { batch, certificate })
    }

    pub fn height(&self) -> Height {
        self.certificate.statement.height
    }

    pub fn batch(&self) -> &Arc<Batch> {
        &self.batch
    }

    pub fn certificate(&self) -> &CommitCertificate {
        &self.certificate
    }
}

/// Checks every signature and digest in `message` against `schedule`. `window` is the genesis
/// watermark window (bounds the certificates a view-change may carry).
pub fn verify(
    message: Message,
    schedule: &ValidatorSchedule,
    window: u64,
) -> Result<VerifiedMessage, VerifyError> {
    for height in heights_of(&message) {
        known(schedule, height)?;
    }
    match &message {
        Message::PrePrepare { pre_prepare, batch } => {
            let body = &pre_prepare.body;
            if body.height == Height::GENESIS {
                return Err(VerifyError::GenesisHeight);
            }
            let set = schedule.at(body.height);
            let primary = set.primary(body.view);
            if pre_prepare.signer != primary {
                return Err(VerifyError::NotThePrimary {
                    view: body.view,
                    signer: pre_prepare.signer,
                    primary,
                });
            }
            pre_prepare.verify(set)?;
            let digest = batch.digest();
            if digest != body.digest {
                return Err(VerifyError::DigestMismatch { expected: body.digest, found: digest });
            }
        }
        Message::Prepare(prepare) => {
            nonzero(prepare.body.height)?;
            prepare.verify(schedule.at(prepare.body.height))?;
        }
        Message::Commit(commit) => {
            nonzero(commit.body.height)?;
            commit.verify(schedule.at(commit.body.height))?;
        }
        Message::Checkpoint(checkpoint) => {
            nonzero(checkpoint.body.height)?;
            checkpoint.verify(schedule.at(checkpoint.body.height))?;
        }
        Message::ViewChange(view_change) => verify_view_change(view_change, schedule, window)?,
        Message::NewView(new_view) => {
            let body = &new_view.body;
            let (min_s, _) = crate::view_messages::reproposal_range(&body.view_changes);
            let set = schedule.at(min_s.next());
            let primary = set.primary(body.view);
            if new_view.signer != primary {
                return Err(VerifyError::NotThePrimary { view: body.view, signer: new_view.signer, primary });
            }
            new_view.verify(set)?;
            let mut seen = vec![false; set.n()];
            for view_change in &body.view_changes {
                if view_change.body.new_view != body.view {
                    return Err(VerifyError::MixedViews {
                        view: body.view,
                        found: view_change.body.new_view,
                    });
                }
                let signer = view_change.signer;
                if !set.contains(signer) {
                    return Err(SignatureError::NotAMember { signer, n: set.n() }.into());
                }
                if std::mem::replace(&mut seen[signer.as_usize()], true) {
                    return Err(CertificateError::DuplicateViewChange { signer }.into());
                }
                verify_view_change(view_change, schedule, window)?;
            }
            if body.view_changes.len() < set.quorum() {
                return Err(CertificateError::TooFewViewChanges {
                    found: body.view_changes.len(),
                    needed: set.quorum(),
                }
                .into());
            }
            // PBFT §4.4: every backup recomputes O and checks it.
            let expected = reproposals(body.view, primary, &body.view_changes);
            if expected.len() != body.pre_prepares.len() {
                return Err(CertificateError::WrongReProposals.into());
            }
            for ((height, digest), pre_prepare) in expected.iter().zip(&body.pre_prepares) {
                let statement = &pre_prepare.body;
                if statement.view != body.view || statement.height != *height || statement.digest != *digest {
                    return Err(CertificateError::WrongReProposals.into());
                }
                if pre_prepare.signer != primary {
                    return Err(VerifyError::NotThePrimary {
                        view: body.view,
                        signer: pre_prepare.signer,
                        primary,
                    });
                }
                pre_prepare.verify(schedule.at(*height))?;
            }
        }
        // Unsigned: a batch is authenticated by the digest the receiver asked for.
        Message::Batch { .. } | Message::Status(_) | Message::FetchBatch { .. } => {}
    }
    Ok(VerifiedMessage(message))
}

fn nonzero(height: Height) -> Result<(), VerifyError> {
    if height == Height::GENESIS { Err(VerifyError::GenesisHeight) } else { Ok(()) }
}

/// Refuses heights whose validator set this node cannot know yet.
fn known(schedule: &ValidatorSchedule, height: Height) -> Result<(), VerifyError> {
    if schedule.covers(height) {
        Ok(())
    } else {
        Err(VerifyError::BeyondHorizon { height, horizon: schedule.horizon() })
    }
}

/// Every height a message's signatures are checked at.
fn heights_of(message: &Message) -> Vec<Height> {
    match message {
        Message::PrePrepare { pre_prepare, .. } => vec![pre_prepare.body.height],
        Message::Prepare(prepare) => vec![prepare.body.height],
        Message::Commit(commit) => vec![commit.body.height],
        Message::Checkpoint(checkpoint) => vec![checkpoint.body.height],
        Message::ViewChange(view_change) => view_change_heights(&view_change.body),
        Message::NewView(new_view) => {
            let mut heights: Vec<Height> =
                new_view.body.view_changes.iter().flat_map(|vc| view_change_heights(&vc.body)).collect();
            heights.extend(new_view.body.pre_prepares.iter().map(|pp| pp.body.height));
            heights
        }
        Message::Status(_) | Message::FetchBatch { .. } | Message::Batch { .. } => Vec::new(),
    }
}

fn view_change_heights(body: &ViewChange) -> Vec<Height> {
    let mut heights = vec![body.stable_height(), body.stable_height().next()];
    heights.extend(body.prepared.iter().map(|certificate| certificate.height()));
    heights
}

fn verify_view_change(
    view_change: &Signed<ViewChange>,
    schedule: &ValidatorSchedule,
    window: u64,
) -> Result<(), VerifyError> {
    view_change.verify(schedule.at(view_change.body.stable_height().next()))?;
    view_change.body.verify_contents(schedule, window)?;
    Ok(())
}
