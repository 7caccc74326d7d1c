//! Where a transaction's time goes: when each phase of each block happened at this node.
//!
//! Phases of a transaction, as this node sees them (issue 17):
//!
//! | phase | from → to | stamped by |
//! | --- | --- | --- |
//! | `admission` | the RPC call reached the node → the transaction is in the mempool | `api.rs` (per call) |
//! | `mempool` | in this node's mempool (by RPC or gossip) → proposed | the executor, from the pool's entry |
//! | `pre_prepare` | proposed → this node accepted the pre-prepare (0 at the primary) | the driver |
//! | `prepare` | accepted → prepared (2f prepares; this node then sends its commit) | the driver |
//! | `commit` | prepared → committed-local (2f+1 commits; includes the synced safety write before the commit is sent) | the driver |
//! | `execute` | committed → executed and written (one synced RocksDB write) | the executor |
//!
//! The driver stamps a height when the replica's actions show a phase: its own pre-prepare
//! (proposed here), its prepare (accepted), its commit (prepared), a delivered block
//! (committed). The stamp is taken when the round that produced it ends, before the round's
//! synced write, so the write is part of the next phase. "Proposed" is this node's own stamp if
//! it proposed the batch, otherwise the batch's timestamp (the primary's wall clock, in whole
//! milliseconds). Stamps are microseconds since the Unix epoch on this machine's wall clock: on
//! one machine every process reads the same clock, so stamps of a local network and of a client
//! on that machine compare directly; across machines they are only as close as the clocks.
//!
//! Each executed block's timing is kept for the last [`TIMINGS_BLOCKS_MAX`] blocks (and at most
//! [`TIMINGS_TXS_MAX`] transactions) and served at `GET /timing/blocks/{height}`; every phase is
//! counted per transaction in the histogram `tetrad_tx_phase_seconds{phase}` of `/metrics`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tetrad_consensus::wire::Message;
use tetrad_consensus::{Committed, Height, Outgoing, ValidatorIndex};
use tetrad_rpc::api::{BlockTiming, TxTiming};

/// Microseconds since the Unix epoch on this machine's wall clock.
pub fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The wall-clock time of a monotonic instant of this process (anchored once per process, so
/// stamps taken as `Instant`s and as wall-clock time agree).
pub fn unix_us_of(at: Instant) -> u64 {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    let (anchor, anchor_us) = *ANCHOR.get_or_init(|| (Instant::now(), unix_us()));
    if at >= anchor {
        anchor_us.saturating_add(at.duration_since(anchor).as_micros() as u64)
    } else {
        anchor_us.saturating_sub(anchor.duration_since(at).as_micros() as u64)
    }
}

/// What this node saw of one height, in µs since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeightStamps {
    /// This node proposed the batch (it was the primary).
    pub proposed_here: Option<u64>,
    /// This node accepted the pre-prepare (or proposed it).
    pub pre_prepared: Option<u64>,
    /// This node prepared it (sent its commit).
    pub prepared: Option<u64>,
    /// This node delivered it as committed.
    pub committed: Option<u64>,
}

/// Heights stamped at most (far above the watermark window: entries go when delivered, or when
/// the window moves past them).
const STAMPED_HEIGHTS_MAX: usize = 4096;

/// The driver's stamps of the heights not yet delivered.
#[derive(Default)]
pub struct Stamper {
    heights: BTreeMap<Height, HeightStamps>,
}

impl Stamper {
    /// Stamps the phases that `actions` show at `now_us` (only the first stamp of each phase
    /// counts: retransmissions resend the same messages later).
    pub fn observe(
        &mut self,
        me: ValidatorIndex,
        send_after_persist: &[Outgoing],
        send: &[Outgoing],
        committed: &[Committed],
        now_us: u64,
    ) {
        for outgoing in send_after_persist.iter().chain(send) {
            let (height, proposed, phase) = match &outgoing.message {
                Message::PrePrepare { pre_prepare, .. } if pre_prepare.signer == me => {
                    (pre_prepare.body.height, true, Phase::PrePrepared)
                }
                Message::Prepare(prepare) if prepare.signer == me => {
                    (prepare.body.height, false, Phase::PrePrepared)
                }
                Message::Commit(commit) if commit.signer == me => {
                    (commit.body.height, false, Phase::Prepared)
                }
                _ => continue,
            };
            if self.heights.len() >= STAMPED_HEIGHTS_MAX && !self.heights.contains_key(&height) {
                // Bounded: the oldest heights go first (they were never delivered here).
                self.heights.pop_first();
            }
            let stamps = self.heights.entry(height).or_default();
            if proposed {
                stamps.proposed_here.get_or_insert(now_us);
            }
            match phase {
                Phase::PrePrepared => stamps.pre_prepared.get_or_insert(now_us),
                Phase::Prepared => stamps.prepared.get_or_insert(now_us),
            };
        }
        for block in committed {
            self.heights.entry(block.height).or_default().committed.get_or_insert(now_us);
        }
    }

    /// The stamps of a delivered height (and every lower one is forgotten).
    pub fn take(&mut self, height: Height) -> HeightStamps {
        let stamps = self.heights.remove(&height).unwrap_or_default();
        while self.heights.first_key_value().is_some_and(|(first, _)| *first < height) {
            self.heights.pop_first();
        }
        stamps
    }
}

enum Phase {
    PrePrepared,
    Prepared,
}

/// Blocks whose timing is kept, and transactions in them at most.
pub const TIMINGS_BLOCKS_MAX: usize = 1024;
pub const TIMINGS_TXS_MAX: usize = 100_000;

/// The timing of the last executed blocks (the executor writes, the RPC reads).
#[derive(Clone, Default)]
pub struct Timings {
    inner: Arc<Mutex<TimingsInner>>,
}

#[derive(Default)]
struct TimingsInner {
    blocks: VecDeque<BlockTiming>,
    txs: usize,
}

impl Timings {
    pub fn push(&self, timing: BlockTiming) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.txs += timing.txs.len();
        inner.blocks.push_back(timing);
        while inner.blocks.len() > TIMINGS_BLOCKS_MAX
            || (inner.txs > TIMINGS_TXS_MAX && inner.blocks.len() > 1)
        {
            if let Some(old) = inner.blocks.pop_front() {
                inner.txs -= old.txs.len();
            }
        }
    }

    pub fn get(&self, height: Height) -> Option<BlockTiming> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let first = inner.blocks.front()?.height;
        let index = usize::try_from(height.0.checked_sub(first.0)?).ok()?;
        // Heights are consecutive unless the executor skipped one; then search.
        match inner.blocks.get(index) {
            Some(timing) if timing.height == height => Some(timing.clone()),
            _ => inner.blocks.iter().find(|timing| timing.height == height).cloned(),
        }
    }
}

/// A block's timing from the driver's stamps, the batch timestamp, the pool's stamps of its
/// transactions and the moment it was written; every phase is counted in the histograms.
pub fn block_timing(
    height: Height,
    stamps: HeightStamps,
    batch_timestamp_ms: u64,
    txs: Vec<TxTiming>,
    executed_us: u64,
) -> BlockTiming {
    let proposed_us = stamps.proposed_here.unwrap_or(batch_timestamp_ms.saturating_mul(1000));
    let count = txs.len() as u64;
    for tx in &txs {
        if let Some(pooled) = tx.pooled_us {
            PHASES.observe(TxPhase::Mempool, proposed_us.saturating_sub(pooled), 1);
        }
    }
    let pre_prepared = stamps.pre_prepared;
    let record = |phase, from: Option<u64>, to: Option<u64>| {
        if let (Some(from), Some(to)) = (from, to) {
            PHASES.observe(phase, to.saturating_sub(from), count);
        }
    };
    record(TxPhase::PrePrepare, Some(proposed_us), pre_prepared);
    record(TxPhase::Prepare, pre_prepared, stamps.prepared);
    record(TxPhase::Commit, stamps.prepared, stamps.committed);
    record(TxPhase::Execute, stamps.committed, Some(executed_us));
    BlockTiming {
        height,
        proposed_us,
        proposed_here: stamps.proposed_here.is_some(),
        pre_prepared_us: pre_prepared,
        prepared_us: stamps.prepared,
        committed_us: stamps.committed,
        executed_us,
        txs,
    }
}

/// A phase of a transaction at this node (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxPhase {
    Admission,
    Mempool,
    PrePrepare,
    Prepare,
    Commit,
    Execute,
}

impl TxPhase {
    pub const ALL: [TxPhase; 6] = [
        TxPhase::Admission,
        TxPhase::Mempool,
        TxPhase::PrePrepare,
        TxPhase::Prepare,
        TxPhase::Commit,
        TxPhase::Execute,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TxPhase::Admission => "admission",
            TxPhase::Mempool => "mempool",
            TxPhase::PrePrepare => "pre_prepare",
            TxPhase::Prepare => "prepare",
            TxPhase::Commit => "commit",
            TxPhase::Execute => "execute",
        }
    }
}

/// Upper bounds of the histogram buckets, in µs (the text shows seconds).
const BUCKETS_US: [u64; 18] = [
    100, 250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 50_000, 100_000,
    200_000, 500_000, 1_000_000, 5_000_000,
];

/// One histogram per phase with fixed buckets and atomic counts: recording a transaction costs a
/// few atomic additions and nothing is kept per sample (a histogram of the `metrics` crate keeps
/// every sample until the next scrape, which at 15,000 tx/s and no scraper grows without bound).
pub struct PhaseHistograms {
    counts: [[AtomicU64; BUCKETS_US.len() + 1]; TxPhase::ALL.len()],
    sums_us: [AtomicU64; TxPhase::ALL.len()],
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ROW: [AtomicU64; BUCKETS_US.len() + 1] = [ZERO; BUCKETS_US.len() + 1];

/// The process's phase histograms.
pub static PHASES: PhaseHistograms =
    PhaseHistograms { counts: [ROW; TxPhase::ALL.len()], sums_us: [ZERO; TxPhase::ALL.len()] };

impl PhaseHistograms {
    /// Counts `transactions` that each spent `duration_us` in `phase`.
    pub fn observe(&self, phase: TxPhase, duration_us: u64, transactions: u64) {
        if transactions == 0 {
            return;
        }
        let row = phase as usize;
        let bucket = BUCKETS_US.iter().position(|bound| duration_us <= *bound).unwrap_or(BUCKETS_US.len());
        self.counts[row][bucket].fetch_add(transactions, Ordering::Relaxed);
        self.sums_us[row].fetch_add(duration_us.saturating_mul(transactions), Ordering::Relaxed);
    }

    /// The Prometheus text of every phase's histogram.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let name = "tetrad_tx_phase_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} time each committed transaction spent in each phase at this node (see node/src/daemon/timing.rs)"
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for phase in TxPhase::ALL {
            let row = phase as usize;
            let mut cumulative = 0u64;
            for (index, count) in self.counts[row].iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                let le = match BUCKETS_US.get(index) {
                    Some(bound) => format!("{}", *bound as f64 / 1e6),
                    None => "+Inf".to_string(),
                };
                let _ = writeln!(out, "{name}_bucket{{phase=\"{}\",le=\"{le}\"}} {cumulative}", phase.name());
            }
            let sum = self.sums_us[row].load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{phase=\"{}\"}} {sum}", phase.name());
            let _ = writeln!(out, "{name}_count{{phase=\"{}\"}} {cumulative}", phase.name());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_transactions_in_cumulative_buckets() {
        let histograms =
            PhaseHistograms { counts: [ROW; TxPhase::ALL.len()], sums_us: [ZERO; TxPhase::ALL.len()] };
        histograms.observe(TxPhase::Commit, 800, 10);
        histograms.observe(TxPhase::Commit, 12_000, 5);
        histograms.observe(TxPhase::Commit, 9_000_000, 1);
        let text = histograms.render();
        assert!(text.contains("tetrad_tx_phase_seconds_bucket{phase=\"commit\",le=\"0.0005\"} 0"), "{text}");
        assert!(text.contains("tetrad_tx_phase_seconds_bucket{phase=\"commit\",le=\"0.001\"} 10"), "{text}");
        assert!(text.contains("tetrad_tx_phase_seconds_bucket{phase=\"commit\",le=\"0.015\"} 15"), "{text}");
        assert!(text.contains("tetrad_tx_phase_seconds_bucket{phase=\"commit\",le=\"+Inf\"} 16"), "{text}");
        assert!(text.contains("tetrad_tx_phase_seconds_count{phase=\"commit\"} 16"), "{text}");
        assert!(text.contains("tetrad_tx_phase_seconds_count{phase=\"admission\"} 0"), "{text}");
    }

    #[test]
    fn timings_keep_the_last_blocks_within_their_bounds() {
        let timings = Timings::default();
        for height in 1..=(TIMINGS_BLOCKS_MAX as u64 + 5) {
            timings.push(BlockTiming {
                height: Height(height),
                proposed_us: 1,
                proposed_here: true,
                pre_prepared_us: None,
                prepared_us: None,
                committed_us: None,
                executed_us: 2,
                txs: Vec::new(),
            });
        }
        assert!(timings.get(Height(5)).is_none());
        assert_eq!(timings.get(Height(6)).map(|timing| timing.height), Some(Height(6)));
        assert_eq!(timings.get(Height(1029)).map(|timing| timing.height), Some(Height(1029)));
        assert!(timings.get(Height(1030)).is_none());
    }

    #[test]
    fn an_instant_and_the_wall_clock_agree() {
        let before = unix_us();
        let stamped = unix_us_of(Instant::now());
        let after = unix_us();
        // The anchor is taken once; the two clocks may drift apart by a little since.
        assert!(stamped + 5_000 >= before && stamped <= after + 5_000, "{before} {stamped} {after}");
    }
}
