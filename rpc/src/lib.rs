//! # tetrad-rpc
//!
//! The axum server of a Tetrad node: JSON-RPC 2.0 on `POST /` and plain URLs for curl. It
//! reaches the node only through the [`api::NodeApi`] trait.
//!
//! ## Call loop
//!
//! ```text
//! let listener = tokio::net::TcpListener::bind(rpc_address).await?;
//! tetrad_rpc::serve(listener, node_api, Limits::default(), shutdown_signal).await?;
//! ```
//!
//! ## IO contract
//!
//! The server reads the node only through [`api::NodeApi`]: synchronous reads, `submit`,
//! `wait_committed` and the block broadcast. Every request is counted with
//! [`api::NodeApi::record_request`] (a JSON-RPC method name or `METHOD /route`, and `ok` or an
//! error name from [`errors::ErrorCode::name`]).
//!
//! ## Methods and URLs
//!
//! | JSON-RPC (`POST /`)  | params                         | URL                                   |
//! |----------------------|--------------------------------|---------------------------------------|
//! | `submit_transaction` | `tx`, `wait?`, `timeout_ms?`   | `POST /txs?wait=&timeout_ms=`         |
//! | `submit_transactions`| `txs` (at most 1,000)          |                                       |
//! | `get_transaction`    | `hash`                         | `GET /txs/{hash}`                     |
//! | `get_block`          | `height?` or `hash?` (or none) | `/blocks/latest`, `/blocks/{height}`, |
//! |                      |                                | `/blocks/hash/{hash}`                 |
//! | `get_account`        | `address`                      | `GET /accounts/{address}`             |
//! | `get_checkpoint`     | `height?`                      | `/checkpoints/latest`, `/{height}`    |
//! | `get_validators`     | `height?`                      | `GET /validators?height=`             |
//! | `get_status`         |                                | `GET /status`                         |
//! | `prove_transaction`  | `hash`                         | `GET /proofs/txs/{hash}`              |
//! | `prove_block`        | `height`                       | `GET /proofs/blocks/{height}`         |
//! | `prove_account`      | `address`                      | `GET /proofs/accounts/{address}`      |
//! | `prove_validators`   | `height?`, `after?`            | `GET /proofs/validators?height=&after=` |
//!
//! The `prove_*` answers are what `tetrad_ledger::light::LightClient` checks: a client that
//! trusts only the genesis file verifies them without trusting this node.
//!
//! and `GET /health`, `GET /metrics` (Prometheus text) and `GET /events` (server-sent events).
//! Errors and their codes: [`errors`] and `rpc/ERRORS.md`.
//!
//! ## Limits
//!
//! More than [`Limits::connections_per_client_max`] connections from one IP address (or
//! [`Limits::connections_max`] in all) are answered 503 and closed; headers must arrive within
//! [`Limits::header_timeout_ms`] (an idle kept-alive connection is closed after that time too)
//! and a body within [`Limits::body_timeout_ms`] (else 408). Bodies over
//! [`Limits::body_bytes_max`] get 413. Requests in flight come from three budgets (`budget.rs`):
//! `/health` and `/status` ([`Limits::status_concurrency_max`]), waiting submissions
//! ([`Limits::wait_concurrency_max`]) and the rest ([`Limits::concurrency_max`]); a request whose
//! budget is empty gets 503 at once (no queue). A request over [`Limits::request_timeout_ms`]
//! gets 408 (`POST /` and `POST /txs` get [`Limits::wait_timeout_max_ms`] more, `/events` has no
//! time limit); batches over [`Limits::batch_max`] get -32600.
//!
//! ## Health
//!
//! `GET /health` answers [`api::HealthView`]: 200 while consensus is making progress, is idle
//! (nothing to do) or is catching up, 503 when it has work and has made no progress for a while,
//! or when its loop stopped. [`api::NodeApi::health`] decides which.

// The workspace denies unsafe code (node/src/daemon/tcp.rs alone allows it); here it is forbidden.
#![forbid(unsafe_code)]

pub mod api;
mod budget;
mod calls;
pub mod errors;
mod events;
mod extract;
#[doc(hidden)]
pub mod fuzzing;
pub mod jsonrpc;
pub mod limits;
mod middleware;
mod rest;
mod server;
mod state;

use std::future::Future;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower::timeout::TimeoutLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

pub use calls::SubmittedView;
pub use errors::{ErrorCode, RpcError};
pub use events::BLOCK_EVENT;
pub use limits::Limits;
pub use rest::METRICS_CONTENT_TYPE;
pub use server::Refusal;

use crate::api::NodeApi;
use crate::state::AppState;

/// The server's routes and layers, for [`serve`] or for tests (`tower::ServiceExt::oneshot`).
/// Event streams of this router end only when the node closes its block channel.
pub fn router<A: NodeApi>(api: A, limits: Limits) -> Router {
    build(api, limits, None)
}

/// Serves `api` on `listener` until `shutdown` resolves, then stops accepting, ends the event
/// streams and waits for requests in flight to finish. Connections refused by the connection
/// limits are counted with `record_request("connection", refusal)`.
pub async fn serve<A: NodeApi>(
    listener: tokio::net::TcpListener,
    api: A,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_sender, stop_receiver) = watch::channel(false);
    let app = build(api.clone(), limits, Some(stop_receiver));
    let refused = move |refusal: Refusal| api.record_request(CONNECTION_LABEL, refusal.name());
    server::run(listener, app, limits, stop_sender, refused, shutdown).await
}

/// The metrics label of refused connections.
pub const CONNECTION_LABEL: &str = "connection";

fn build<A: NodeApi>(api: A, limits: Limits, stop: Option<watch::Receiver<bool>>) -> Router {
    let state = AppState::new(api, limits, stop);
    let layer_error = move |error| std::future::ready(limits::layer_error(error, &limits));
    let queries = Router::new()
        .route("/status", get(rest::status::<A>))
        .route("/health", get(rest::health::<A>))
        .route("/blocks/latest", get(rest::latest_block::<A>))
        .route("/blocks/{height}", get(rest::block_at::<A>))
        .route("/blocks/hash/{hash}", get(rest::block_by_hash::<A>))
        .route("/txs/{hash}", get(rest::tx::<A>))
        .route("/accounts/{address}", get(rest::account::<A>))
        .route("/checkpoints/latest", get(rest::latest_checkpoint::<A>))
        .route("/checkpoints/{height}", get(rest::checkpoint_at::<A>))
        .route("/validators", get(rest::validators::<A>))
        .route("/proofs/txs/{hash}", get(rest::prove_tx::<A>))
        .route("/proofs/blocks/{height}", get(rest::prove_block::<A>))
        .route("/proofs/accounts/{address}", get(rest::prove_account::<A>))
        .route("/proofs/validators", get(rest::prove_validators::<A>))
        .route("/metrics", get(rest::metrics::<A>))
        .route("/timing/blocks/{height}", get(rest::block_timing::<A>))
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(layer_error))
                .layer(TimeoutLayer::new(limits.request_timeout())),
        );
    // Submissions may wait for their commit: they get the wait on top of the request time.
    let submissions = Router::new()
        .route("/", post(jsonrpc::handle::<A>))
        .route("/txs", post(rest::submit::<A>))
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(layer_error))
                .layer(TimeoutLayer::new(limits.waiting_request_timeout())),
        );
    // Event streams live as long as the client wants: no time limit.
    let streams = Router::new().route("/events", get(events::stream::<A>));
    Router::new()
        .merge(queries)
        .merge(submissions)
        .merge(streams)
        .fallback(rest::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::finish::<A>))
                .layer(axum::middleware::from_fn_with_state(state.clone(), budget::admit::<A>))
                .layer(DefaultBodyLimit::max(limits.body_bytes_max))
                .layer(RequestBodyLimitLayer::new(limits.body_bytes_max)),
        )
        .with_state(state)
}
