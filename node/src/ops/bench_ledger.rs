//! `tetrad bench ledger`: execute and persist transfers, signatures excluded.
//!
//! Transactions are generated outside the timed sections (with all-zero signatures: execution
//! never checks signatures, admission does). The clock runs over `execute` (state reads, tree
//! update, header) and `Store::commit` (one synced RocksDB write batch per block).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tetrad_consensus::{Batch, ValidatorIndex, View};
use tetrad_ledger::scratch::ScratchDir;
use tetrad_ledger::testkit::TestChain;
use tetrad_ledger::tx::encode_payload;
use tetrad_ledger::{Block, Store, execute};

pub struct LedgerBench {
    pub txs: u64,
    pub accounts: u64,
    pub block_txs: u64,
    pub dir: Option<PathBuf>,
    pub sync: bool,
}

pub fn run(bench: &LedgerBench) -> Result<()> {
    anyhow::ensure!(
        bench.accounts >= 2 && bench.block_txs >= 1,
        "need at least 2 accounts and 1 tx per block"
    );
    let scratch = ScratchDir::new("bench-ledger").context("scratch directory")?;
    let path = bench.dir.clone().unwrap_or_else(|| scratch.join("db"));
    let chain = TestChain::new(4, bench.accounts, 1_000_000_000);
    let mut store = Store::open_or_init(&path, &chain.genesis)?;
    store.set_sync_writes(bench.sync);
    let mut nonces = vec![0u64; bench.accounts as usize];
    let blocks = bench.txs.div_ceil(bench.block_txs);
    let (mut execute_time, mut commit_time) = (Duration::ZERO, Duration::ZERO);
    let mut sent = 0u64;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    println!(
        "executing {} transfers among {} accounts in blocks of {}",
        bench.txs, bench.accounts, bench.block_txs
    );
    for block_index in 0..blocks {
        let count = bench.block_txs.min(bench.txs - sent);
        let txs: Vec<_> = (0..count)
            .map(|_| {
                // xorshift64: uniform senders and recipients.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let from = state % bench.accounts;
                let to = (state >> 32) % bench.accounts;
                let nonce = nonces[from as usize];
                nonces[from as usize] += 1;
                chain.unsigned_transfer(from, nonce, to, 1)
            })
            .collect();
        sent += count;
        let head = store.head();
        let batch = Batch {
            view: View(0),
            proposer: ValidatorIndex(0),
            timestamp_ms: head.timestamp_ms + 1,
            payload: encode_payload(&txs),
        };
        let certificate = chain.certify(View(0), head.height.next(), batch.digest());

        let started = Instant::now();
        let execution = store.with_state(|head, state| execute(state, head, &batch, &txs))?;
        let executed = Instant::now();
        let block = Block { header: execution.header.clone(), batch, certificate };
        store.commit(&block, &execution)?;
        execute_time += executed - started;
        commit_time += executed.elapsed();

        if (block_index + 1) % 100 == 0 {
            eprintln!("  {} blocks, {} txs", block_index + 1, sent);
        }
    }
    let total = execute_time + commit_time;
    println!("blocks           {blocks}");
    println!("execute          {:.2} s", execute_time.as_secs_f64());
    println!(
        "commit           {:.2} s ({})",
        commit_time.as_secs_f64(),
        if bench.sync { "fsync per block" } else { "no fsync" }
    );
    println!("throughput       {:.0} tx/s", sent as f64 / total.as_secs_f64());
    println!("final height     {}  state root {}", store.head().height, store.head().state_root);
    Ok(())
}
