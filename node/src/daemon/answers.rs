//! The expensive answers, rationed per peer.
//!
//! A ~50-byte `FetchBatch` is answered with a whole batch, and a stale `Status` (or a replayed
//! view-change of the current view) with the whole new-view. Unrationed, one Byzantine validator
//! turns each of its small requests into up to a full frame of this node's upload. So each
//! answer to one peer passes [`Answers::allow`] first:
//!
//! - the same batch (height, digest) goes to one peer at most once per status interval, and the
//!   new-view at most once per status interval: an honest peer asks again after an interval
//!   anyway;
//! - each peer has a byte budget for answers (a token bucket of [`Answers::capacity`] bytes,
//!   refilled at [`Answers::refill_per_second`]), so a peer that asks for many different
//!   batches gets its share of this node's upload and no more.
//!
//! What is refused is dropped and counted; the replica's retransmission covers an honest peer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tetrad_consensus::wire::Message;
use tetrad_consensus::{Digest, Height, ValidatorIndex};

/// Batches remembered as answered, per peer (older ones are forgotten first).
const ANSWERED_BATCHES_MAX: usize = 1024;

struct PeerAnswers {
    batches: HashMap<(Height, Digest), Instant>,
    new_view_at: Option<Instant>,
    tokens: f64,
    refilled_at: Instant,
}

pub struct Answers {
    peers: Vec<PeerAnswers>,
    interval: Duration,
    capacity: f64,
    refill_per_second: f64,
}

impl Answers {
    /// For `validators` peers; `frame_bytes_max` is the largest consensus frame, `interval` the
    /// replica's status interval.
    pub fn new(validators: usize, frame_bytes_max: usize, interval: Duration, now: Instant) -> Answers {
        let capacity = frame_bytes_max.saturating_mul(8) as f64;
        Answers {
            peers: (0..validators)
                .map(|_| PeerAnswers {
                    batches: HashMap::new(),
                    new_view_at: None,
                    tokens: capacity,
                    refilled_at: now,
                })
                .collect(),
            interval,
            capacity,
            refill_per_second: frame_bytes_max.saturating_mul(4) as f64,
        }
    }

    /// Bytes of answers one peer may take in a burst.
    #[cfg(test)]
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    /// Bytes of answers per second one peer may take over time.
    #[cfg(test)]
    pub fn refill_per_second(&self) -> f64 {
        self.refill_per_second
    }

    /// Whether `message` (of `size` encoded bytes) may go to `peer` alone now. Only answers are
    /// rationed (a batch, a new-view); anything else is allowed. On refusal, the drop reason.
    pub fn allow(
        &mut self,
        now: Instant,
        peer: ValidatorIndex,
        message: &Message,
        size: usize,
    ) -> Result<(), &'static str> {
        let interval = self.interval;
        let (capacity, refill) = (self.capacity, self.refill_per_second);
        let Some(answers) = self.peers.get_mut(peer.as_usize()) else { return Ok(()) };
        match message {
            Message::Batch { height, batch } => {
                let key = (*height, batch.digest());
                if answers.batches.get(&key).is_some_and(|at| now.saturating_duration_since(*at) < interval) {
                    return Err("repeated_batch_request");
                }
                answers.spend(now, size, capacity, refill)?;
                if answers.batches.len() >= ANSWERED_BATCHES_MAX {
                    answers.batches.retain(|_, at| now.saturating_duration_since(*at) < interval);
                    if answers.batches.len() >= ANSWERED_BATCHES_MAX {
                        answers.batches.clear();
                    }
                }
                answers.batches.insert(key, now);
                Ok(())
            }
            Message::NewView(_) => {
                if answers.new_view_at.is_some_and(|at| now.saturating_duration_since(at) < interval) {
                    return Err("repeated_new_view_request");
                }
                answers.spend(now, size, capacity, refill)?;
                answers.new_view_at = Some(now);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl PeerAnswers {
    fn spend(&mut self, now: Instant, size: usize, capacity: f64, refill: f64) -> Result<(), &'static str> {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * refill).min(capacity);
        self.refilled_at = now;
        let size = size as f64;
        if size > self.tokens {
            return Err("peer_answer_budget_spent");
        }
        self.tokens -= size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tetrad_consensus::{Batch, View};

    use super::*;

    fn batch(height: u64, payload: usize) -> Message {
        let batch = Batch {
            view: View(0),
            proposer: ValidatorIndex(0),
            timestamp_ms: height,
            payload: vec![7; payload],
        };
        Message::Batch { height: Height(height), batch: Arc::new(batch) }
    }

    #[test]
    fn a_repeated_request_is_answered_once_per_interval() {
        let start = Instant::now();
        let mut answers = Answers::new(4, 1 << 20, Duration::from_millis(500), start);
        let message = batch(5, 100);
        assert_eq!(answers.allow(start, ValidatorIndex(1), &message, 200), Ok(()));
        for step in 1..50 {
            let now = start + Duration::from_millis(step);
            assert_eq!(answers.allow(now, ValidatorIndex(1), &message, 200), Err("repeated_batch_request"));
        }
        // Another peer asking for the same batch is answered.
        assert_eq!(answers.allow(start, ValidatorIndex(2), &message, 200), Ok(()));
        // After an interval the same peer is answered again.
        assert_eq!(
            answers.allow(start + Duration::from_millis(500), ValidatorIndex(1), &message, 200),
            Ok(())
        );
    }

    #[test]
    fn many_different_requests_spend_the_peers_byte_budget_only() {
        let start = Instant::now();
        let frame = 1 << 20;
        let mut answers = Answers::new(4, frame, Duration::from_millis(500), start);
        let mut sent = 0usize;
        for height in 1..=100 {
            if answers.allow(start, ValidatorIndex(3), &batch(height, 10), frame).is_ok() {
                sent += frame;
            }
        }
        assert_eq!(sent as f64, answers.capacity(), "a burst gets the capacity, no more");
        assert_eq!(
            answers.allow(start, ValidatorIndex(0), &batch(1, 10), frame),
            Ok(()),
            "others unaffected"
        );
        // A second later the peer has a second's refill.
        let later = start + Duration::from_secs(1);
        let mut more = 0usize;
        for height in 101..=200 {
            if answers.allow(later, ValidatorIndex(3), &batch(height, 10), frame).is_ok() {
                more += frame;
            }
        }
        assert_eq!(more as f64, answers.refill_per_second());
    }
}
