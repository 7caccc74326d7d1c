//! Inbound consensus messages, from the network task to verification, with a share per peer.
//!
//! One Byzantine validator must not be able to crowd out the others' votes. So:
//!
//! - **Budget**: the network task admits a peer's message only while that peer has fewer than
//!   [`PEER_QUEUE_MESSAGES_MAX`] messages and [`peer_queue_bytes_max`] bytes received and not
//!   yet verified ([`InboundBudgets`]); beyond that its messages are dropped (and counted), and
//!   nobody else's. The [`Ticket`] that admitted a message gives its place back when dropped,
//!   wherever that happens.
//! - **Queue share**: the driver keeps one queue per peer and hands messages to verification in
//!   turn, one per peer per pass, each peer with at most [`PEER_VERIFICATIONS_MAX`] at once
//!   ([`Intake::dispatch`]); the rest wait in their own queue.
//! - **Freshness**: before its signatures (and a pre-prepare's transactions) are checked, a
//!   message is held against the replica's view, low watermark and committed height
//!   ([`Freshness::stale`]): what the replica would certainly drop is dropped for almost nothing.
//!
//! The accounting is two atomic additions per message and a queue push, off any lock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tetrad_consensus::wire::Message;
use tetrad_consensus::{Height, ValidatorIndex, View};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Messages one peer may have received and not yet verified.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// The smallest byte budget per peer (a window of pipelined pre-prepares of ordinary size).
pub const PEER_QUEUE_BYTES_MIN: usize = 64 << 20;
/// Verifications one peer may have running at once. Small: verification is CPU work on a few
/// cores, so a sender with many running threads would take the others' CPU, not just their
/// places; eight keep both cores busy for an honest sender under load.
pub const PEER_VERIFICATIONS_MAX: usize = 8;

/// Bytes one peer may have received and not yet verified: four of the largest frames, at least
/// [`PEER_QUEUE_BYTES_MIN`].
pub fn peer_queue_bytes_max(frame_bytes_max: usize) -> usize {
    frame_bytes_max.saturating_mul(4).max(PEER_QUEUE_BYTES_MIN)
}

#[derive(Default)]
struct PeerLoad {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

/// What each validator has received and not yet verified; shared by the network task (which
/// admits) and the verification tasks (whose tickets release).
pub struct InboundBudgets {
    peers: Vec<PeerLoad>,
    messages_max: usize,
    bytes_max: usize,
}

impl InboundBudgets {
    pub fn new(validators: usize, messages_max: usize, bytes_max: usize) -> Arc<InboundBudgets> {
        Arc::new(InboundBudgets {
            peers: (0..validators).map(|_| PeerLoad::default()).collect(),
            messages_max,
            bytes_max,
        })
    }

    /// A ticket for a message of `size` bytes from `peer`, or `None` if the peer's budget is
    /// spent (or it is no validator).
    pub fn admit(self: &Arc<Self>, peer: ValidatorIndex, size: usize) -> Option<Ticket> {
        let load = self.peers.get(peer.as_usize())?;
        let messages = load.messages.fetch_add(1, Ordering::Relaxed);
        let bytes = load.bytes.fetch_add(size, Ordering::Relaxed);
        if messages >= self.messages_max || bytes.saturating_add(size) > self.bytes_max {
            load.messages.fetch_sub(1, Ordering::Relaxed);
            load.bytes.fetch_sub(size, Ordering::Relaxed);
            return None;
        }
        Some(Ticket { budgets: self.clone(), peer: peer.as_usize(), size })
    }

    /// Messages and bytes `peer` holds now.
    #[cfg(test)]
    pub fn load(&self, peer: ValidatorIndex) -> (usize, usize) {
        self.peers
            .get(peer.as_usize())
            .map(|load| (load.messages.load(Ordering::Relaxed), load.bytes.load(Ordering::Relaxed)))
            .unwrap_or((0, 0))
    }
}

/// A message's place in its sender's budget, given back when dropped.
pub struct Ticket {
    budgets: Arc<InboundBudgets>,
    peer: usize,
    size: usize,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Ticket({} bytes of validator {})", self.size, self.peer)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(load) = self.budgets.peers.get(self.peer) {
            load.messages.fetch_sub(1, Ordering::Relaxed);
            load.bytes.fetch_sub(self.size, Ordering::Relaxed);
        }
    }
}

/// A message waiting for verification (with its place in the sender's budget; none for one the
/// driver kept back itself).
pub struct Queued {
    pub bytes: Bytes,
    pub ticket: Option<Ticket>,
    pub arrived: Instant,
}

/// The right to verify one message: a permit of the global bound and a place in the peer's
/// share; both come back (and the driver is woken) when it is dropped.
pub struct Verifying {
    _global: OwnedSemaphorePermit,
    running: Arc<Vec<AtomicUsize>>,
    peer: usize,
    done: Arc<Notify>,
}

impl Drop for Verifying {
    fn drop(&mut self) {
        if let Some(running) = self.running.get(self.peer) {
            running.fetch_sub(1, Ordering::Relaxed);
        }
        self.done.notify_one();
    }
}

/// The driver's per-peer queues of messages waiting for verification.
pub struct Intake {
    queues: Vec<VecDeque<Queued>>,
    running: Arc<Vec<AtomicUsize>>,
    share: usize,
    /// Where the next pass starts (so no peer is always first).
    next: usize,
    /// Notified each time a verification ends.
    pub done: Arc<Notify>,
}

impl Intake {
    /// Queues for `validators` peers, each with `share` verifications at once at most.
    pub fn new(validators: usize, share: usize) -> Intake {
        let validators = validators.max(1);
        Intake {
            queues: (0..validators).map(|_| VecDeque::new()).collect(),
            running: Arc::new((0..validators).map(|_| AtomicUsize::new(0)).collect()),
            share: share.max(1),
            next: 0,
            done: Arc::new(Notify::new()),
        }
    }

    /// Verifications one peer may have running at once.
    #[cfg(test)]
    pub fn share(&self) -> usize {
        self.share
    }

    /// Queues a message (its ticket bounds the queue).
    pub fn push(&mut self, from: ValidatorIndex, queued: Queued) {
        if let Some(queue) = self.queues.get_mut(from.as_usize()) {
            queue.push_back(queued);
        }
    }

    pub fn waiting(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Hands queued messages to `start`, one per peer in turn, while the peer is under its share
    /// and `global` has permits.
    pub fn dispatch(
        &mut self,
        global: &Arc<Semaphore>,
        mut start: impl FnMut(ValidatorIndex, Queued, Verifying),
    ) {
        let peers = self.queues.len();
        loop {
            let mut started = false;
            for offset in 0..peers {
                let peer = (self.next + offset) % peers;
                let Some(running) = self.running.get(peer) else { continue };
                if self.queues[peer].is_empty() || running.load(Ordering::Relaxed) >= self.share {
                    continue;
                }
                let Ok(permit) = global.clone().try_acquire_owned() else {
                    self.next = peer;
                    return;
                };
                let Some(queued) = self.queues[peer].pop_front() else { continue };
                running.fetch_add(1, Ordering::Relaxed);
                let verifying = Verifying {
                    _global: permit,
                    running: self.running.clone(),
                    peer,
                    done: self.done.clone(),
                };
                start(ValidatorIndex(peer as u16), queued, verifying);
                started = true;
            }
            self.next = (self.next + 1) % peers;
            if !started {
                return;
            }
        }
    }
}

/// The replica's position when a message is handed to verification. Views, the low watermark
/// and the committed height only grow, so what is stale against this is stale for good.
#[derive(Clone, Copy, Debug, Default)]
pub struct Freshness {
    pub view: View,
    pub low: Height,
    pub committed: Height,
}

impl Freshness {
    /// The drop reason if the replica would certainly drop `message` (or could do nothing with
    /// it): votes of an older view, heights already committed or below the low watermark.
    pub fn stale(&self, message: &Message) -> Option<&'static str> {
        let old_view = |view: View| view < self.view;
        let (view, height, committed_is_stale) = match message {
            Message::PrePrepare { pre_prepare, .. } => {
                (Some(pre_prepare.body.view), Some(pre_prepare.body.height), true)
            }
            Message::Prepare(prepare) => (Some(prepare.body.view), Some(prepare.body.height), false),
            Message::Commit(commit) => (Some(commit.body.view), Some(commit.body.height), true),
            Message::Checkpoint(checkpoint) => (None, Some(checkpoint.body.height), false),
            Message::ViewChange(view_change) => (Some(view_change.body.new_view), None, false),
            Message::NewView(new_view) => (Some(new_view.body.view), None, false),
            Message::Batch { height, .. } => (None, Some(*height), true),
            Message::Status(_) | Message::FetchBatch { .. } => (None, None, false),
        };
        if view.is_some_and(old_view) {
            return Some("stale_view");
        }
        let floor = if committed_is_stale { self.committed.max(self.low) } else { self.low };
        if height.is_some_and(|height| height <= floor) {
            return Some("stale_height");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(size: usize) -> Bytes {
        Bytes::from(vec![0u8; size])
    }

    #[test]
    fn a_peer_over_its_budget_is_refused_and_others_are_not() {
        let budgets = InboundBudgets::new(4, 3, 1000);
        let mut held: Vec<Ticket> =
            (0..3).map(|_| budgets.admit(ValidatorIndex(1), 10).expect("room")).collect();
        assert!(budgets.admit(ValidatorIndex(1), 10).is_none(), "a fourth message");
        assert!(budgets.admit(ValidatorIndex(2), 10).is_some(), "another peer");
        assert!(budgets.admit(ValidatorIndex(2), 1001).is_none(), "over the byte budget");
        assert!(budgets.admit(ValidatorIndex(9), 1).is_none(), "no such validator");
        held.pop();
        assert_eq!(budgets.load(ValidatorIndex(1)), (2, 20));
        assert!(budgets.admit(ValidatorIndex(1), 10).is_some(), "a ticket dropped gives its place back");
    }

    #[tokio::test]
    async fn dispatch_takes_peers_in_turn_within_their_share() {
        let budgets = InboundBudgets::new(4, 10_000, 1 << 30);
        let global = Arc::new(Semaphore::new(16));
        let mut intake = Intake::new(4, PEER_VERIFICATIONS_MAX);
        assert_eq!(intake.share(), PEER_VERIFICATIONS_MAX);
        // A flooding peer 3 and an honest peer 0 with two votes.
        for _ in 0..1000 {
            let ticket = budgets.admit(ValidatorIndex(3), 10).expect("room");
            intake.push(
                ValidatorIndex(3),
                Queued { bytes: bytes(10), ticket: Some(ticket), arrived: Instant::now() },
            );
        }
        for _ in 0..2 {
            let ticket = budgets.admit(ValidatorIndex(0), 10).expect("room");
            intake.push(
                ValidatorIndex(0),
                Queued { bytes: bytes(10), ticket: Some(ticket), arrived: Instant::now() },
            );
        }
        let mut started = Vec::new();
        intake.dispatch(&global, |peer, _, verifying| started.push((peer, verifying)));
        let from = |peer: u16| started.iter().filter(|(p, _)| *p == ValidatorIndex(peer)).count();
        assert_eq!(from(0), 2, "the honest votes are verified at once");
        assert_eq!(from(3), PEER_VERIFICATIONS_MAX, "the flood gets its share, no more");
        assert_eq!(intake.waiting(), 1000 - PEER_VERIFICATIONS_MAX);
        // A finished verification frees a place in its peer's share.
        started.retain(|(peer, _)| *peer != ValidatorIndex(3));
        let mut more = Vec::new();
        intake.dispatch(&global, |peer, _, verifying| more.push((peer, verifying)));
        assert_eq!(more.len(), PEER_VERIFICATIONS_MAX);
        assert!(more.iter().all(|(peer, _)| *peer == ValidatorIndex(3)));
    }

    #[test]
    fn freshness_drops_only_what_is_certainly_stale() {
        use tetrad_consensus::{Batch, Digest, Prepare, Signed};
        let fresh = Freshness { view: View(3), low: Height(16), committed: Height(20) };
        let prepare = |view: u64, height: u64| {
            Message::Prepare(Signed {
                body: Prepare { view: View(view), height: Height(height), digest: Digest::ZERO },
                signer: ValidatorIndex(1),
                signature: tetrad_consensus::Signature([0; 64]),
            })
        };
        assert_eq!(fresh.stale(&prepare(2, 30)), Some("stale_view"));
        assert_eq!(fresh.stale(&prepare(3, 16)), Some("stale_height"));
        assert_eq!(fresh.stale(&prepare(3, 18)), None, "a prepare above the low watermark");
        assert_eq!(fresh.stale(&prepare(4, 30)), None, "a later view is not stale");
        let batch = |height: u64| Message::Batch {
            height: Height(height),
            batch: Arc::new(Batch::empty(View(3), ValidatorIndex(0))),
        };
        assert_eq!(fresh.stale(&batch(20)), Some("stale_height"));
        assert_eq!(fresh.stale(&batch(21)), None);
        assert_eq!(fresh.stale(&Message::FetchBatch { height: Height(1), digest: Digest::ZERO }), None);
    }
}
