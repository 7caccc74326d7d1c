//! What `GET /health` answers: whether consensus is making progress, has nothing to do, or is
//! stuck, decided from what the driver reports each time its loop runs.
//!
//! | status | HTTP | when |
//! | --- | --- | --- |
//! | `progressing` | 200 | work waits and a height was committed (executed, for a full node) within the stall limit |
//! | `idle` | 200 | no work waits (a validator: no transaction ready, nothing in flight, no view change; a full node: a peer said it has nothing newer) |
//! | `syncing` | 200 | behind the others and catching up (committed heights wait for execution, or a full node fetching blocks), within the stall limit |
//! | `stalled` | 503 | work has waited longer than the stall limit without progress (no quorum, a view change that does not complete, no peer answering block sync) |
//! | `stopped` | 503 | the driver's loop has not run for longer than the stall limit (a node whose loop *ended* exits instead) |
//!
//! The stall limit is three view-change timeouts of genesis, at least [`STALL_AFTER_MIN`]: one
//! view change (a crashed primary) takes about one timeout and is not a stall.

use std::time::{Duration, Instant};

use tetrad_consensus::Height;
use tetrad_rpc::api::{Health, HealthView};

/// The shortest stall limit.
pub const STALL_AFTER_MIN: Duration = Duration::from_secs(3);
/// The driver's loop runs at least every half second (its ticker); this long without a run is
/// `stopped` (whatever the stall limit).
pub const HEARTBEAT_STALE_MIN: Duration = Duration::from_secs(10);

/// The stall limit for a genesis view-change timeout.
pub fn stall_after(view_change_timeout_ms: u64) -> Duration {
    Duration::from_millis(view_change_timeout_ms.saturating_mul(3)).max(STALL_AFTER_MIN)
}

/// What the driver says of its progress, each time its loop runs.
#[derive(Clone, Debug)]
pub struct Liveness {
    /// When the loop last ran.
    pub heartbeat: Instant,
    /// When the node last made progress, or last had nothing to do (so that the first work
    /// after a quiet hour is not taken for a stall).
    pub progress_at: Instant,
    /// Whether work waits (see the table above).
    pub pending_work: bool,
    /// Whether the work that waits is catching up (state transfer, execution behind agreement).
    pub catching_up: bool,
    /// Whether a view change is under way.
    pub view_changing: bool,
    pub stall_after: Duration,
}

impl Liveness {
    pub fn new(now: Instant, stall_after: Duration) -> Liveness {
        Liveness {
            heartbeat: now,
            progress_at: now,
            pending_work: false,
            catching_up: false,
            view_changing: false,
            stall_after,
        }
    }

    /// One run of the driver's loop: `progressed` if the height moved since the last run.
    pub fn beat(&mut self, now: Instant, progressed: bool, pending_work: bool) {
        self.heartbeat = now;
        self.pending_work = pending_work;
        if progressed || !pending_work {
            self.progress_at = now;
        }
    }

    /// The `/health` answer at `now`, for a node whose last executed height is `height`.
    pub fn health(&self, now: Instant, height: Height) -> HealthView {
        let since_beat = now.saturating_duration_since(self.heartbeat);
        let since_progress = now.saturating_duration_since(self.progress_at);
        let (status, reason) = if since_beat > self.stall_after.max(HEARTBEAT_STALE_MIN) {
            (Health::Stopped, format!("the consensus loop has not run for {} ms", since_beat.as_millis()))
        } else if !self.pending_work {
            (Health::Idle, "nothing to do: no transaction is ready and nothing is in flight".to_owned())
        } else if since_progress > self.stall_after {
            let what = if self.view_changing {
                "a view change has not completed"
            } else if self.catching_up {
                "catching up has made no progress"
            } else {
                "work waits but no height was committed"
            };
            (Health::Stalled, format!("{what} for {} ms", since_progress.as_millis()))
        } else if self.catching_up {
            (Health::Syncing, "behind the others and catching up".to_owned())
        } else {
            (Health::Progressing, "work waits and heights are being committed".to_owned())
        };
        HealthView {
            status,
            reason,
            height,
            last_progress_ms: u64::try_from(since_progress.as_millis()).unwrap_or(u64::MAX),
            pending_work: self.pending_work,
            stall_after_ms: u64::try_from(self.stall_after.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(6);

    #[test]
    fn idle_progressing_stalled_and_stopped() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start, STALL);
        assert_eq!(liveness.health(start, Height(0)).status, Health::Idle);
        // Work appears after a long quiet time: not a stall yet.
        let later = start + Duration::from_secs(3600);
        liveness.beat(later, false, false);
        liveness.beat(later + Duration::from_secs(1), false, true);
        assert_eq!(liveness.health(later + Duration::from_secs(2), Height(0)).status, Health::Progressing);
        // No progress for longer than the limit while work waits.
        let stuck = later + Duration::from_secs(8);
        liveness.beat(stuck, false, true);
        let health = liveness.health(stuck, Height(0));
        assert_eq!(health.status, Health::Stalled);
        assert!(health.reason.contains("no height was committed"), "{}", health.reason);
        assert!(!health.status.is_healthy());
        // A commit makes it healthy again.
        liveness.beat(stuck + Duration::from_millis(10), true, true);
        assert_eq!(liveness.health(stuck + Duration::from_millis(20), Height(5)).status, Health::Progressing);
        // A loop that stopped running.
        let silent = stuck + Duration::from_secs(30);
        assert_eq!(liveness.health(silent, Height(5)).status, Health::Stopped);
    }

    #[test]
    fn view_change_and_catching_up_are_named() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start, STALL);
        liveness.view_changing = true;
        liveness.beat(start + Duration::from_secs(1), false, true);
        liveness.beat(start + Duration::from_secs(9), false, true);
        let health = liveness.health(start + Duration::from_secs(9), Height(3));
        assert_eq!(health.status, Health::Stalled);
        assert!(health.reason.contains("view change"), "{}", health.reason);
        liveness.view_changing = false;
        liveness.catching_up = true;
        liveness.beat(start + Duration::from_secs(10), true, true);
        assert_eq!(liveness.health(start + Duration::from_secs(10), Height(4)).status, Health::Syncing);
    }
}
