//! What the clients saw: one JSON line per transaction, appended as each is resolved, so a
//! campaign that dies still leaves its record. The checker reads it back.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tetrad_consensus::Digest;
use tetrad_ledger::tx::{Address, Tx};

/// What a client was told about one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// A node said it is in the block at `height` (and the client checked that block's
    /// commit certificate: `certificate_verified`).
    Committed,
    /// Refused for good (never admitted anywhere the client knows of): it must not be in the
    /// chain... unless a node admitted it without saying so, which the checker reports.
    Failed,
    /// No definite answer (timeouts, lost connections, a node that went away): it may or may
    /// not be in the chain, but at most once.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    pub hash: Digest,
    /// The signed transaction as the client sent it: the checker recomputes each block's batch
    /// digest from these bytes, and replays the chain from them (not from the fields below,
    /// which are for reading and must agree with it).
    pub tx: Tx,
    pub from: Address,
    pub to: Address,
    pub amount: u64,
    pub nonce: u64,
    pub answer: Answer,
    /// The height the node named (committed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// The receipt the node named said the transfer executed (committed only).
    #[serde(default)]
    pub executed: bool,
    /// The block at `height` carried a commit certificate of a quorum of the genesis validators
    /// over its batch, its hash and tx root matched, and it listed the transaction.
    #[serde(default)]
    pub certificate_verified: bool,
    /// The nodes asked, in order.
    pub nodes: Vec<String>,
    /// Why it ended as it did (the last error, the refusal).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Milliseconds since the campaign started.
    pub submitted_ms: u64,
    pub resolved_ms: u64,
}

/// Appends records to a JSON-lines file, each written with one `write` call (no buffer in this
/// process: a record that `append` returned is in the kernel's page cache, and a crash of the
/// campaign cannot lose it).
pub struct RecordWriter {
    file: std::fs::File,
}

impl RecordWriter {
    pub fn create(path: &Path) -> Result<RecordWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        Ok(RecordWriter { file })
    }

    pub fn append(&mut self, record: &TxRecord) -> Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()?;
        Ok(())
    }
}

pub fn read(path: &Path) -> Result<Vec<TxRecord>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut records = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not a transaction record", path.display(), number + 1))?,
        );
    }
    Ok(records)
}
