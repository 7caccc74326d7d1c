//! Backpressure where work enters (issue 17): the RPC refuses new transactions with a "busy,
//! retry" error once this node holds more than it commits in half a view-change timeout.
//!
//! Why: under an open-loop flood the queues in front of consensus (RPC admission, gossip
//! validation, the mempool, blocks committed but not executed) grew to seconds of work, the
//! CPU went to admitting transactions that could not commit for seconds, consensus messages
//! waited behind that work, and a busy but honest primary was timed out (one or two view
//! changes per saturated run). A node that refuses what it cannot commit soon keeps its queues
//! within a fraction of the view-change timeout, whatever the offered load.
//!
//! The bound is measured, not configured: the transactions this node executed during the last
//! view-change timeout T, halved (what it commits in T/2 at its current pace), and never less
//! than [`BACKLOG_FLOOR_BATCHES`] full batches (an idle chain takes a burst). The backlog is
//! everything the mempool holds: admitted and not yet executed (proposed, committed but not
//! executed, or waiting). Only the RPC is refused: a transaction another node admitted still
//! comes in by gossip, so a backup never waits for work its primary refused (docs/decisions.md,
//! "What a backup waits for").

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The smallest backlog bound, in full batches.
pub const BACKLOG_FLOOR_BATCHES: usize = 4;

pub struct Backpressure {
    /// The view-change timeout: the window over which the executed rate is measured.
    window: Duration,
    floor_txs: usize,
    /// Transactions executed, by block, over the last window.
    executed: Mutex<VecDeque<(Instant, u64)>>,
}

impl Backpressure {
    pub fn new(view_change_timeout: Duration, batch_txs_max: usize) -> Backpressure {
        Backpressure {
            window: view_change_timeout.max(Duration::from_millis(1)),
            floor_txs: BACKLOG_FLOOR_BATCHES.saturating_mul(batch_txs_max.max(1)),
            executed: Mutex::new(VecDeque::new()),
        }
    }

    /// A block of `txs` transactions was executed at `now`.
    pub fn on_executed(&self, txs: u64, now: Instant) {
        let mut executed = self.executed.lock().unwrap_or_else(|p| p.into_inner());
        executed.push_back((now, txs));
        Self::forget_old(&mut executed, now, self.window);
    }

    fn forget_old(executed: &mut VecDeque<(Instant, u64)>, now: Instant, window: Duration) {
        while executed.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > window) {
            executed.pop_front();
        }
    }

    /// The most transactions this node may hold before its RPC refuses more: what it executed
    /// in the last window, halved, and at least the floor.
    pub fn backlog_max(&self, now: Instant) -> usize {
        let mut executed = self.executed.lock().unwrap_or_else(|p| p.into_inner());
        Self::forget_old(&mut executed, now, self.window);
        let in_window: u64 = executed.iter().map(|(_, txs)| *txs).sum();
        usize::try_from(in_window / 2).unwrap_or(usize::MAX).max(self.floor_txs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_half_of_what_executed_in_the_window_and_never_below_the_floor() {
        let backpressure = Backpressure::new(Duration::from_secs(2), 100);
        let start = Instant::now();
        assert_eq!(backpressure.backlog_max(start), 400);
        for block in 0..20u64 {
            backpressure.on_executed(1000, start + Duration::from_millis(100 * block));
        }
        let now = start + Duration::from_millis(1900);
        assert_eq!(backpressure.backlog_max(now), 10_000);
        // The window moves on: blocks older than it no longer count (those of 1,000 ms on do).
        assert_eq!(backpressure.backlog_max(start + Duration::from_millis(3000)), 5_000);
        assert_eq!(backpressure.backlog_max(start + Duration::from_secs(60)), 400);
    }
}
