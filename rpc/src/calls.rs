//! The operations behind both the JSON-RPC methods and the URLs, so that the two always agree on
//! results and error codes.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tetrad_consensus::{Digest, Height};
use tetrad_ledger::light::{AccountStateProof, HeaderProof, TxProof, ValidatorsProof};
use tetrad_ledger::prover::Refusal;
use tetrad_ledger::{Address, Tx};

use crate::api::{
    AccountView, BlockRef, BlockView, CheckpointView, NodeApi, StatusView, TxStatus, TxView, ValidatorsView,
};
use crate::budget::HeldPermit;
use crate::errors::{ErrorCode, RpcError};
use crate::state::AppState;

/// The answer to a submission that does not wait: the hash, and `"status": "pending"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmittedView {
    pub hash: Digest,
    pub status: TxStatus,
}

/// What a submission came to.
pub(crate) enum Submitted {
    /// Admitted to the mempool; the caller did not wait.
    Pending(SubmittedView),
    /// Admitted and then committed (successfully or not: see the view's status).
    Committed(Box<TxView>),
}

/// Admits `tx`, and if `wait`, waits for its commit for at most the server's limit. A waiting
/// submission takes a permit of the wait budget before it is admitted (none left: 503, nothing
/// admitted) and gives back its general permit (`held`) while it waits.
pub(crate) async fn submit<A: NodeApi>(
    state: &AppState<A>,
    tx: Tx,
    wait: bool,
    timeout_ms: Option<u64>,
    held: &HeldPermit,
) -> Result<Submitted, RpcError> {
    let expected_hash = tx.hash();
    let wait_permit = if wait { Some(state.budgets.wait_permit(&state.limits)?) } else { None };
    let hash = state.api.submit(tx).await.map_err(|error| RpcError::from_submit(error, &expected_hash))?;
    let Some(_wait_permit) = wait_permit else {
        return Ok(Submitted::Pending(SubmittedView { hash, status: TxStatus::Pending }));
    };
    held.release();
    let timeout = state.limits.wait_timeout(timeout_ms);
    let waited = tokio::select! {
        waited = state.api.wait_committed(hash, timeout) => waited,
        () = state.stopped() => {
            let message = format!(
                "the server is shutting down; transaction {hash} was admitted but its commit was not seen"
            );
            return Err(RpcError::new(ErrorCode::Unavailable, message).with_data(json!({ "hash": hash })));
        }
    };
    match waited {
        Some(view) => Ok(Submitted::Committed(Box::new(view))),
        None => {
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            let message = format!(
                "timeout waiting for commit: transaction {hash} was admitted but not committed \
                 within {timeout_ms} ms"
            );
            let data = json!({ "hash": hash, "timeout_ms": timeout_ms });
            Err(RpcError::new(ErrorCode::WaitTimeout, message).with_data(data))
        }
    }
}

/// Most transactions in one `submit_transactions` call.
pub const SUBMIT_BATCH_MAX: usize = 1000;

/// Admits many transactions; one entry per transaction: `{hash, status: "pending"}` or
/// `{hash, error: {code, message, data?}}`.
pub(crate) async fn submit_batch<A: NodeApi>(
    state: &AppState<A>,
    txs: Vec<Tx>,
) -> Result<Vec<serde_json::Value>, RpcError> {
    if txs.len() > SUBMIT_BATCH_MAX {
        return Err(RpcError::invalid_params(format!(
            "txs: {} transactions, at most {SUBMIT_BATCH_MAX} per call",
            txs.len()
        )));
    }
    let hashes: Vec<Digest> = txs.iter().map(Tx::hash).collect();
    let results = state.api.submit_batch(txs).await;
    Ok(hashes
        .iter()
        .zip(results)
        .map(|(hash, result)| match result {
            Ok(hash) => json!({ "hash": hash, "status": TxStatus::Pending }),
            Err(error) => json!({ "hash": hash, "error": RpcError::from_submit(error, hash) }),
        })
        .collect())
}

pub(crate) fn status<A: NodeApi>(state: &AppState<A>) -> StatusView {
    state.api.status()
}

pub(crate) fn block<A: NodeApi>(state: &AppState<A>, at: BlockRef) -> Result<BlockView, RpcError> {
    if let Some(block) = state.api.block(at)? {
        return Ok(block);
    }
    Err(match at {
        BlockRef::Height(height) => {
            let head = state.api.status().height;
            RpcError::new(
                ErrorCode::UnknownBlock,
                format!("no block at height {height}; the head is at {head}"),
            )
            .with_data(json!({ "height": height, "head": head }))
        }
        BlockRef::Hash(hash) => RpcError::new(ErrorCode::UnknownBlock, format!("no block with hash {hash}"))
            .with_data(json!({ "hash": hash })),
        BlockRef::Latest => RpcError::new(ErrorCode::UnknownBlock, "the node has no block yet"),
    })
}

pub(crate) fn tx<A: NodeApi>(state: &AppState<A>, hash: &Digest) -> Result<TxView, RpcError> {
    state.api.tx(hash)?.ok_or_else(|| {
        RpcError::new(ErrorCode::UnknownTx, format!("no transaction with hash {hash}"))
            .with_data(json!({ "hash": hash }))
    })
}

pub(crate) fn account<A: NodeApi>(state: &AppState<A>, address: &Address) -> Result<AccountView, RpcError> {
    state.api.account(address)?.ok_or_else(|| {
        RpcError::new(ErrorCode::UnknownAccount, format!("no account at address {address}"))
            .with_data(json!({ "address": address }))
    })
}

pub(crate) fn checkpoint<A: NodeApi>(
    state: &AppState<A>,
    height: Option<Height>,
) -> Result<CheckpointView, RpcError> {
    state.api.checkpoint(height)?.ok_or_else(|| match height {
        Some(height) => {
            RpcError::new(ErrorCode::UnknownCheckpoint, format!("no stable checkpoint at height {height}"))
                .with_data(json!({ "height": height }))
        }
        None => RpcError::new(ErrorCode::UnknownCheckpoint, "no stable checkpoint yet"),
    })
}

pub(crate) fn validators<A: NodeApi>(
    state: &AppState<A>,
    height: Option<Height>,
) -> Result<ValidatorsView, RpcError> {
    if let Some(validators) = state.api.validators(height)? {
        return Ok(validators);
    }
    let head = state.api.status().height;
    Err(match height {
        Some(height) => RpcError::new(
            ErrorCode::UnknownBlock,
            format!("no validator set for height {height}: it is above the head {head}"),
        )
        .with_data(json!({ "height": height, "head": head })),
        None => RpcError::internal("the node has no validator set"),
    })
}

/// The RPC error for a proof a node does not give; `what` names what was asked.
fn refused(refusal: Refusal, what: String) -> RpcError {
    match refusal {
        Refusal::Unknown { height: Some(height) } => {
            RpcError::new(ErrorCode::UnknownBlock, format!("{what}: there is none at height {height}"))
                .with_data(json!({ "height": height }))
        }
        Refusal::Unknown { height: None } => {
            RpcError::new(ErrorCode::UnknownTx, format!("{what}: there is none"))
        }
        Refusal::NotFinal { height, stable } => {
            let stable_text = stable.map_or_else(|| "none yet".to_string(), |stable| stable.to_string());
            RpcError::new(
                ErrorCode::NotFinal,
                format!(
                    "{what}: height {height} is committed but no stable checkpoint covers it yet \
                     (the latest is {stable_text}); ask again shortly"
                ),
            )
            .with_data(json!({ "height": height, "stable": stable }))
        }
        Refusal::Unavailable(reason) => {
            RpcError::new(ErrorCode::ProofUnavailable, format!("{what}: {reason}"))
        }
    }
}

pub(crate) fn prove_tx<A: NodeApi>(state: &AppState<A>, hash: &Digest) -> Result<TxProof, RpcError> {
    state.api.prove_tx(hash)?.map_err(|refusal| match refusal {
        Refusal::Unknown { .. } => {
            RpcError::new(ErrorCode::UnknownTx, format!("no committed transaction with hash {hash}"))
                .with_data(json!({ "hash": hash }))
        }
        refusal => refused(refusal, format!("proof of transaction {hash}")),
    })
}

pub(crate) fn prove_block<A: NodeApi>(state: &AppState<A>, height: Height) -> Result<HeaderProof, RpcError> {
    state.api.prove_block(height)?.map_err(|refusal| match refusal {
        Refusal::Unknown { .. } => {
            let head = state.api.status().height;
            RpcError::new(
                ErrorCode::UnknownBlock,
                format!("no block at height {height}; the head is at {head}"),
            )
            .with_data(json!({ "height": height, "head": head }))
        }
        refusal => refused(refusal, format!("proof of block {height}")),
    })
}

pub(crate) fn prove_account<A: NodeApi>(
    state: &AppState<A>,
    address: &Address,
) -> Result<AccountStateProof, RpcError> {
    state
        .api
        .prove_account(address)?
        .map_err(|refusal| refused(refusal, format!("proof of account {address}")))
}

pub(crate) fn prove_validators<A: NodeApi>(
    state: &AppState<A>,
    height: Option<Height>,
    after: Option<Height>,
) -> Result<ValidatorsProof, RpcError> {
    state
        .api
        .prove_validators(height, after)?
        .map_err(|refusal| refused(refusal, "validator chain".to_string()))
}
