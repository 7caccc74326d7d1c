//! The server's limits: connections per client address and in all, time to send the headers and
//! the body, body size, requests in flight (three separate budgets: `/health` and `/status`,
//! waiting submissions, everything else), time per request, how long a submission may wait for its
//! commit, and JSON-RPC batch size. Every one is enforced before the node sees the request.

use std::time::Duration;

use axum::BoxError;
use tower::load_shed::error::Overloaded;
use tower::timeout::error::Elapsed;

use crate::errors::{ErrorCode, RpcError};

/// Default largest request body: 1 MiB.
pub const BODY_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Default number of requests served at once; more are refused with 503 (`overloaded`).
pub const CONCURRENCY_MAX_DEFAULT: usize = 256;
/// Default time a request may take (a waiting submission gets `wait_timeout_max_ms` more).
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default longest wait for a commit that `wait: true` may ask for.
pub const WAIT_TIMEOUT_MAX_MS_DEFAULT: u64 = 30_000;
/// Default largest JSON-RPC batch.
pub const BATCH_MAX_DEFAULT: usize = 100;
/// Default number of `/health` and `/status` requests served at once, apart from the others.
pub const STATUS_CONCURRENCY_MAX_DEFAULT: usize = 64;
/// Default number of submissions waiting for their commit at once, apart from the others.
pub const WAIT_CONCURRENCY_MAX_DEFAULT: usize = 256;
/// Default time a client has to send a request's headers (also how long an idle kept-alive
/// connection stays open).
pub const HEADER_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default time a client has to send a whole request body once its headers arrived.
pub const BODY_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default open connections per client IP address.
pub const CONNECTIONS_PER_CLIENT_MAX_DEFAULT: usize = 32;
/// Default open connections in all.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;
/// How often an idle `/events` stream sends a keep-alive comment.
pub const EVENTS_KEEP_ALIVE_MS: u64 = 15_000;

/// Limits on what one client may ask of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body; larger bodies get 413 (`body_too_large`).
    pub body_bytes_max: usize,
    /// Requests in flight at once (and, separately, open `/events` streams); more get 503
    /// (`overloaded`) at once rather than waiting in a queue.
    pub concurrency_max: usize,
    /// Time a request may take before it gets 408 (`request_timeout`). `POST /` and `POST /txs`
    /// get `wait_timeout_max_ms` on top, so a waiting submission is never cut short; `/events`
    /// has no limit.
    pub request_timeout_ms: u64,
    /// Longest wait for a commit; a longer `timeout_ms` is shortened to this.
    pub wait_timeout_max_ms: u64,
    /// Most calls in one JSON-RPC batch.
    pub batch_max: usize,
    /// `/health` and `/status` requests in flight at once, in a budget of their own so that they
    /// answer while the others are busy; more get 503.
    pub status_concurrency_max: usize,
    /// Submissions waiting for their commit (`wait: true`) at once, in a budget of their own: a
    /// waiting submission gives back its permit of `concurrency_max` once it starts to wait. More
    /// get 503 before they are admitted.
    pub wait_concurrency_max: usize,
    /// Time a client has to send a request's headers; then the connection is closed. An idle
    /// kept-alive connection is closed after the same time.
    pub header_timeout_ms: u64,
    /// Time a client has to send a whole request body after its headers; then 408.
    pub body_timeout_ms: u64,
    /// Open connections from one client IP address; more are answered 503 and closed.
    pub connections_per_client_max: usize,
    /// Open connections in all; more are answered 503 and closed.
    pub connections_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            concurrency_max: CONCURRENCY_MAX_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            wait_timeout_max_ms: WAIT_TIMEOUT_MAX_MS_DEFAULT,
            batch_max: BATCH_MAX_DEFAULT,
            status_concurrency_max: STATUS_CONCURRENCY_MAX_DEFAULT,
            wait_concurrency_max: WAIT_CONCURRENCY_MAX_DEFAULT,
            header_timeout_ms: HEADER_TIMEOUT_MS_DEFAULT,
            body_timeout_ms: BODY_TIMEOUT_MS_DEFAULT,
            connections_per_client_max: CONNECTIONS_PER_CLIENT_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
        }
    }
}

impl Limits {
    /// Permits of the in-flight semaphores: at least one, and no more than tokio allows.
    pub(crate) fn permits(&self) -> usize {
        permits(self.concurrency_max)
    }

    pub(crate) fn status_permits(&self) -> usize {
        permits(self.status_concurrency_max)
    }

    pub(crate) fn wait_permits(&self) -> usize {
        permits(self.wait_concurrency_max)
    }

    pub(crate) fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    pub(crate) fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms.max(1))
    }

    /// The time limit of a request that cannot wait for a commit.
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The time limit of a request that may wait for a commit.
    pub(crate) fn waiting_request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.saturating_add(self.wait_timeout_max_ms))
    }

    /// How long a submission waits, given what the caller asked for.
    pub(crate) fn wait_timeout(&self, timeout_ms: Option<u64>) -> Duration {
        let wanted = timeout_ms.unwrap_or(self.wait_timeout_max_ms);
        Duration::from_millis(wanted.min(self.wait_timeout_max_ms))
    }
}

fn permits(wanted: usize) -> usize {
    wanted.clamp(1, tokio::sync::Semaphore::MAX_PERMITS)
}

/// Turns the errors of the tower layers (timeout, load shedding) into JSON errors.
pub(crate) fn layer_error(error: BoxError, limits: &Limits) -> RpcError {
    if error.is::<Elapsed>() {
        RpcError::new(ErrorCode::RequestTimeout, "the request took longer than the server's time limit")
            .with_data(serde_json::json!({ "request_timeout_ms": limits.request_timeout_ms }))
    } else if error.is::<Overloaded>() {
        RpcError::new(
            ErrorCode::Overloaded,
            format!("the server is busy ({} requests in flight); try again later", limits.permits()),
        )
    } else {
        tracing::warn!(%error, "rpc middleware failed");
        RpcError::internal(format!("internal error: {error}"))
    }
}
