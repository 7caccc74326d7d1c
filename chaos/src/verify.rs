//! What a client checks of a block a node shows it, trusting only the genesis validators (the
//! campaign rotates no keys): the commit certificate of 2f+1 of them over the block's batch
//! digest, the header's hash, and the tx root over the listed transactions.

use tetrad_consensus::{Digest, ValidatorSet};
use tetrad_rpc::api::BlockView;

/// Checks `block` as the block at `height`. `Err` says what did not hold.
pub fn block(set: &ValidatorSet, block: &BlockView, height: u64) -> Result<(), String> {
    let header = &block.header;
    if header.height.0 != height {
        return Err(format!("asked for block {height}, got the header of {}", header.height.0));
    }
    if block.hash != header.hash() {
        return Err(format!(
            "block {height}: the hash {} is not the header's ({})",
            block.hash,
            header.hash()
        ));
    }
    if usize::try_from(header.tx_count).ok() != Some(block.txs.len()) {
        return Err(format!(
            "block {height}: tx_count {} but {} transactions listed",
            header.tx_count,
            block.txs.len()
        ));
    }
    if tetrad_ledger::block::tx_root(&block.txs) != header.tx_root {
        return Err(format!("block {height}: the listed transactions do not hash to the header's tx root"));
    }
    let Some(certificate) = &block.certificate else {
        return Err(format!("block {height} has no commit certificate"));
    };
    let statement = &certificate.statement;
    if statement.height != header.height || statement.digest != header.batch_digest {
        return Err(format!(
            "block {height}: the certificate is for height {} digest {}, the header says digest {}",
            statement.height.0, statement.digest, header.batch_digest
        ));
    }
    certificate.verify(set).map_err(|error| format!("block {height}: commit certificate: {error}"))
}

/// `block`, and that it lists `tx`.
pub fn tx_in_block(set: &ValidatorSet, view: &BlockView, height: u64, tx: &Digest) -> Result<(), String> {
    block(set, view, height)?;
    if !view.txs.contains(tx) {
        return Err(format!("block {height} does not list transaction {tx}"));
    }
    Ok(())
}
