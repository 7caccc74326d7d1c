//! The URLs for curl: `GET /status`, `/blocks/{height}`, `/txs/{hash}`, … and `POST /txs`. They
//! answer JSON, and errors as `{"error": {"code", "message", "data"?}}` with the code JSON-RPC
//! would use (see [`crate::errors`]).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use tetrad_consensus::{Digest, Height};
use tetrad_ledger::light::{AccountStateProof, HeaderProof, TxProof, ValidatorsProof};
use tetrad_ledger::{Address, Tx};

use crate::api::{
    AccountView, BlockRef, BlockView, CheckpointView, NodeApi, StatusView, TxView, ValidatorsView,
};
use crate::budget::HeldPermit;
use crate::calls::{self, Submitted};
use crate::errors::{ErrorCode, RpcError, Verbatim};
use crate::extract::{JsonBody, UrlPath, UrlQuery, clip};
use crate::state::AppState;

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

#[derive(Deserialize)]
pub(crate) struct HeightPath {
    height: Height,
}

#[derive(Deserialize)]
pub(crate) struct HashPath {
    hash: Digest,
}

#[derive(Deserialize)]
pub(crate) struct AddressPath {
    address: Address,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeightQuery {
    height: Option<Height>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinksQuery {
    height: Option<Height>,
    after: Option<Height>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitQuery {
    #[serde(default)]
    wait: bool,
    timeout_ms: Option<u64>,
}

pub(crate) async fn status<A: NodeApi>(State(state): State<AppState<A>>) -> Json<StatusView> {
    Json(calls::status(&state))
}

/// `GET /health`: 200 while the node is healthy (consensus progressing, idle or catching up),
/// 503 when it is stalled or its consensus loop stopped; the body says which and why.
pub(crate) async fn health<A: NodeApi>(State(state): State<AppState<A>>) -> Response {
    let health = state.api.health();
    let status = if health.status.is_healthy() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut response = (status, Json(health)).into_response();
    // A 503 here is the answer itself, not an error for the middleware to rewrite.
    response.extensions_mut().insert(Verbatim);
    response
}

pub(crate) async fn latest_block<A: NodeApi>(
    State(state): State<AppState<A>>,
) -> Result<Json<BlockView>, RpcError> {
    calls::block(&state, BlockRef::Latest).map(Json)
}

pub(crate) async fn block_at<A: NodeApi>(
    State(state): State<AppState<A>>,
    UrlPath(HeightPath { height }): UrlPath<HeightPath>,
) -> Result<Json<BlockView>, RpcError> {
    calls::block(&state, BlockRef::Height(height)).map(Json)
}

pub(crate) async fn block_by_hash<A: NodeApi>(
    State(state): State<AppState<A>>,
    UrlPath(HashPath { hash }): UrlPath<HashPath>,
) -> Result<Json<BlockView>, RpcError> {
    calls::block(&state, BlockRef::Hash(hash)).map(Json)
}

pub(crate) async fn tx<A: NodeApi>(
    State(state): State<AppState<A>>,
    UrlPath(HashPath { hash }): UrlPath<HashPath>,
) -> Result<Json<TxView>, RpcError> {
    calls::tx(&state, &hash).map(Json)
}

pub(crate) async fn account<A: NodeApi>(
    State(state): State<AppState<A>>,
    UrlPath(AddressPath { address }): UrlPath<AddressPath>,
) -> Result<Json<AccountView>, RpcError> {
    calls::account(&state, &address).map(Json)
}

pub(crate) async fn latest_checkpoint<A: NodeApi>(
    State(state): State<AppState<A>>,
) -> Result<Json<CheckpointView>, RpcError> {
    calls::checkpoint(&state, None).map(Json)
}

pub(crate) async fn checkpoint_at<A: NodeApi>(
    State(state): State<AppState<A>>,
    UrlPath(HeightPath { height }): UrlPath<HeightPath>,
) -> Result<Json<CheckpointView>, RpcError> {
    calls::checkpoint(&state, Some(height)).map(Json)
}

pub(crate) async fn validators<A: NodeApi>(
    State(state): State<AppState<A>>,
    UrlQuery(HeightQuery { height }): UrlQuery<HeightQuery>,
) -> Result<Json<ValidatorsView>, RpcError> {
    calls::validators(&state, height).map(Json)
}

pub(crate) async fn prove_tx<A: NodeApi>(
    State(state): State<AppState<A>>,
    UrlPath(HashPath { hash }): UrlPath<HashPath>,
) -> Result<Json<TxProof>, RpcError> {
    calls::prove_tx(&state, &hash).map(Json)
}

pub(crate) async fn prove_block<A: NodeApi>(
    State(state): State<AppState<A>>,
    UrlPath(HeightPath { height }): UrlPath<HeightPath>,
) -> Result<Json<HeaderProof>, RpcError> {
    calls::prove_block(&state, height).map(Json)
}

pub(crate) async fn prove_account<A: NodeApi>(
    State(state): State<AppState<A>>,
    UrlPath(AddressPath { address }): UrlPath<AddressPath>,
) -> Result<Json<AccountStateProof>, RpcError> {
    calls::prove_account(&state, &address).map(Json)
}

pub(crate) async fn prove_validators<A: NodeApi>(
    State(state): State<AppState<A>>,
    UrlQuery(LinksQuery { height, after }): UrlQuery<LinksQuery>,
) -> Result<Json<ValidatorsProof>, RpcError> {
    calls::prove_validators(&state, height, after).map(Json)
}

/// `GET /timing/blocks/{height}`: when each phase of a recent block happened at this node.
pub(crate) async fn block_timing<A: NodeApi>(
    State(state): State<AppState<A>>,
    UrlPath(HeightPath { height }): UrlPath<HeightPath>,
) -> Result<Json<crate::api::BlockTiming>, RpcError> {
    state.api.block_timing(height).map(Json).ok_or_else(|| {
        RpcError::new(
            ErrorCode::UnknownBlock,
            format!(
                "no timing kept for height {height}: the node keeps it for its last executed blocks only"
            ),
        )
        .with_data(serde_json::json!({ "height": height }))
    })
}

pub(crate) async fn metrics<A: NodeApi>(State(state): State<AppState<A>>) -> Response {
    ([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], state.api.metrics()).into_response()
}

/// `POST /txs[?wait=true&timeout_ms=N]` with a signed transaction as the body: 202 with
/// `{"hash", "status": "pending"}`, or 200 with the transaction's view once committed.
pub(crate) async fn submit<A: NodeApi>(
    State(state): State<AppState<A>>,
    held: Option<Extension<HeldPermit>>,
    UrlQuery(SubmitQuery { wait, timeout_ms }): UrlQuery<SubmitQuery>,
    JsonBody(tx): JsonBody<Tx>,
) -> Result<Response, RpcError> {
    let held = held.map(|Extension(held)| held).unwrap_or_default();
    Ok(match calls::submit(&state, tx, wait, timeout_ms, &held).await? {
        Submitted::Pending(view) => (StatusCode::ACCEPTED, Json(view)).into_response(),
        Submitted::Committed(view) => (StatusCode::OK, Json(view)).into_response(),
    })
}

/// Any URL that is not one of the above.
pub(crate) async fn not_found(method: Method, uri: Uri) -> RpcError {
    RpcError::new(
        ErrorCode::MethodNotFound,
        format!(
            "no such URL: {method} {}; try /status, /blocks/latest, /txs/{{hash}}, /accounts/{{address}}, \
             or JSON-RPC on POST /",
            clip(uri.path())
        ),
    )
}
