//! Node metrics, exported in Prometheus text format at `/metrics`.
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `tetrad_height` | gauge | last executed height |
//! | `tetrad_view` | gauge | current view |
//! | `tetrad_view_changes_total` | counter | view changes this node started |
//! | `tetrad_committed_txs_total` | counter | transactions in executed blocks |
//! | `tetrad_left_out_txs_total` | counter | transactions of committed batches that the block left out: their nonce was wrong (a copy of one that executed, or one ahead of its sender's sequence), so they never executed |
//! | `tetrad_batch_txs` | histogram | transactions per block |
//! | `tetrad_mempool_txs` | gauge | transactions in the mempool |
//! | `tetrad_mempool_proposable_txs` | gauge | of those, the ones a batch could take now (consecutive nonces from the account's next one, payable, not in a live proposal) |
//! | `tetrad_mempool_gapped_txs` | gauge | of those, the ones behind a nonce gap |
//! | `tetrad_mempool_refused_total{reason}` | counter | submissions (RPC and gossip) the mempool refused, by reason (`no_account`, `not_validator`, `insufficient_balance`, `nonce_too_far_ahead`, `stale_nonce`, `sender_queue_full`, `mempool_full`, `duplicate`, and the static checks' reasons) |
//! | `tetrad_mempool_dropped_total{reason}` | counter | admitted transactions the mempool let go without executing them, by reason (`expired`, `evicted_for_proposable`, `evicted_for_lower_nonce`, `unpayable`, `nonce_used`) |
//! | `tetrad_peers` | gauge | connected peers |
//! | `tetrad_full_node_peers` | gauge | connected peers that are not validators (full nodes) |
//! | `tetrad_consensus_messages_waiting` | gauge | consensus messages waiting for verification (all senders) |
//! | `tetrad_sync_blocks_total` | counter | blocks a full node received by block sync |
//! | `tetrad_messages_dropped_total{reason}` | counter | messages and transactions dropped, by reason (among them `peer_inbound_budget`, `peer_outbound_full`, `stale_view`, `stale_height`, `repeated_batch_request`, `repeated_new_view_request`, `peer_answer_budget_spent`, `sync_request_busy`, `invalid_gossip`, `gossip_nothing_admitted` (a valid gossip batch of which this node admitted nothing: not forwarded), `p2p_refused_*`, `p2p_peer_banned`) |
//! | `tetrad_rpc_requests_total{method,outcome}` | counter | RPC requests |
//! | `tetrad_storage_write_seconds` | histogram | time to commit one block to RocksDB (synced) |
//! | `tetrad_safety_write_seconds` | histogram | time of the driver's synced write of the safety records of one round |
//! | `tetrad_tx_phase_seconds{phase}` | histogram | time each committed transaction spent in each phase at this node: `admission`, `mempool`, `pre_prepare`, `prepare`, `commit`, `execute` (`timing.rs`; per transaction, fixed buckets) |
//! | `tetrad_state_transfers_total` | counter | block-sync requests made |
//! | `tetrad_empty_batches_proposed_total` | counter | empty batches this node proposed as an idle primary, up to the next checkpoint boundary |
//! | `tetrad_early_messages_total` | counter | consensus messages kept until the schedule horizon reached their height |
//! | `tetrad_early_messages` | gauge | such messages waiting now |
//! | `tetrad_consensus_verify_wait_seconds` | histogram | time a consensus message waits for a verification thread |
//! | `tetrad_key_swap_pending` | gauge | 1 while a key rotation is not finished on disk (the old key is not erased yet) |
//! | `tetrad_key_swap_failures_total` | counter | failed attempts to finish a key rotation on disk (retried with a doubling delay up to 5 min) |
//! | `tetrad_tx_checks_total` | counter | transactions whose signature this node checked (RPC, gossip, and batches of others' proposals it had not seen), in batches as they came |
//! | `tetrad_tx_check_batches_total` | counter | those batches (checks ÷ batches: the batch size validators really verify at) |
//! | `tetrad_tx_check_cpu_microseconds_total` | counter | CPU time of the checking threads spent on them (checks ÷ this: the in-run verification rate per core, `tetrad bench`'s bound) |
//! | `tetrad_execute_cpu_microseconds_total` | counter | CPU time the executor spent executing and writing blocks (÷ `tetrad_committed_txs_total`: the execution cost per transaction) |
//! | `tetrad_silent` | gauge | 1 while a validator started with `--accept-double-sign-risk` waits out its safety margin (it signs nothing) |

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tetrad_consensus::Digest;
use tetrad_ledger::Tx;
use tetrad_ledger::tx::{TxError, check_all};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder (once per process).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 10.0, 100.0, 1000.0,
                    5000.0,
                ])
                .map(|builder| builder.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub fn render() -> String {
    HANDLE.get().map(PrometheusHandle::render).unwrap_or_default()
}

pub fn dropped(reason: &'static str, count: u64) {
    metrics::counter!("tetrad_messages_dropped_total", "reason" => reason).increment(count);
}

pub fn gauge(name: &'static str, value: f64) {
    metrics::gauge!(name).set(value);
}

pub fn count(name: &'static str, value: u64) {
    metrics::counter!(name).increment(value);
}

pub fn observe(name: &'static str, value: f64) {
    metrics::histogram!(name).record(value);
}

/// Sets a cumulative count kept elsewhere (the replica's counters).
pub fn counter_absolute(name: &'static str, value: u64) {
    metrics::counter!(name).absolute(value);
}

pub fn mempool_refused_absolute(reason: &'static str, value: u64) {
    metrics::counter!("tetrad_mempool_refused_total", "reason" => reason).absolute(value);
}

pub fn mempool_dropped_absolute(reason: &'static str, value: u64) {
    metrics::counter!("tetrad_mempool_dropped_total", "reason" => reason).absolute(value);
}

pub fn dropped_absolute(reason: &'static str, value: u64) {
    metrics::counter!("tetrad_messages_dropped_total", "reason" => reason).absolute(value);
}

pub fn rpc_request(method: &str, outcome: &str) {
    metrics::counter!("tetrad_rpc_requests_total", "method" => method.to_string(), "outcome" => outcome.to_string())
        .increment(1);
}

/// CPU time this thread has used, in microseconds (0 if the clock cannot be read).
pub fn thread_cpu_micros() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a live timespec for the kernel to write; the clock id is a constant.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000)
        .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000)
}

/// The static checks of `txs` (their signatures verified in one batch, [`check_all`]),
/// counted by [`counted_checks`].
pub fn check_txs(txs: &[Tx], genesis_hash: &Digest) -> Vec<Result<(), TxError>> {
    counted_checks(txs.len(), || check_all(txs, genesis_hash))
}

/// Runs `check`, the static checks of `count` transactions, and counts them with the CPU time
/// they took: the verification rate at the batch sizes this node really sees, measured during
/// the run (the bound `tetrad bench` divides by).
pub fn counted_checks<R>(count: usize, check: impl FnOnce() -> R) -> R {
    let before = thread_cpu_micros();
    let result = check();
    let spent = thread_cpu_micros().saturating_sub(before);
    if count > 0 {
        metrics::counter!("tetrad_tx_checks_total").increment(count as u64);
        metrics::counter!("tetrad_tx_check_batches_total").increment(1);
        metrics::counter!("tetrad_tx_check_cpu_microseconds_total").increment(spent);
    }
    result
}
